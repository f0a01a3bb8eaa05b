"""Backend health as pure state: active rise/fall, passive ejection, slow start, admin state.

Theory of operation
-------------------
A `TargetHealth` holds everything one backend's health depends on, as four independent
parts. It never reads the clock: each method takes `now` (monotonic seconds), and
`deadline()` says when the view would next change by itself, so a shell knows when to
look again.

1. Active state (haproxy's check counter). Probe results go to `record_active`. A
   target starts UNKNOWN, and its first result decides (haproxy likewise starts a server
   one failure away from DOWN), so a load balancer can probe every backend once and know
   its health before it takes traffic. After that, an UP target goes DOWN after `fall`
   failed checks in a row and a DOWN target comes UP after `rise` passed checks in a row.
   A result that agrees with the state resets the run, so flapping never flips the
   state. This is haproxy's single `health` counter (0 .. rise+fall-1) counted as the
   length of the current run. With active checks off (`Health.active is None`) a target
   is UP from the start.

       first check passed           rise passed in a row
     UNKNOWN ─────────────────► UP ◄─────────────────────── DOWN
        │                        └─────────────────────────► ▲
        │                           fall failed in a row     │
        └──────────────────── first check failed ────────────┘

2. Passive ejection (Envoy's outlier detection). The caller reports each request's
   outcome to `record_passive` and decides what counts as a failure (connect error,
   reset, 5xx). After `consecutive_failures` failures in a row the target is EJECTED
   until `now + min(base_ejection * 2**(k-1), max_ejection)`, where k counts the
   ejections in a row. The ejection ends by time, or earlier when active checks bring
   the target from DOWN back UP (they prove it is back). Outcomes reported while a
   target is ejected are ignored: they belong to requests sent before it was ejected.
   When an ejection is attempted (allowed or blocked) the failure run restarts, as in
   Envoy. k decays by time, not on a success: once a target has stayed in the pool for
   as long as its last ejection lasted, k goes back to 0. A backend that fails again as
   soon as it returns is therefore ejected for longer and longer, and one that works for
   a while starts again at `base_ejection`. `PoolHealth` enforces `max_ejected_percent`,
   counting the ejected targets that active checks do not already hold DOWN.

       IN ── consecutive_failures in a row, pool allows ──► EJECTED(until)
       ▲                                                         │
       └──────────── now ≥ until, or active DOWN -> UP ──────────┘

3. Slow start (haproxy `slowstart`, Envoy `slow_start_config`). When a target comes back
   (DOWN → UP, or the end of an ejection), `weight_factor` ramps linearly from 0.1 to
   1.0 over `slow_start` seconds. A target that is UP when the process starts, or whose
   first check passes at startup, does not ramp, because ramping a whole pool helps
   nobody. A backend added to a running pool by a reload (`joining=True`) ramps from
   its first UP. Admin changes do not ramp: a backend that was restarted during
   maintenance ramps through its own DOWN → UP.

4. Admin state (`Backend.state`, or changed at runtime by `set_admin`). ENABLED, DRAIN
   or DISABLED. Only ENABLED takes new requests. Checks keep running, so the state is
   known when the target is enabled again.

   available(now) = UP ∧ not EJECTED ∧ ENABLED

`PoolHealth` holds the targets of one pool, indexed like `Pool.backends`. It enforces
`max_ejected_percent`, builds the `BackendView` list that pickers and the GSLB read,
and carries health across a config reload (`carry_over`).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from zonegate.topology.schema import Health, Pool

SLOW_START_MIN = 0.1
"""Weight factor at the start of a slow-start ramp (haproxy starts near 0, Envoy at
`min_weight_percent`, default 10%)."""
RAMP_STEPS = 20
"""`deadline()` asks for a re-evaluation this many times per ramp (haproxy's
server_warmup reschedules every slowstart/20)."""
RAMP_MIN_STEP = 0.1
"""Shortest time between two ramp re-evaluations, in seconds."""
MAX_EJECTION_COUNT = 64
"""Cap on k, the ejections in a row; base_ejection * 2**63 is past any max_ejection."""


class HealthState(enum.Enum):
    """Active-check state of a backend."""

    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


class AdminState(enum.Enum):
    """Operator state of a backend (`Backend.state`)."""

    ENABLED = "enabled"
    DRAIN = "drain"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One active check's outcome: `reason` says why in a few words, `latency` in seconds."""

    ok: bool
    reason: str
    latency: float


