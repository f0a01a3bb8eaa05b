"""Close the gap between the servers zonegate wants and the ones HAProxy reports (pure).

Theory of operation
-------------------
`plan(desired, reported)` compares each desired server with HAProxy's report (from
`show servers state`, see parse.py) and returns the Runtime API commands that make
them equal, with one line per fix for the log::

    admin differs       set server <be>/<srv> state ready|drain|maint
    weight differs      set server <be>/<srv> weight <0..256>
    checks switched off enable health <be>/<srv>   (someone ran `disable health`: the
                        checks are what tells zonegate a server's health, so they
                        always run; panic uses twin servers, see model.py)

Each `set server ... state` sets the admin state exactly (HAProxy clears the other
forced flag), so one command per dimension suffices and applying the plan's commands
to the report yields the desired state (property-tested). A server that is already
right gets no command; a desired server HAProxy does not know is listed in
`unknown` (a config that lacks it: a reload is due), never commanded. Servers HAProxy
has and zonegate does not mention are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from zonegate.lb.haproxy.model import (
    WEIGHT_MAX,
    DesiredState,
    ReportedState,
    ServerDesired,
    ServerKey,
    ServerReported,
)

_NAME = re.compile(r"[A-Za-z0-9_.:-]+")
"""HAProxy's proxy and server name characters; anything else could split a command."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What `plan` decided: the commands, why, and what it could not command."""

    commands: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)
    """One line per server changed: `be_web/b1: weight 10 -> 0, admin ready -> drain`."""
    unknown: list[ServerKey] = field(default_factory=list)
    """Desired servers missing from HAProxy's report (left alone)."""


def satisfied(want: ServerDesired, have: ServerReported) -> bool:
    """Whether HAProxy's server `have` is what `want` asks for."""
    if want.admin is not have.admin or want.weight != have.weight:
        return False
    # Checks always run; a server without a configured check has none to switch on.
    return have.check_enabled or not have.check_configured


def plan(desired: Mapping[ServerKey, ServerDesired], reported: ReportedState) -> Plan:
    """The Runtime API commands that turn `reported` into `desired`.

    Args:
        desired: what zonegate wants, per server.
        reported: what HAProxy says, per server.

    Returns:
        A `Plan`; its commands are ordered by backend, then server.

    Raises:
        ValueError: a desired weight outside 0..WEIGHT_MAX, or a backend or server
            name HAProxy could not take in a command.
    """
    out = Plan()
    for key in sorted(desired, key=lambda k: (k.backend, k.server)):
        want = desired[key]
        if not 0 <= want.weight <= WEIGHT_MAX:
            raise ValueError(f"{key.backend}/{key.server}: weight {want.weight} not in 0..256")
        for name in (key.backend, key.server):
            if not _NAME.fullmatch(name):
                raise ValueError(f"{name!r} cannot be named in a Runtime API command")
        have = reported.get(key)
        if have is None:
            out.unknown.append(key)
            continue
        if satisfied(want, have):
            continue
        srv = f"{key.backend}/{key.server}"
        why = []
        if want.admin is not have.admin:
            out.commands.append(f"set server {srv} state {want.admin.value}")
            why.append(f"admin {have.admin.value} -> {want.admin.value}")
        if want.weight != have.weight:
            out.commands.append(f"set server {srv} weight {want.weight}")
            why.append(f"weight {have.weight} -> {want.weight}")
        if have.check_configured and not have.check_enabled:
            out.commands.append(f"enable health {srv}")
            why.append("checks on")
        out.fixes.append(f"{srv}: {', '.join(why)}")
    return out


def reconcile(desired: DesiredState, reported: ReportedState) -> list[str]:
    """The commands of `plan(desired, reported)` (empty when nothing differs)."""
    return plan(desired, reported).commands
