"""Per-worker traffic counters, cheap enough for the hot path.

Plain lists and ints, no locks: each worker owns its counters and the admin process
gathers snapshots (`PoolStats.snapshot()`) and merges them for /metrics and /status.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds (seconds) of the latency histogram; a last +Inf bucket follows."""

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")

ERROR_KINDS = (
    "connect_failed",
    "connect_timeout",
    "reset_before_response",
    "read_timeout",
    "total_timeout",
    "bad_response",
    "retried",
    "no_backend",
    "no_route",
    "client_bad_request",
    "client_header_timeout",
    "spilled",
    "aborted_midway",
    "tcp_accepted",
)


class PoolStats:
    """Counters of one pool in one worker."""

    __slots__ = ("errors", "latency_buckets", "latency_count", "latency_sum", "responses")

    def __init__(self, size: int) -> None:
        self.responses = [[0, 0, 0, 0, 0] for _ in range(size)]
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.errors = dict.fromkeys(ERROR_KINDS, 0)

    def record(self, index: int, status: int, latency: float) -> None:
        """Count one response of backend `index` (-1: a backend a reload removed)."""
        cls = status // 100 - 1
        if 0 <= cls < 5 and index >= 0:
            self.responses[index][cls] += 1
        self.latency_buckets[bisect_left(LATENCY_BUCKETS, latency)] += 1
        self.latency_sum += latency
        self.latency_count += 1

    def carry_over(self, old: PoolStats, remap: Sequence[int]) -> None:
        """Continue the counters of the generation a reload replaced.

        Pool totals carry over whole; per-backend rows follow `remap` (for each index
        of `old`, the backend's index here, -1 if it left). The error counters are one
        dict shared by every generation, so a request that started before the reload
        counts its errors in the same place.
        """
        for i, j in enumerate(remap):
            if j >= 0:
                self.responses[j] = list(old.responses[i])
        self.latency_buckets = list(old.latency_buckets)
        self.latency_sum = old.latency_sum
        self.latency_count = old.latency_count
        self.errors = old.errors

    def snapshot(self) -> dict[str, Any]:
        return {
            "responses": [list(r) for r in self.responses],
            "latency_buckets": list(self.latency_buckets),
            "latency_sum": self.latency_sum,
            "latency_count": self.latency_count,
            "errors": dict(self.errors),
        }


class ForwardedStats(PoolStats):
    """The counters of a pool generation a reload replaced: what its requests still in
    flight record goes to the live generation (`target()`), by backend id (`remap`)."""

    __slots__ = ("_remap", "_target")

    def __init__(
        self, old: PoolStats, target: Callable[[], PoolStats], remap: Sequence[int]
    ) -> None:
        super().__init__(0)
        self.errors = old.errors
        self._target = target
        self._remap = list(remap)

    def record(self, index: int, status: int, latency: float) -> None:
        self._target().record(self._remap[index], status, latency)


def merge_snapshots(snaps: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the snapshots of one pool taken in several workers.

    Per-backend figures (`responses`, `inflight`) are matched by backend id, not by
    position: workers in the middle of a reload may list different backends, and a
    sum by position would then drop or mix counters. The result lists the union of
    the ids, in the order first seen.
    """
    ids: list[str] = []
    where: dict[str, int] = {}
    responses: list[list[int]] = []
    inflight: list[int] = []
    buckets = [0] * (len(LATENCY_BUCKETS) + 1)
    latency_sum = 0.0
    latency_count = 0
    errors: dict[str, int] = {}
    for s in snaps:
        rows = s["responses"]
        busy = s.get("inflight") or [0] * len(rows)
        for k, bid in enumerate(s.get("ids") or [str(k) for k in range(len(rows))]):
            j = where.get(bid)
            if j is None:
                j = where[bid] = len(ids)
                ids.append(bid)
                responses.append([0] * len(STATUS_CLASSES))
                inflight.append(0)
            row = responses[j]
            for c, v in enumerate(rows[k]):
                row[c] += v
            inflight[j] += busy[k]
        for i, v in enumerate(s["latency_buckets"]):
            buckets[i] += v
        latency_sum += s["latency_sum"]
        latency_count += s["latency_count"]
        for kind, v in s["errors"].items():
            errors[kind] = errors.get(kind, 0) + v
    return {
        "ids": ids,
        "inflight": inflight,
        "responses": responses,
        "latency_buckets": buckets,
        "latency_sum": latency_sum,
        "latency_count": latency_count,
        "errors": errors,
    }
