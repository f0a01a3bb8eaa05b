"""Zone admin states from the control plane, laid over the probed zone health.

An operator takes a zone out of the GSLB with the control plane
(`POST /v1/zones/{zone}/drain` or `/disable`). The GSLB (`zonegate dns` and
`zonegate httpdns` with `--control`) then sees that zone as down, whatever its probes
say, with the reason in `explain`:

    changping down: 3/3 backends healthy (admin: drain, control version 7)

DNS has no connections to finish, so `drain` and `disabled` act the same on answers:
the zone gets no new clients. The record's fallback still applies when every zone is
down, so a GSLB never goes silent because of an admin change (docs/dns.md).

This module is pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from zonegate.dns.model import ZoneState

__all__ = ["overlay_admin"]


def overlay_admin(
    health: Mapping[str, ZoneState], admin: Mapping[str, str], version: int
) -> Mapping[str, ZoneState]:
    """The zone states the GSLB decides on: `health`, with every zone whose admin
    state is not `enabled` marked down.

    Args:
        health: Zone name -> probed state (a zone missing counts as down).
        admin: Zone name -> `enabled` | `drain` | `disabled` (a zone missing is enabled).
        version: The control plane version the admin states come from, for the reason.

    Returns:
        `health` itself when no zone is taken out (the common case costs nothing),
        else a new mapping.
    """
    out = {zone: state for zone, state in admin.items() if state != "enabled"}
    if not out:
        return health
    merged = dict(health)
    for zone, state in out.items():
        why = f"admin: {state}, control version {version}"
        probed = health.get(zone)
        if probed is None:
            merged[zone] = ZoneState(up=False, reason=why)
        else:
            reason = f"{probed.reason}; {why}" if probed.reason else why
            merged[zone] = replace(probed, up=False, reason=reason)
    return merged
