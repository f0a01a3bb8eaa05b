"""The drill model: requests as the client saw them, steps, budgets, and the verdict.

Theory of operation
-------------------
A drill is a list of `Step`s run one after the other under a steady load. Each step
does one thing to the running system (its `action`: kill a process, drain a backend,
cut a domain over) and is then watched for at least `Step.duration` seconds. Every
request the load generator sends becomes a `Sample` (when it started, which zone the
device belongs to, which zone and backend answered, status, latency, error).

When a step ends, `evaluate` turns its samples and what the action recorded on the
`StepRun` (the fault time, when the system detected it, step-specific `Check`s) into
numbers and a verdict against the step's `Budget`::

    action ──> StepRun(fault, detect, checks, recover_when)
                    │
    samples ────────┴──> evaluate ──> requests, failed, p50/p99, recover, missed, met

    fault ─────── detect ─────────── recovered
      │  detect_s   │                    │
      └──────────── recover_s ───────────┘

This module is pure: no I/O, no clock. Times are seconds since the demo started,
passed in by the caller.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "Action",
    "Budget",
    "Check",
    "Sample",
    "Step",
    "StepRun",
    "all_answer",
    "count_check",
    "evaluate",
    "percentile",
]


class Sample(NamedTuple):
    """One request as the client saw it; times in seconds since the demo started.

    `zone` is the zone whose LB answered (or was tried last, for a failure); `home`
    the zone the client's split map gave the device when the request was sent (empty
    when unknown). They differ after a client-side zone failover (`failover`).
    `served` is the zone of the backend that answered, as it says itself (the demo
    backend's `X-Zone`): it differs from `zone` when a pool spills to its backup pool
    in another zone.
    """

    t: float
    zone: str
    backend: str
    status: int
    latency: float
    error: str
    home: str = ""
    version: int = 0
    """The control-plane version stamped on the answer (`X-Zonegate-Version`), 0 if none."""
    failover: bool = False
    """Sent to another zone after a network error on the device's own zone."""
    served: str = ""
    """The zone of the backend that answered (its `X-Zone`), empty if unknown."""

    @property
    def ok(self) -> bool:
        """A 2xx/3xx answer."""
        return not self.error and 200 <= self.status < 400

    @property
    def end(self) -> float:
        """When the answer (or the error) came."""
        return self.t + self.latency

    @property
    def owner(self) -> str:
        """The device's zone (`home`), else the zone that was asked."""
        return self.home or self.zone


@dataclass(frozen=True, slots=True)
class Budget:
    """What a step may cost clients. Times are seconds after the step's fault."""

    max_failed: int = 0
    failed_after_detect: bool = False
    """Count only requests started after the LB detected the fault."""
    max_detect: float | None = None
    max_recover: float | None = None

    def describe(self) -> str:
        """Short form for the table: `fail<=0 (after det) det<=5s rec<=1s`."""
        parts = [f"fail<={self.max_failed}" + (" after det" if self.failed_after_detect else "")]
        if self.max_detect is not None:
            parts.append(f"det<={self.max_detect:g}s")
        if self.max_recover is not None:
            parts.append(f"rec<={self.max_recover:g}s")
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "max_failed": self.max_failed,
            "failed_after_detect": self.failed_after_detect,
            "max_detect_s": self.max_detect,
            "max_recover_s": self.max_recover,
        }


@dataclass(frozen=True, slots=True)
class Check:
    """A step-specific condition, with what was measured.

    A check that is not `required` is advisory: shown (as "warn"), never a budget miss.
    """

    name: str
    ok: bool
    detail: str
    required: bool = True


Action = Callable[[Any, "StepRun"], Awaitable[None]]
"""`async def act(drill, run)`: does the step's fault and records what it saw on `run`."""


@dataclass(frozen=True, slots=True)
class Step:
    """One drill: do `action`, observe for at least `duration` s, judge by `budget`.

    `detect_means`/`recover_means` say what the detection and recovery times measure
    for this step (they are shown in the report).
    """

    name: str
    title: str
    action: Action
    duration: float
    budget: Budget = Budget()
    settle: float = 1.0
    """Least observation time after the action returns."""
    detect_means: str = ""
    recover_means: str = ""
    kind: str = "fault"
    """What the action does, for the report's timeline: "fault" (breaks something),
    "repair" (puts it back) or "traffic" (nothing)."""


