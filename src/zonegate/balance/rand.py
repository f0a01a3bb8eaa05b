"""Weighted random: each pick draws a candidate with probability weight / total.

Theory of operation: the constructor builds a cumulative-weight table; a pick
draws `u = rng.random() * total` and bisects the table (O(log n), no allocation).
With excluded backends (a retry), the draw is redone over the allowed candidates
only, in O(n), so the shares among those stay proportional to their weights.

Randomness comes only from the `random.Random` passed in, so a seeded source
gives a reproducible sequence.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence
from typing import ClassVar

from zonegate.balance._common import WeightedSampler, usable
from zonegate.balance.base import Candidate, Loads, PickContext

__all__ = ["RandomPicker"]


class RandomPicker:
    """Weighted random pick (config name "random").

    Args:
        candidates: eligible backends; weight <= 0 means never picked.
        loads: unused.
        rng: the only source of randomness.
        balance_factor: unused.

    Raises:
        ValueError: see `usable` (non-finite weight, negative or repeated index).
    """

    name: ClassVar[str] = "random"

    __slots__ = ("_cum", "_indexes", "_last", "_random", "_rng", "_sampler", "_total")

    def __init__(
        self,
        candidates: Sequence[Candidate],
        loads: Loads,
        rng: random.Random,
        *,
        balance_factor: float = 1.25,
    ) -> None:
        self._indexes, weights = usable(candidates)
        self._rng = rng
        self._random = rng.random
        self._sampler = WeightedSampler(weights)
        self._cum = self._sampler.cum
        self._total = self._sampler.total
        self._last = self._sampler.last

    def pick(self, ctx: PickContext) -> int | None:
        """Return a backend index drawn by weight, never one in `ctx.exclude`.

        Returns None when there is no candidate or every candidate is excluded.
        """
        if ctx.exclude or self._last < 0:
            return self._pick_slow(ctx)
        return self._indexes[bisect_right(self._cum, self._random() * self._total, 0, self._last)]

    def _pick_slow(self, ctx: PickContext) -> int | None:
        k = self._sampler.draw_allowed(self._rng, self._indexes, ctx.exclude)
        return None if k is None else self._indexes[k]
