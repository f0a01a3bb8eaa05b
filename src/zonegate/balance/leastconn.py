"""Least connections: the candidate with the fewest requests in flight per unit of weight.

Theory of operation: a pick scores every candidate `(inflight + 1) / weight` and
takes the lowest. The `+ 1` (as HAProxy's leastconn key) counts the request being
placed, so an idle pool already follows the weights: with weights 3 and 1 the
heavier one takes requests until it has three in flight per one on the other.

Ties are broken round robin: the scan starts one position further on each pick and
keeps the first lowest score, so an idle pool is not all sent to its first backend.

A pick is O(n): in-flight counts change outside the picker (in `Loads`), so there
is no ordered structure to keep up to date. One pass over a few dozen candidates
is cheaper in Python than maintaining a heap on every request start and end.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import ClassVar

from zonegate.balance._common import usable
from zonegate.balance.base import Candidate, Loads, PickContext

__all__ = ["LeastConnPicker"]


class LeastConnPicker:
    """Fewest in-flight requests relative to weight (config name "least_conn").

    Args:
        candidates: eligible backends; weight <= 0 means never picked.
        loads: in-flight counts, read on every pick.
        rng: chooses where the tie-breaking rotation starts.
        balance_factor: unused.

    Raises:
        ValueError: see `usable` (non-finite weight, negative or repeated index).
    """

    name: ClassVar[str] = "least_conn"

    __slots__ = ("_loads", "_n", "_next", "_ring")

    def __init__(
        self,
        candidates: Sequence[Candidate],
        loads: Loads,
        rng: random.Random,
        *,
        balance_factor: float = 1.25,
    ) -> None:
        indexes, weights = usable(candidates)
        self._loads = loads
        self._n = len(indexes)
        pairs = [(i, 1.0 / w) for i, w in zip(indexes, weights, strict=True)]
        # Twice over, so a scan starting anywhere reads n entries without wrapping.
        self._ring = pairs + pairs
        self._next = rng.randrange(self._n) if self._n else 0

    def pick(self, ctx: PickContext) -> int | None:
        """Return the least loaded backend index, never one in `ctx.exclude`.

        Returns None when there is no candidate or every candidate is excluded.
        """
        n = self._n
        if not n:
            return None
        start = self._next
        self._next = 0 if start + 1 == n else start + 1
        inflight = self._loads.inflight
        ring = self._ring
        exclude = ctx.exclude
        best = -1
        best_score = 0.0
        if exclude:
            for j in range(start, start + n):
                index, inv = ring[j]
                if index in exclude:
                    continue
                score = (inflight[index] + 1) * inv
                if best < 0 or score < best_score:
                    best, best_score = index, score
            return None if best < 0 else best
        best, inv = ring[start]
        best_score = (inflight[best] + 1) * inv
        for j in range(start + 1, start + n):
            index, inv = ring[j]
            score = (inflight[index] + 1) * inv
            if score < best_score:
                best, best_score = index, score
        return best