@dataclass
class StepRun:
    """One step's measurements. Actions fill in `fault`, `detect`, checks."""

    step: Step
    start: float
    end: float = 0.0
    fault: float | None = None
    detect: float | None = None
    recovered: float | None = None
    watch_zone: str | None = None
    recover_when: Callable[[Sample], bool] | None = None
    """Recovery = the first success matching this after the fault and after the last
    failure of a device of `watch_zone` (`Sample.owner`), unless the action set
    `recovered` itself."""
    checks: list[Check] = field(default_factory=list)
    late_checks: list[Callable[[list[Sample]], Check]] = field(default_factory=list)
    """Evaluated on the step's samples when it ends."""
    events: list[tuple[float, str]] = field(default_factory=list)
    # results (see `evaluate`)
    requests: int = 0
    failed: int = 0
    counted_failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    answered: dict[str, dict[str, int]] = field(default_factory=dict)
    """Successful requests per answering zone and backend."""
    routes: dict[str, dict[str, int]] = field(default_factory=dict)
    """Successful requests per device zone (`Sample.owner`) and answering zone."""
    failovers: int = 0
    """Requests a client sent to another zone after a network error on its own."""
    p50: float | None = None
    p99: float | None = None
    missed: list[str] = field(default_factory=list)
    met: bool = False

    @property
    def detect_s(self) -> float | None:
        if self.detect is None or self.fault is None:
            return None
        return self.detect - self.fault

    @property
    def recover_s(self) -> float | None:
        if self.recovered is None or self.fault is None:
            return None
        return self.recovered - self.fault

    def to_json(self) -> dict[str, Any]:
        def r(x: float | None, scale: float = 1.0) -> float | None:
            return None if x is None else round(x * scale, 4)

        return {
            "name": self.step.name,
            "title": self.step.title,
            "start_s": r(self.start),
            "end_s": r(self.end),
            "requests": self.requests,
            "failed": self.failed,
            "failed_counted": self.counted_failed,
            "errors": self.errors,
            "answered": self.answered,
            "routes": self.routes,
            "failovers": self.failovers,
            "p50_ms": r(self.p50, 1000),
            "p99_ms": r(self.p99, 1000),
            "fault_s": r(self.fault),
            "detect_s": r(self.detect_s),
            "recover_s": r(self.recover_s),
            "detect_means": self.step.detect_means,
            "recover_means": self.step.recover_means,
            "kind": self.step.kind,
            "budget": self.step.budget.to_json(),
            "budget_text": self.step.budget.describe(),
            "checks": [
                {"name": c.name, "ok": c.ok, "detail": c.detail, "required": c.required}
                for c in self.checks
            ],
            "events": [{"t_s": r(t), "event": e} for t, e in self.events],
            "missed": self.missed,
            "met": self.met,
        }


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of already sorted values."""
    if not sorted_values:
        return None
    k = max(0, math.ceil(q / 100 * len(sorted_values)) - 1)
    return sorted_values[k]


def evaluate(run: StepRun, samples: Sequence[Sample]) -> None:
    """Fill in `run`'s results from the requests that started during the step."""
    failed = [s for s in samples if not s.ok]
    run.requests = len(samples)
    run.failed = len(failed)
    run.errors = dict(Counter(s.error or f"http_{s.status}" for s in failed))
    answered: dict[str, Counter[str]] = {}
    for s in samples:
        if s.ok:
            answered.setdefault(s.zone, Counter())[s.backend] += 1
    run.answered = {z: dict(sorted(c.items())) for z, c in answered.items()}
    routes: dict[str, Counter[str]] = {}
    for s in samples:
        if s.ok:
            routes.setdefault(s.owner, Counter())[s.zone] += 1
    run.routes = {z: dict(sorted(c.items())) for z, c in sorted(routes.items())}
    run.failovers = sum(1 for s in samples if s.failover)
    latencies = sorted(s.latency for s in samples)
    run.p50 = percentile(latencies, 50)
    run.p99 = percentile(latencies, 99)
    for late in run.late_checks:
        run.checks.append(late(list(samples)))
    run.late_checks = []
    if run.recovered is None and run.fault is not None and run.recover_when is not None:
        after = run.fault
        for s in failed:
            if s.end >= after and (run.watch_zone is None or s.owner == run.watch_zone):
                after = s.end
        run.recovered = min(
            (s.end for s in samples if s.ok and s.end >= after and run.recover_when(s)),
            default=None,
        )
    b = run.step.budget
    since = run.start
    if b.failed_after_detect:
        # Undetected: everything after the fault counts.
        since = run.detect if run.detect is not None else (run.fault or run.start)
    run.counted_failed = sum(1 for s in failed if s.t >= since)
    missed = []
    if run.counted_failed > b.max_failed:
        missed.append(f"{run.counted_failed} failed > {b.max_failed}")
    for label, limit, value in (
        ("detect", b.max_detect, run.detect_s),
        ("recover", b.max_recover, run.recover_s),
    ):
        if limit is None:
            continue
        if value is None:
            missed.append(f"no {label}")
        elif value > limit:
            missed.append(f"{label} {value:.2f}s > {limit:g}s")
    missed.extend(f"check {c.name}" for c in run.checks if c.required and not c.ok)
    run.missed = missed
    run.met = not missed


def all_answer(names: Iterable[str], samples: Sequence[Sample]) -> Check:
    """Advisory: a healthy backend that answers nothing points at the balancer."""
    answered = Counter(s.backend for s in samples if s.ok)
    counts = ", ".join(f"{n} {answered[n]}" for n in names)
    silent = [n for n in names if not answered[n]]
    return Check("every backend answers", not silent, counts, required=False)


def count_check(name: str, bad: Sequence[Sample], limit: int) -> Check:
    """A required check: at most `limit` samples in `bad`."""
    return Check(name, len(bad) <= limit, f"{len(bad)} seen (allowed {limit})")
