"""Outages seen by a client probing an address at a fixed interval (pure).

Theory of operation: a prober sends probe *i* at time ``t_i`` (every `interval`
seconds) and marks it ok when an answer came back within its timeout, noting which
node answered. The service was out between two ok probes ``a < b`` with failed probes
between them, for ``t_b - t_a - interval`` seconds: the time during which a probe sent
would not have been answered, to the resolution of the interval (k failed probes in a
row at a steady pace give ``k * interval``). A run that starts or ends with failures
has an outage counted from the first probe, or up to the last one (`open_end`).

`summarize` turns the samples into the figures the tests and the bench use: the longest
outage, every outage, answers per node, the first and last node to answer, and the
switches from one node to another.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Outage", "Sample", "Summary", "summarize"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One probe: when it was sent (monotonic seconds), answered in time or not, by whom."""

    t: float
    ok: bool
    node: str | None = None


@dataclass(frozen=True, slots=True)
class Outage:
    """A run of failed probes; `start` is the last ok probe's send time (or the first probe)."""

    start: float
    end: float
    seconds: float
    failed: int
    open_end: bool = False  # still failing at the last probe


@dataclass(frozen=True, slots=True)
class Summary:
    """The figures of one probing run (see `summarize`)."""

    probes: int
    ok: int
    failed: int
    longest_outage: float
    outages: tuple[Outage, ...]
    per_node: dict[str, int]
    first_node: str | None
    last_node: str | None
    switches: tuple[tuple[float, str | None, str], ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict; times in ms are rounded to 0.1 ms."""
        return {
            "probes": self.probes,
            "ok": self.ok,
            "failed": self.failed,
            "longest_outage_ms": round(self.longest_outage * 1000, 1),
            "outages": [
                {
                    "start": o.start,
                    "end": o.end,
                    "ms": round(o.seconds * 1000, 1),
                    "failed": o.failed,
                    "open_end": o.open_end,
                }
                for o in self.outages
            ],
            "per_node": dict(self.per_node),
            "first_node": self.first_node,
            "last_node": self.last_node,
            "switches": [{"t": t, "from": a, "to": b} for t, a, b in self.switches],
        }


def summarize(samples: Sequence[Sample], interval: float) -> Summary:
    """Summarise probes sent every `interval` seconds, in send order.

    Args:
        samples: the probes, sorted by `t`.
        interval: the probing interval in seconds (> 0).

    Returns:
        The `Summary`; with no sample at all, everything is zero or None.

    Raises:
        ValueError: `interval` <= 0 or samples out of order.
    """
    if interval <= 0:
        raise ValueError("interval must be > 0")
    outages: list[Outage] = []
    per_node: Counter[str] = Counter()
    switches: list[tuple[float, str | None, str]] = []
    last_ok: Sample | None = None
    fail_start: float | None = None  # send time of the first failed probe of the run
    failed_run = 0
    prev_t = float("-inf")
    for s in samples:
        if s.t < prev_t:
            raise ValueError("samples must be sorted by time")
        prev_t = s.t
        if not s.ok:
            if failed_run == 0:
                fail_start = s.t
            failed_run += 1
            continue
        node = s.node or "?"
        per_node[node] += 1
        if failed_run:
            assert fail_start is not None
            if last_ok is None:  # failing from the first probe on
                start, secs = fail_start, s.t - fail_start
            else:
                start, secs = last_ok.t, s.t - last_ok.t - interval
            outages.append(Outage(start, s.t, max(secs, 0.0), failed_run))
        if last_ok is None or (last_ok.node or "?") != node:
            switches.append((s.t, None if last_ok is None else (last_ok.node or "?"), node))
        last_ok, failed_run = s, 0
    if failed_run:
        assert fail_start is not None
        start = last_ok.t if last_ok is not None else fail_start
        end = samples[-1].t
        outages.append(Outage(start, end, max(end - start, 0.0), failed_run, open_end=True))
    ok = sum(per_node.values())
    return Summary(
        probes=len(samples),
        ok=ok,
        failed=len(samples) - ok,
        longest_outage=max((o.seconds for o in outages), default=0.0),
        outages=tuple(outages),
        per_node=dict(per_node),
        first_node=switches[0][2] if switches else None,
        last_node=(last_ok.node or "?") if last_ok is not None else None,
        switches=tuple(switches),
    )