@dataclass(frozen=True, slots=True)
class Transition:
    """The active state changed.

    `reason` is for the log, e.g. "3 consecutive failed checks: connect refused".
    """

    old: HealthState
    new: HealthState
    reason: str


@dataclass(frozen=True, slots=True)
class Ejected:
    """Passive checks ejected the target until `until`; `count` is k, its ejections in a row."""

    until: float
    count: int
    reason: str


@dataclass(frozen=True, slots=True)
class EjectionBlocked:
    """The target earned an ejection, but max_ejected_percent forbade it."""

    reason: str


@dataclass(frozen=True, slots=True)
class BackendView:
    """What balancing sees of one backend at one instant.

    `weight` is `Backend.weight * weight_factor` even when the backend is not available:
    panic mode uses every backend. `ejected_until` is None when not ejected. `reason`
    explains the current availability (ejection, admin state, last transition).
    """

    index: int
    id: str
    available: bool
    weight: float
    state: HealthState
    ejected_until: float | None
    admin: AdminState
    reason: str


# Active transitions as data: (state, check passed) -> (next state, ActiveCheck field
# with the run length needed; None when the first result decides). A pair not in the
# table agrees with the state and resets the run.
_ACTIVE_EDGES: dict[tuple[HealthState, bool], tuple[HealthState, str | None]] = {
    (HealthState.UNKNOWN, True): (HealthState.UP, None),
    (HealthState.UNKNOWN, False): (HealthState.DOWN, None),
    (HealthState.DOWN, True): (HealthState.UP, "rise"),
    (HealthState.UP, False): (HealthState.DOWN, "fall"),
}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _with_detail(text: str, detail: str) -> str:
    return f"{text}: {detail}" if detail else text


