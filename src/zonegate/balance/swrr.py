"""Smooth weighted round robin, as nginx's upstream module does it.

Theory of operation (nginx `ngx_http_upstream_get_peer`): every candidate keeps a
`current` weight, all starting at 0. On each pick, every candidate adds its weight
to `current`; the one with the largest `current` wins (ties: the earliest in the
list) and its `current` drops by the sum of all weights. With integer weights the
`current` values are all back to 0 after sum(weights) picks, so each cycle picks
every candidate exactly `weight` times, and the picks are spread out: weights
5, 1, 1 give `a a b a c a a`, where a plain weighted round robin gives
`a a a a a b c`.

The algorithm works on floats as they are (slow start gives fractional weights);
each pick is then O(n).

Fast path: when the weights are integers (after dividing by their GCD) and one
cycle is short enough (`SCHEDULE_BUDGET`), the constructor runs the algorithm for
one cycle and stores the sequence. A pick is then one list lookup, O(1). The
stored cycle is entered at a random position (from the `rng` passed in), so LB
nodes that rebuild their pickers together do not move in lockstep; the live path
starts from nginx's all-zero state.

Exclusion (a retry): the live path skips excluded candidates exactly as nginx
skips the peers it has already tried (they neither gain nor pay weight). The
stored-cycle path returns the next allowed entry of the cycle without moving the
cursor, so the excluded backends keep their turns for the next request.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import ClassVar

from zonegate.balance._common import usable
from zonegate.balance.base import Candidate, Loads, PickContext

__all__ = ["SCHEDULE_BUDGET", "SmoothWeightedPicker"]

SCHEDULE_BUDGET = 1 << 16
"""Largest cycle length x candidate count the constructor precomputes (~10 ms)."""


def _integer_weights(weights: Sequence[float]) -> list[int] | None:
    """Return the weights as integers divided by their GCD, or None if one is fractional."""
    ints: list[int] = []
    for w in weights:
        if not w.is_integer():
            return None
        ints.append(int(w))
    g = math.gcd(*ints)
    return [w // g for w in ints]


def _cycle(weights: Sequence[int]) -> list[int]:
    """Run nginx's algorithm for one full cycle; return the positions picked."""
    n = len(weights)
    total = sum(weights)
    current = [0] * n
    seq: list[int] = []
    for _ in range(total):
        best = 0
        best_cur = current[0] + weights[0]
        current[0] = best_cur
        for k in range(1, n):
            c = current[k] + weights[k]
            current[k] = c
            if c > best_cur:
                best_cur = c
                best = k
        current[best] -= total
        seq.append(best)
    return seq


class SmoothWeightedPicker:
    """nginx smooth weighted round robin (config name "weighted").

    Args:
        candidates: eligible backends; weight <= 0 means never picked. Float
            weights are used as they are.
        loads: unused.
        rng: chooses the entry point into a precomputed cycle.
        balance_factor: unused.

    Raises:
        ValueError: see `usable` (non-finite weight, negative or repeated index).
    """

    name: ClassVar[str] = "weighted"

    __slots__ = ("_current", "_indexes", "_n", "_pos", "_schedule", "_total", "_weights")

    def __init__(
        self,
        candidates: Sequence[Candidate],
        loads: Loads,
        rng: random.Random,
        *,
        balance_factor: float = 1.25,
    ) -> None:
        self._indexes, self._weights = usable(candidates)
        self._n = len(self._indexes)
        self._total = sum(self._weights)
        self._current = [0.0] * self._n
        self._schedule: list[int] = []
        self._pos = 0
        ints = _integer_weights(self._weights) if self._n else None
        if ints is not None and sum(ints) * self._n <= SCHEDULE_BUDGET:
            self._schedule = [self._indexes[k] for k in _cycle(ints)]
            self._pos = rng.randrange(len(self._schedule))

    def pick(self, ctx: PickContext) -> int | None:
        """Return the next backend index of the smooth sequence, never one in `ctx.exclude`.

        Returns None when there is no candidate or every candidate is excluded.
        """
        if ctx.exclude:
            return self._pick_excluding(ctx.exclude)
        schedule = self._schedule
        if schedule:
            i = self._pos
            nxt = i + 1
            self._pos = 0 if nxt == len(schedule) else nxt
            return schedule[i]
        if not self._n:
            return None
        current = self._current
        weights = self._weights
        best = 0
        best_cur = current[0] + weights[0]
        current[0] = best_cur
        for k in range(1, self._n):
            c = current[k] + weights[k]
            current[k] = c
            if c > best_cur:
                best_cur = c
                best = k
        current[best] -= self._total
        return self._indexes[best]

    def _pick_excluding(self, exclude: frozenset[int] | set[int]) -> int | None:
        indexes = self._indexes
        schedule = self._schedule
        if schedule:
            if all(i in exclude for i in indexes):
                return None
            # Terminates within one cycle: some allowed index is in the schedule.
            n = len(schedule)
            j = self._pos
            while schedule[j] in exclude:
                j = 0 if j + 1 == n else j + 1
            return schedule[j]
        current = self._current
        weights = self._weights
        best = -1
        best_cur = 0.0
        total = 0.0
        for k in range(self._n):
            if indexes[k] in exclude:
                continue
            w = weights[k]
            total += w
            c = current[k] + w
            current[k] = c
            if best < 0 or c > best_cur:
                best_cur = c
                best = k
        if best < 0:
            return None
        current[best] -= total
        return indexes[best]
