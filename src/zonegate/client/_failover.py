"""Zone failover in the client: one circuit breaker per zone, and the zone choice.

Theory of operation
-------------------
Every request the SDK sends to a zone ends in a *success* (any HTTP response, 5xx
included: a response proves the zone's LB is alive, and the LB retries backends
itself) or a *network error* (connect refused or timed out, reset, a read timeout,
the server closing without a response). Each zone has a `Breaker` fed with those
outcomes::

                 consecutive errors >= consecutive_errors
                 or error rate >= error_rate over `window` (>= min_requests)
        ┌────────┐ ───────────────────────────────────────────► ┌──────┐
        │ CLOSED │                                               │ OPEN │ no requests
        └────────┘ ◄──────┐                    ┌──────────────── └──────┘
             ▲            │ probe_successes    │ a probe fails       │ cool-down over
             │            │ probes succeed     │ (cool-down doubles, │ (deadline)
             │            │                    │  up to max_cool_down)▼
             │         ┌───────────┐ ──────────┘               ┌───────────┐
             └──────── │ HALF_OPEN │ ◄──────────────────────── │ (timer)   │
                       └───────────┘  at most `probes` requests in flight
                                      probe the zone; the others go elsewhere

The cool-down of the n-th trip in a row is `cool_down * 2**(n-1)`, at most
`max_cool_down`; closing the breaker resets n. A result that arrives in a state other
than the one its request was admitted in (a request sent while CLOSED that fails
after the breaker opened) is counted in the statistics but moves nothing.

`choose_zone` walks the zones of a route (`_shard.zone_order`: the device's zone
first) and takes the first whose breaker admits the request. If every breaker is
open it still sends to the first zone (`Admission.FORCED`): failing fast on all
zones would turn a partial outage into a total one, and the request doubles as a
probe. The transport retries an idempotent request that failed on a network error
once, on the zone `choose_zone` gives with the failed zone excluded.

Pure: `now` (monotonic seconds) is passed in; a breaker publishes `deadline` (when
OPEN ends) instead of sleeping.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "TRANSITIONS",
    "Admission",
    "Breaker",
    "BreakerPolicy",
    "BreakerState",
    "Choice",
    "Transition",
    "Trigger",
    "choose_zone",
]


class BreakerState(enum.Enum):
    """The state of one zone's breaker."""

    CLOSED = "closed"
    """Requests flow; outcomes are counted."""
    OPEN = "open"
    """The zone takes no requests until the cool-down ends."""
    HALF_OPEN = "half_open"
    """A few probe requests test the zone; the rest go elsewhere."""


class Trigger(enum.Enum):
    """Why a breaker changed state."""

    CONSECUTIVE_ERRORS = "consecutive_errors"
    ERROR_RATE = "error_rate"
    COOL_DOWN_OVER = "cool_down_over"
    PROBE_FAILED = "probe_failed"
    PROBES_SUCCEEDED = "probes_succeeded"


class Admission(enum.Enum):
    """How a breaker lets a request through (or not)."""

    REJECT = "reject"
    PASS = "pass"
    """CLOSED: an ordinary request."""
    PROBE = "probe"
    """HALF_OPEN: one of the probe budget; its outcome decides the breaker."""
    FORCED = "forced"
    """Sent although the breaker is open (every zone is open: see `choose_zone`)."""