class TargetHealth:
    """One backend's health; see the module docstring for the rules.

    Args:
        cfg: the pool's health settings.
        now: creation time.
        initial: the starting active state; None (or UNKNOWN) means the first check
            decides. Ignored when active checks are off: the target is then UP.
        admin: the starting admin state.
        joining: the backend was added to a running pool, so its first UP ramps.
    """

    __slots__ = (
        "_admin",
        "_cfg",
        "_ejected_until",
        "_ejection_reason",
        "_ejections",
        "_failures",
        "_joining",
        "_now",
        "_quiet_after",
        "_ramp_from",
        "_reason",
        "_run",
        "_state",
    )

    def __init__(
        self,
        cfg: Health,
        now: float,
        *,
        initial: HealthState | None = None,
        admin: AdminState | str = AdminState.ENABLED,
        joining: bool = False,
    ) -> None:
        self._cfg = cfg
        self._now = now
        self._admin = AdminState(admin)
        self._run = 0
        self._reason = ""
        self._failures = 0
        self._ejections = 0
        self._ejected_until: float | None = None
        self._ejection_reason = ""
        self._quiet_after: float | None = None
        self._ramp_from: float | None = None
        self._joining = joining
        if cfg.active is None:
            initial = HealthState.UP
            self._reason = "active checks off"
        self._state = initial or HealthState.UNKNOWN
        if self._state is HealthState.UP and joining:
            self._ramp_from = now
            self._joining = False

    # -- read side ---------------------------------------------------------------

    @property
    def state(self) -> HealthState:
        return self._state

    @property
    def admin(self) -> AdminState:
        return self._admin

    @property
    def cfg(self) -> Health:
        return self._cfg

    @property
    def passive_failures(self) -> int:
        """Passive failures in the current run."""
        return self._failures

    @property
    def ejections(self) -> int:
        """k: ejections in a row, as of the last `now` seen (0 once decayed)."""
        return self._ejections

    @property
    def reason(self) -> str:
        """Why the target is (un)available, as of the last `now` seen."""
        if self._ejected_until is not None:
            return self._ejection_reason
        if self._admin is not AdminState.ENABLED:
            return f"admin {self._admin.value}"
        if self._state is HealthState.UNKNOWN:
            return "not checked yet"
        return self._reason

    def ejected_until(self, now: float) -> float | None:
        """End of the current ejection, or None when not ejected at `now`."""
        self._observe(now)
        return self._ejected_until

    def available(self, now: float) -> bool:
        """Whether the target may take new requests: UP, not ejected, admin enabled."""
        self._observe(now)
        return (
            self._state is HealthState.UP
            and self._ejected_until is None
            and self._admin is AdminState.ENABLED
        )

    def weight_factor(self, now: float) -> float:
        """Slow-start factor in [0.1, 1.0]: 1.0 unless the target is ramping."""
        self._observe(now)
        span = self._cfg.slow_start
        if self._ramp_from is None or span <= 0:
            return 1.0
        elapsed = now - self._ramp_from
        if elapsed <= 0:
            return SLOW_START_MIN
        return min(1.0, SLOW_START_MIN + (1.0 - SLOW_START_MIN) * elapsed / span)

    def deadline(self) -> float | None:
        """The next time the view changes by itself, after the last `now` seen.

        That is the end of an ejection, or the next step of a slow-start ramp (the ramp
        is continuous; re-evaluating RAMP_STEPS times keeps picker weights close to it).
        A call that passes a `now` at or after the deadline observes it, and the next
        deadline is later.
        """
        times: list[float] = []
        if self._ejected_until is not None:
            times.append(self._ejected_until)
        span = self._cfg.slow_start
        if self._ramp_from is not None and span > 0 and self._state is HealthState.UP:
            if self._now < self._ramp_from:
                times.append(self._ramp_from)
            else:
                step = max(span / RAMP_STEPS, RAMP_MIN_STEP)
                t = self._ramp_from + step * (math.floor((self._now - self._ramp_from) / step) + 1)
                if t <= self._now:  # float rounding on a step boundary
                    t += step
                times.append(min(t, self._ramp_from + span))
        return min(times, default=None)

    # -- write side --------------------------------------------------------------

    def record_active(self, ok: bool, now: float, reason: str = "") -> Transition | None:
        """Count one active check result.

        Args:
            ok: whether the check passed.
            now: when the result arrived.
            reason: the probe's own words ("connect refused"), appended to the reason.

        Returns:
            The transition, when this result flips the state; else None.

        Raises:
            ValueError: active checks are off for this target.
        """
        if self._cfg.active is None:
            raise ValueError("record_active on a target whose active checks are off")
        self._observe(now)
        old = self._state
        edge = _ACTIVE_EDGES.get((old, ok))
        if edge is None:
            self._run = 0
            return None
        new, needed_field = edge
        self._run += 1
        if needed_field is None:
            why = "first check passed" if ok else "first check failed"
        else:
            if self._run < getattr(self._cfg.active, needed_field):
                return None
            word = "passed" if ok else "failed"
            why = _plural(self._run, f"consecutive {word} check")
        why = _with_detail(why, reason)
        self._run = 0
        self._state = new
        self._reason = why
        if new is HealthState.UP and old is HealthState.DOWN and self._ejected_until is not None:
            # Checks prove it is back: end the passive ejection early, as Envoy's
            # successful_active_health_check_uneject_host. k is kept for the back-off.
            self._ejected_until = None
            self._ejection_reason = ""
        if new is HealthState.UP and (old is HealthState.DOWN or self._joining):
            self._ramp_from = max(now, self._ejected_until or now)
        if new is HealthState.UP:
            self._joining = False
        return Transition(old, new, why)

    def record_passive(
        self, ok: bool, now: float, reason: str = "", *, may_eject: bool = True
    ) -> Ejected | EjectionBlocked | None:
        """Count one live request's outcome.

        Args:
            ok: False for a failure (the caller decides: connect error, reset, 5xx).
            now: when the request ended.
            reason: the last failure in a few words, appended to the ejection reason.
            may_eject: False when the pool forbids one more ejection (max_ejected_percent).

        Returns:
            Ejected or EjectionBlocked when this failure completes a run; else None.
        """
        self._observe(now)
        passive = self._cfg.passive
        if passive.consecutive_failures == 0 or self._ejected_until is not None:
            return None
        if ok:
            self._failures = 0
            return None
        self._failures += 1
        if self._failures < passive.consecutive_failures:
            return None
        why = _with_detail(_plural(self._failures, "consecutive failure"), reason)
        self._failures = 0
        if not may_eject:
            return EjectionBlocked(why)
        k = min(self._ejections + 1, MAX_EJECTION_COUNT)
        duration = min(passive.base_ejection * 2 ** (k - 1), passive.max_ejection)
        until = now + duration
        self._ejections = k
        self._ejected_until = until
        self._ejection_reason = f"ejected for {duration:g}s after {why}"
        self._quiet_after = until + duration
        self._ramp_from = until
        return Ejected(until, k, self._ejection_reason)

    def set_admin(self, state: AdminState | str) -> None:
        """Set the admin state ("enabled", "drain" or "disabled")."""
        self._admin = AdminState(state)

    def reconfigured(self, cfg: Health, now: float) -> TargetHealth:
        """A copy of this target that follows new health settings (a config reload).

        Keeps state, runs, ejection and ramp. A run counts against the new rise/fall at
        the next result. If the new settings turn active checks off, the target is UP,
        and it ramps when it was not UP before.
        """
        self._observe(now)
        new = TargetHealth.__new__(TargetHealth)
        for name in TargetHealth.__slots__:
            setattr(new, name, getattr(self, name))
        new._cfg = cfg
        if cfg.active is None:
            new._run = 0
            if new._state is not HealthState.UP:
                new._state = HealthState.UP
                new._reason = "active checks off"
                new._ramp_from = max(now, new._ejected_until or now)
        return new

    def _observe(self, now: float) -> None:
        """Let time pass: end ejections, finish ramps, decay k."""
        self._now = max(self._now, now)
        if self._ejected_until is not None and now >= self._ejected_until:
            self._ejected_until = None
            self._ejection_reason = ""
        if self._quiet_after is not None and now >= self._quiet_after:
            self._ejections = 0
            self._quiet_after = None
        if self._ramp_from is not None and now >= self._ramp_from + self._cfg.slow_start:
            self._ramp_from = None


