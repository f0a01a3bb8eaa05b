"""The values the GSLB passes around (pure): who asks, how zones are, what was decided.

Shared by the policy engine (dns/policy.py), the DNS server, HTTPDNS and the zone
health prober, so each can be written and tested alone.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who the answer is for.

    ip: the address we saw (the resolver for DNS, the real client for HTTPDNS).
    subnet: the EDNS Client Subnet source network (RFC 7871), when sent; geo decisions
    use it instead of `ip`. device_id: HTTPDNS's DeviceID, for split maps.
    """

    ip: str
    subnet: IPNetwork | None = None
    device_id: str | None = None

    @property
    def geo_network(self) -> IPNetwork:
        """The network geo decisions look at: the ECS subnet, else the address as a host."""
        if self.subnet is not None:
            return self.subnet
        return ipaddress.ip_network(self.ip)


@dataclass(frozen=True, slots=True)
class ZoneState:
    """One zone as the GSLB sees it at one instant (from zone health probing).

    up: the zone can take users (its health check passes, its up_share is met).
    healthy / total: backends available / configured in the zone's LB pools.
    sessions: requests in flight in the zone (LB /status); capacity: what it can hold
    (None: unknown, so the capacity method keeps the zone). rtt: the last probe's
    round-trip time in seconds (None: not measured). changing: the state flipped
    recently or a flip is pending (rise/fall under way): answers use a shorter TTL.
    """

    up: bool
    healthy: int = 0
    total: int = 0
    sessions: int = 0
    capacity: int | None = None
    rtt: float | None = None
    changing: bool = False
    known: bool = True
    """False until the first probe answered; the GSLB waits for it at start."""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a decision, for `explain`: what ran, what was left, and why."""

    stage: str
    """'health', 'preferred:topology', 'alternate:weight', 'fallback', 'answer', ..."""
    kept: tuple[str, ...]
    """Candidate zones left after the step, in order."""
    why: str


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one name, one type, one client."""

    name: str
    qtype: str
    addresses: tuple[str, ...] = ()
    cname: str | None = None
    ttl: int = 0
    zones: tuple[str, ...] = ()
    """Zones whose addresses are answered, in order."""
    scope_prefix: int | None = None
    """ECS scope to return (RFC 7871 §7.2.1); None when the client sent no ECS."""
    steps: tuple[Step, ...] = field(default=())
    fallback: bool = False
    """The answer came from the fallback (no zone passed health)."""
    client: ClientInfo | None = None
    """Who the decision was made for (shown by `explain`)."""
