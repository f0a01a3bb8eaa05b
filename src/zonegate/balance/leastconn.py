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

Slow start: scoring by the ramped weight would send an idle pool's requests all to
the heaviest candidate, and none to a ramping one until the others are busy. So the
score uses the configured weight (`weight / ramp`), and a ramping candidate
(`Candidate.ramp` = f < 1) sits out each pick with probability 1 - f: it takes f of
the requests it would take at full weight (f / n of an idle pool of n equals), and
its in-flight count grows with f. If every allowed candidate sits out, the best of
them takes the request.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import ClassVar

from zonegate.balance._common import configured, ramps, usable
from zonegate.balance.base import Candidate, Loads, PickContext

__all__ = ["LeastConnPicker"]


class LeastConnPicker:
    """Fewest in-flight requests relative to weight (config name "least_conn").

    Args:
        candidates: eligible backends; weight <= 0 means never picked.
        loads: in-flight counts, read on every pick.
        rng: chooses where the tie-breaking rotation starts; draws whether a
            ramping candidate sits out.
        balance_factor: unused.

    Raises:
        ValueError: see `usable` (non-finite weight, negative or repeated index).
    """

    name: ClassVar[str] = "least_conn"

    __slots__ = ("_loads", "_n", "_next", "_ramp", "_random", "_ring")

    def __init__(
        self,
        candidates: Sequence[Candidate],
        loads: Loads,
        rng: random.Random,
        *,
        balance_factor: float = 1.25,
    ) -> None:
        indexes, weights = usable(candidates)
        ramp = ramps(candidates, indexes)
        self._loads = loads
        self._n = len(indexes)
        self._random = rng.random
        pairs = [(i, 1.0 / w) for i, w in zip(indexes, configured(weights, ramp), strict=True)]
        # Twice over, so a scan starting anywhere reads n entries without wrapping.
        self._ring = pairs + pairs
        self._ramp = ramp + ramp if ramp is not None else None
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
        ramp = self._ramp
        if ramp is not None:
            return self._pick_ramping(start, exclude, ramp)
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

    def _pick_ramping(
        self, start: int, exclude: frozenset[int] | set[int], ramp: list[float]
    ) -> int | None:
        inflight = self._loads.inflight
        ring = self._ring
        rand = self._random
        best = out = -1
        best_score = out_score = 0.0
        for j in range(start, start + self._n):
            index, inv = ring[j]
            if index in exclude:
                continue
            score = (inflight[index] + 1) * inv
            f = ramp[j]
            if f < 1.0 and rand() >= f:  # sits this pick out
                if out < 0 or score < out_score:
                    out, out_score = index, score
            elif best < 0 or score < best_score:
                best, best_score = index, score
        if best < 0:
            return None if out < 0 else out
        return best
