"""VRRPv3 agent (RFC 5798): packet codec, state machine, tracking, VIPs, raw-socket agent."""