class PoolHealth:
    """The health of every backend of one pool, indexed like `Pool.backends`.

    Args:
        pool: the pool's config.
        now: creation time.
        previous: the health of the same pool under the previous config; see
            `carry_over`.
        initial: starting active state of new backends (None: the first check decides).
    """

    __slots__ = ("_pool", "_targets")

    def __init__(
        self,
        pool: Pool,
        now: float,
        previous: PoolHealth | None = None,
        *,
        initial: HealthState | None = None,
    ) -> None:
        self._pool = pool
        if previous is None:
            self._targets = [
                TargetHealth(pool.health, now, initial=initial, admin=b.state)
                for b in pool.backends
            ]
            return
        # Match by id, in order, so even duplicate ids pair up one to one.
        old_indexes: dict[str, list[int]] = {}
        for i, b in enumerate(previous._pool.backends):
            old_indexes.setdefault(b.id, []).append(i)
        self._targets = []
        for b in pool.backends:
            matches = old_indexes.get(b.id)
            if not matches:
                self._targets.append(
                    TargetHealth(pool.health, now, initial=initial, admin=b.state, joining=True)
                )
                continue
            j = matches.pop(0)
            target = previous._targets[j].reconfigured(pool.health, now)
            # A runtime admin change (drain from the API) survives a reload unless the
            # file itself changed this backend's state.
            if b.state != previous._pool.backends[j].state:
                target.set_admin(b.state)
            self._targets.append(target)

    def carry_over(self, pool: Pool, now: float) -> PoolHealth:
        """The health under a reloaded config (SIGHUP), keeping what is known.

        A backend whose id (`Backend.id`: name, else address) is in both configs keeps its
        health (state, runs, ejection, ramp) under the new settings. Its admin state
        becomes the new config's only if the config changed it; otherwise a runtime
        `set_admin` survives. New backends start UNKNOWN and ramp when they come UP.
        This PoolHealth is left unchanged.
        """
        return PoolHealth(pool, now, previous=self)

    @property
    def pool(self) -> Pool:
        return self._pool

    @property
    def targets(self) -> Sequence[TargetHealth]:
        """The targets, indexed like `Pool.backends` (read them; do not reorder)."""
        return self._targets

    def __len__(self) -> int:
        return len(self._targets)

    def record_active(
        self, index: int, ok: bool, now: float, reason: str = ""
    ) -> Transition | None:
        """Count a check result for backend `index`; see `TargetHealth.record_active`."""
        return self._targets[index].record_active(ok, now, reason)

    def record_passive(
        self, index: int, ok: bool, now: float, reason: str = ""
    ) -> Ejected | EjectionBlocked | None:
        """Count a request outcome for backend `index`, enforcing max_ejected_percent.

        An ejection is allowed only if, with it, at most `max_ejected_percent` of all the
        pool's backends (any admin state) are ejected at `now`. A one-backend pool with
        the default 50% is never ejected.
        """
        target = self._targets[index]
        may_eject = True
        passive = self._pool.health.passive
        if (
            not ok
            and passive.consecutive_failures
            and target.passive_failures + 1 >= passive.consecutive_failures
        ):
            # A target that active checks hold DOWN is out anyway; it must not use up
            # the ejection budget that a second failing backend needs.
            ejected = sum(
                1
                for t in self._targets
                if t.ejected_until(now) is not None and t.state is not HealthState.DOWN
            )
            may_eject = (ejected + 1) * 100 <= passive.max_ejected_percent * len(self._targets)
        return target.record_passive(ok, now, reason, may_eject=may_eject)

    def set_admin(self, index: int, state: AdminState | str) -> None:
        """Set backend `index`'s admin state at runtime."""
        self._targets[index].set_admin(state)

    def view(self, now: float) -> list[BackendView]:
        """Every backend as balancing sees it at `now`."""
        views = []
        for i, (b, t) in enumerate(zip(self._pool.backends, self._targets, strict=True)):
            available = t.available(now)
            views.append(
                BackendView(
                    index=i,
                    id=b.id,
                    available=available,
                    weight=b.weight * t.weight_factor(now),
                    state=t.state,
                    ejected_until=t.ejected_until(now),
                    admin=t.admin,
                    reason=t.reason,
                )
            )
        return views

    def healthy_share(self, now: float) -> float:
        """Share of the pool's capacity that is available, in [0, 1].

        Exactly: the sum of configured `Backend.weight` over available backends, divided
        by the same sum over admin-enabled backends; 0.0 when that sum is 0. Configured
        weights, not slow-start weights, so a ramp does not spill traffic to a backup
        pool. Drained and disabled backends are left out of both sums: an operator's
        choice is not an outage.
        """
        total = 0
        up = 0
        for b, t in zip(self._pool.backends, self._targets, strict=True):
            if t.admin is AdminState.ENABLED:
                total += b.weight
                if t.available(now):
                    up += b.weight
        return up / total if total else 0.0

    def deadline(self) -> float | None:
        """The earliest `TargetHealth.deadline()` of the pool, or None."""
        return min((d for t in self._targets if (d := t.deadline()) is not None), default=None)


__all__ = [
    "MAX_EJECTION_COUNT",
    "RAMP_MIN_STEP",
    "RAMP_STEPS",
    "SLOW_START_MIN",
    "AdminState",
    "BackendView",
    "Ejected",
    "EjectionBlocked",
    "HealthState",
    "PoolHealth",
    "ProbeResult",
    "TargetHealth",
    "Transition",
]