TRANSITIONS: Mapping[tuple[BreakerState, Trigger], BreakerState] = {
    (BreakerState.CLOSED, Trigger.CONSECUTIVE_ERRORS): BreakerState.OPEN,
    (BreakerState.CLOSED, Trigger.ERROR_RATE): BreakerState.OPEN,
    (BreakerState.OPEN, Trigger.COOL_DOWN_OVER): BreakerState.HALF_OPEN,
    (BreakerState.HALF_OPEN, Trigger.PROBE_FAILED): BreakerState.OPEN,
    (BreakerState.HALF_OPEN, Trigger.PROBES_SUCCEEDED): BreakerState.CLOSED,
}
"""Every transition a breaker makes; anything else is a bug."""


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a zone's breaker opens and how it comes back.

    Attributes:
        consecutive_errors: network errors in a row that open it (>= 1; default 3).
        error_rate: share of network errors over `window` that opens it (0 < x <= 1;
            default 0.5), once the window holds at least `min_requests` outcomes.
        window: the sliding window of the error rate, seconds (> 0; default 10).
        min_requests: outcomes in the window before the rate counts (>= 1; default 10).
        cool_down: seconds OPEN after the first trip (> 0; default 5); doubles per
            trip in a row.
        max_cool_down: the longest cool-down (>= cool_down; default 60).
        probes: probe requests in flight at once in HALF_OPEN (>= 1; default 2).
        probe_successes: probe successes that close it (>= 1; default 2).
    """

    consecutive_errors: int = 3
    error_rate: float = 0.5
    window: float = 10.0
    min_requests: int = 10
    cool_down: float = 5.0
    max_cool_down: float = 60.0
    probes: int = 2
    probe_successes: int = 2

    def __post_init__(self) -> None:
        if self.consecutive_errors < 1:
            raise ValueError("consecutive_errors must be >= 1")
        if not 0.0 < self.error_rate <= 1.0:
            raise ValueError("error_rate must be in (0, 1]")
        if self.window <= 0:
            raise ValueError("window must be > 0")
        if self.min_requests < 1:
            raise ValueError("min_requests must be >= 1")
        if self.cool_down <= 0:
            raise ValueError("cool_down must be > 0")
        if self.max_cool_down < self.cool_down:
            raise ValueError("max_cool_down must be >= cool_down")
        if self.probes < 1:
            raise ValueError("probes must be >= 1")
        if self.probe_successes < 1:
            raise ValueError("probe_successes must be >= 1")


@dataclass(frozen=True, slots=True)
class Transition:
    """A breaker changed state (what the shell logs and counts)."""

    old: BreakerState
    new: BreakerState
    trigger: Trigger
    at: float
    cool_down: float = 0.0
    """Seconds it stays OPEN (only when `new` is OPEN)."""


_BUCKETS = 10
"""The error-rate window is kept as this many buckets of window/_BUCKETS seconds."""


class _Window:
    """Outcomes over a sliding window, in fixed buckets (memory bounded)."""

    __slots__ = ("_buckets", "_width", "errors", "total")

    def __init__(self, window: float) -> None:
        self._width = window / _BUCKETS
        self._buckets: deque[list[float]] = deque()  # [start, total, errors]
        self.total = 0
        self.errors = 0

    def add(self, error: bool, now: float) -> None:
        self.expire(now)
        start = now - (now % self._width)
        if not self._buckets or self._buckets[-1][0] < start:
            self._buckets.append([start, 0, 0])
        b = self._buckets[-1]
        b[1] += 1
        self.total += 1
        if error:
            b[2] += 1
            self.errors += 1

    def expire(self, now: float) -> None:
        horizon = now - self._width * _BUCKETS
        while self._buckets and self._buckets[0][0] + self._width <= horizon:
            _, total, errors = self._buckets.popleft()
            self.total -= int(total)
            self.errors -= int(errors)

    def clear(self) -> None:
        self._buckets.clear()
        self.total = self.errors = 0


class Breaker:
    """One zone's circuit breaker (see the module docstring).

    Use: `advance(now)` (applies the cool-down timer), `admit(now)` before sending,
    then exactly one of `succeeded`, `failed` or `abandoned` with the admission
    `admit` returned.

    Args:
        policy: the thresholds.
    """

    __slots__ = (
        "_in_flight",
        "_probe_ok",
        "_window",
        "consecutive",
        "deadline",
        "policy",
        "state",
        "trips",
        "trips_in_row",
    )

    def __init__(self, policy: BreakerPolicy) -> None:
        self.policy = policy
        self.state = BreakerState.CLOSED
        self.deadline: float | None = None
        """When OPEN ends (monotonic seconds); None in the other states."""
        self.consecutive = 0
        self.trips = 0
        """Times it opened from CLOSED (a zone switch), ever."""
        self.trips_in_row = 0
        self._window = _Window(policy.window)
        self._in_flight = 0
        self._probe_ok = 0

    def error_rate(self, now: float) -> float:
        """The share of network errors in the window (0.0 when empty)."""
        self._window.expire(now)
        w = self._window
        return w.errors / w.total if w.total else 0.0

    def advance(self, now: float) -> Transition | None:
        """Apply the timer: OPEN becomes HALF_OPEN once `deadline` has passed."""
        if self.state is BreakerState.OPEN and self.deadline is not None and now >= self.deadline:
            return self._move(Trigger.COOL_DOWN_OVER, now)
        return None

    def admit(self, now: float) -> Admission:
        """Whether a request may go to this zone now (PASS, PROBE or REJECT).

        A PROBE takes one of the `probes` slots until its outcome is reported.
        """
        self.advance(now)
        if self.state is BreakerState.CLOSED:
            return Admission.PASS
        if self.state is BreakerState.HALF_OPEN and self._in_flight < self.policy.probes:
            self._in_flight += 1
            return Admission.PROBE
        return Admission.REJECT

    def succeeded(self, admission: Admission, now: float) -> Transition | None:
        """A request admitted with `admission` got a response."""
        if admission is Admission.PROBE:
            self._in_flight = max(0, self._in_flight - 1)
            if self.state is BreakerState.HALF_OPEN:
                self._probe_ok += 1
                if self._probe_ok >= self.policy.probe_successes:
                    return self._move(Trigger.PROBES_SUCCEEDED, now)
            return None
        if self.state is BreakerState.CLOSED:
            self.consecutive = 0
            self._window.add(False, now)
        return None

    def failed(self, admission: Admission, now: float) -> Transition | None:
        """A request admitted with `admission` ended in a network error."""
        if admission is Admission.PROBE:
            self._in_flight = max(0, self._in_flight - 1)
            if self.state is BreakerState.HALF_OPEN:
                return self._move(Trigger.PROBE_FAILED, now)
            return None
        if self.state is not BreakerState.CLOSED:
            return None
        self.consecutive += 1
        self._window.add(True, now)
        if self.consecutive >= self.policy.consecutive_errors:
            return self._move(Trigger.CONSECUTIVE_ERRORS, now)
        w = self._window
        if w.total >= self.policy.min_requests and w.errors >= self.policy.error_rate * w.total:
            return self._move(Trigger.ERROR_RATE, now)
        return None

    def abandoned(self, admission: Admission) -> None:
        """A request admitted with `admission` ended without an outcome (cancelled,
        or an error that says nothing about the zone): give its probe slot back."""
        if admission is Admission.PROBE:
            self._in_flight = max(0, self._in_flight - 1)

    def _move(self, trigger: Trigger, now: float) -> Transition:
        old = self.state
        new = TRANSITIONS.get((old, trigger))
        if new is None:
            raise ValueError(f"no transition from {old.name} on {trigger.name}")
        self.state = new
        cool = 0.0
        if new is BreakerState.OPEN:
            if old is BreakerState.CLOSED:
                self.trips += 1
            self.trips_in_row += 1
            p = self.policy
            cool = min(p.max_cool_down, p.cool_down * 2 ** (self.trips_in_row - 1))
            self.deadline = now + cool
        else:
            self.deadline = None
        if new is BreakerState.HALF_OPEN:
            self._in_flight = 0
            self._probe_ok = 0
        if new is BreakerState.CLOSED:
            self.trips_in_row = 0
            self.consecutive = 0
            self._window.clear()
        return Transition(old, new, trigger, now, cool)


@dataclass(frozen=True, slots=True)
class Choice:
    """The zone `choose_zone` picked, and how its breaker admitted the request."""

    zone: str
    domain: str
    admission: Admission
    transitions: tuple[tuple[str, Transition], ...] = ()
    """Timer transitions applied while choosing (zone, transition), for the shell."""


def choose_zone(
    order: Sequence[tuple[str, str]],
    breakers: Mapping[str, Breaker],
    now: float,
    exclude: Iterable[str] = (),
) -> Choice | None:
    """The first zone of `order` whose breaker admits a request.

    Args:
        order: `(zone, domain)` pairs, best first (`_shard.zone_order`).
        breakers: per zone; a zone without one is always admitted (PASS).
        now: monotonic seconds.
        exclude: zones not to use (the zone a request just failed on).

    Returns:
        The choice; when every remaining zone rejects, the first remaining one with
        `Admission.FORCED`; None when `exclude` leaves no zone.
    """
    skip = set(exclude)
    remaining = [(z, d) for z, d in order if z not in skip]
    if not remaining:
        return None
    moved: list[tuple[str, Transition]] = []
    for zone, domain in remaining:
        breaker = breakers.get(zone)
        if breaker is None:
            return Choice(zone, domain, Admission.PASS, tuple(moved))
        t = breaker.advance(now)
        if t is not None:
            moved.append((zone, t))
        admission = breaker.admit(now)
        if admission is not Admission.REJECT:
            return Choice(zone, domain, admission, tuple(moved))
    zone, domain = remaining[0]
    return Choice(zone, domain, Admission.FORCED, tuple(moved))
