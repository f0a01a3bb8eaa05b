"""Tracked checks -> effective VRRP priority (keepalived's track_script / track_interface). Pure.

Theory of operation
-------------------
Each tracked check (the local `zonegate lb` admin health, an interface's link state,
a command's exit status) is probed by the agent, which reports each result here with
`Tracker.record(index, ok)`. A check is a rise/fall counter, like haproxy's (and
`health.machine`'s): it starts UNKNOWN, the first result decides, then `fall`
failures in a row take it DOWN and `rise` successes in a row bring it UP, so one lost
probe does not move the VIP. UNKNOWN counts as up: the startup delay, not tracking,
keeps a booting node from taking over.

    effective priority = configured - sum(weight of each DOWN check), clamped to 1..254

The clamp: a priority of 0 would mean "master stopping" on the wire, and 255 is only
for an address owner whose checks all pass (keepalived clamps the same way).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from zonegate.vrrp.packet import PRIORITY_OWNER


class CheckState(enum.Enum):
    """A tracked check's state; the value is shown in /status."""

    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """One tracked check: a name for logs and metrics, its weight and rise/fall counts."""

    name: str
    weight: int
    rise: int = 1
    fall: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.weight <= 254:
            raise ValueError(f"weight must be 0-254, got {self.weight}")
        if self.rise < 1 or self.fall < 1:
            raise ValueError("rise and fall must be at least 1")


@dataclass(frozen=True, slots=True)
class CheckChanged:
    """A check changed state; `reason` is the last result's, for the log."""

    name: str
    old: CheckState
    new: CheckState
    reason: str


class _Check:
    __slots__ = ("run", "spec", "state")

    def __init__(self, spec: CheckSpec) -> None:
        self.spec = spec
        self.state = CheckState.UNKNOWN
        self.run = 0  # results in a row that disagree with the state

    def record(self, ok: bool) -> CheckState | None:
        if self.state is CheckState.UNKNOWN:
            self.state = CheckState.UP if ok else CheckState.DOWN
            return self.state
        agrees = ok == (self.state is CheckState.UP)
        if agrees:
            self.run = 0
            return None
        self.run += 1
        if self.run >= (self.spec.fall if ok is False else self.spec.rise):
            self.run = 0
            self.state = CheckState.UP if ok else CheckState.DOWN
            return self.state
        return None


class Tracker:
    """The tracked checks of one VRRP instance and the priority they leave.

    Args:
        priority: The configured priority, 1-255.
        checks: The checks, indexed as given.
    """

    def __init__(self, priority: int, checks: list[CheckSpec]) -> None:
        if not 1 <= priority <= PRIORITY_OWNER:
            raise ValueError(f"priority must be 1-255, got {priority}")
        self.base = priority
        self._checks = [_Check(spec) for spec in checks]

    def record(self, index: int, ok: bool, reason: str = "") -> CheckChanged | None:
        """Record one probe result of check `index`.

        Returns:
            The state change, if this result caused one (UNKNOWN -> UP included).
        """
        check = self._checks[index]
        old = check.state
        new = check.record(ok)
        if new is None or new is old:
            return None
        return CheckChanged(check.spec.name, old, new, reason)

    def state(self, index: int) -> CheckState:
        return self._checks[index].state

    @property
    def priority(self) -> int:
        """The effective priority: base minus the weights of DOWN checks, clamped."""
        lost = sum(c.spec.weight for c in self._checks if c.state is CheckState.DOWN)
        if lost == 0:
            return self.base
        return max(1, min(PRIORITY_OWNER - 1, self.base - lost))

    def status(self) -> list[dict[str, object]]:
        """Per-check view for /status: name, state, weight."""
        return [
            {"name": c.spec.name, "state": c.state.value, "weight": c.spec.weight}
            for c in self._checks
        ]


__all__ = ["CheckChanged", "CheckSpec", "CheckState", "Tracker"]
