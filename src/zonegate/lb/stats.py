"""Per-worker traffic counters, cheap enough for the hot path.

Plain lists and ints, no locks: each worker owns its counters and the admin process
gathers snapshots (`PoolStats.snapshot()`) and merges them for /metrics and /status.
"""

from __future__ import annotations

from bisect import bisect_left
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
        cls = status // 100 - 1
        if 0 <= cls < 5:
            self.responses[index][cls] += 1
        self.latency_buckets[bisect_left(LATENCY_BUCKETS, latency)] += 1
        self.latency_sum += latency
        self.latency_count += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "responses": [list(r) for r in self.responses],
            "latency_buckets": list(self.latency_buckets),
            "latency_sum": self.latency_sum,
            "latency_count": self.latency_count,
            "errors": dict(self.errors),
        }


def merge_snapshots(snaps: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the snapshots of one pool taken in several workers."""
    out: dict[str, Any] = {}
    for s in snaps:
        if not out:
            out = {
                "responses": [list(r) for r in s["responses"]],
                "latency_buckets": list(s["latency_buckets"]),
                "latency_sum": s["latency_sum"],
                "latency_count": s["latency_count"],
                "errors": dict(s["errors"]),
            }
            continue
        if len(s["responses"]) != len(out["responses"]):
            continue  # a worker mid-reload; its next snapshot will match
        for row, add in zip(out["responses"], s["responses"], strict=True):
            for i, v in enumerate(add):
                row[i] += v
        for i, v in enumerate(s["latency_buckets"]):
            out["latency_buckets"][i] += v
        out["latency_sum"] += s["latency_sum"]
        out["latency_count"] += s["latency_count"]
        for k, v in s["errors"].items():
            out["errors"][k] = out["errors"].get(k, 0) + v
    return out
