"""Helpers shared by the pickers: candidate filtering and weighted sampling.

Weighted sampling keeps a cumulative-weight table and draws with one `rng.random()`
and one `bisect` (both in C), as `random.choices` does, without its per-call
allocations.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Collection, Sequence

from zonegate.balance.base import Candidate


def usable(candidates: Sequence[Candidate]) -> tuple[list[int], list[float]]:
    """Split the pickable candidates into parallel index and weight lists.

    Args:
        candidates: the pool's eligible backends, in pool order.

    Returns:
        The indexes and weights of candidates whose weight is > 0, order kept.
        Candidates with weight <= 0 are dropped: they are never picked.

    Raises:
        ValueError: a weight is NaN or infinite, an index is negative, or two
            candidates share an index.
    """
    indexes: list[int] = []
    weights: list[float] = []
    seen: set[int] = set()
    for c in candidates:
        if not math.isfinite(c.weight):
            raise ValueError(f"candidate {c.index}: weight must be finite, got {c.weight!r}")
        if c.index < 0:
            raise ValueError(f"candidate index must be >= 0, got {c.index}")
        if c.index in seen:
            raise ValueError(f"candidate index {c.index} appears twice")
        seen.add(c.index)
        if c.weight > 0:
            indexes.append(c.index)
            weights.append(float(c.weight))
    return indexes, weights


def ramps(candidates: Sequence[Candidate], indexes: Sequence[int]) -> list[float] | None:
    """The slow-start factor of each usable candidate, position by position.

    Args:
        candidates: the pool's eligible backends.
        indexes: the usable indexes, as `usable` returned them.

    Returns:
        The factors in the order of `indexes`, or None when no candidate ramps (the
        pickers' fast paths).

    Raises:
        ValueError: a ramp is not in (0, 1].
    """
    by_index = {}
    for c in candidates:
        if not 0.0 < c.ramp <= 1.0:
            raise ValueError(f"candidate {c.index}: ramp must be in (0, 1], got {c.ramp!r}")
        by_index[c.index] = c.ramp
    out = [by_index[i] for i in indexes]
    return out if any(r < 1.0 for r in out) else None


def configured(weights: Sequence[float], ramp: Sequence[float] | None) -> list[float]:
    """The weights before slow start (`weight / ramp`), for pickers that admit by ramp."""
    if ramp is None:
        return list(weights)
    return [w / r for w, r in zip(weights, ramp, strict=True)]


class WeightedSampler:
    """Weighted random draws over fixed positions 0..n-1.

    With no weights (n = 0) the sampler is empty and must not be drawn from.

    Attributes:
        cum: cumulative weights; cum[k] is the sum of weights[0..k].
        total: sum of all weights.
        last: n - 1, the upper bound handed to bisect, so that a draw equal to
            `total` after rounding still lands on the last position.
    """

    __slots__ = ("cum", "last", "total", "weights")

    def __init__(self, weights: Sequence[float]) -> None:
        self.weights = list(weights)
        self.cum: list[float] = []
        acc = 0.0
        for w in self.weights:
            acc += w
            self.cum.append(acc)
        self.total = acc
        self.last = len(self.weights) - 1

    def draw(self, rand: random.Random) -> int:
        """Return a position drawn with probability weight/total."""
        return bisect_right(self.cum, rand.random() * self.total, 0, self.last)

    def draw_other(self, rand: random.Random, k: int) -> int:
        """Return a position other than `k`, drawn by weight among the rest (n >= 2)."""
        wk = self.weights[k]
        u = rand.random() * (self.total - wk)
        # Map [0, total - wk) onto the table with position k's interval cut out.
        if u >= self.cum[k] - wk:
            u += wk
        j = bisect_right(self.cum, u, 0, self.last)
        if j == k:  # only through float rounding at the cut's edges
            j = k + 1 if k < self.last else k - 1
        return j

    def draw_allowed(
        self, rand: random.Random, indexes: Sequence[int], exclude: Collection[int]
    ) -> int | None:
        """Return a position whose index is not excluded, drawn by weight among those.

        O(n): this is the slow path, taken only when a request retries.

        Args:
            rand: the picker's random source.
            indexes: backend index of each position.
            exclude: backend indexes not to return.

        Returns:
            A position, or None when every position is excluded.
        """
        weights = self.weights
        allowed = [k for k, i in enumerate(indexes) if i not in exclude]
        if not allowed:
            return None
        if len(allowed) == 1:
            return allowed[0]
        total = 0.0
        for k in allowed:
            total += weights[k]
        u = rand.random() * total
        for k in allowed:
            u -= weights[k]
            if u < 0.0:
                return k
        return allowed[-1]  # float rounding left u at exactly 0.0
