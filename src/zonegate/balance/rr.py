"""Round robin: candidates in turn, ignoring weights (weight <= 0 still means absent).

Theory of operation: a cursor walks the candidate list. It starts at a random
position (from the `rng` passed in, as Envoy does) so that LB nodes rebuilding their
pickers at the same moment do not all send their next request to the same backend.
With excluded backends (a retry), the cursor moves on to the next allowed one;
excluded backends passed over lose that turn, which also steers traffic away
from a backend that just failed.

Slow start: weights are ignored, so a ramping candidate (`Candidate.ramp` = f < 1)
takes its turn only with probability f; a turn it sits out goes to the next
candidate, whose own turn it is anyway. In one sweep of the cursor the others take
one request each and the ramping one f on average: its share is f / (n - 1 + f),
what a weighted round robin with weights 1, ..., 1, f gives. If every allowed
candidate sits out, the first of them takes the request.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import ClassVar

from zonegate.balance._common import ramps, usable
from zonegate.balance.base import Candidate, Loads, PickContext

__all__ = ["RoundRobinPicker"]


class RoundRobinPicker:
    """Plain round robin (config name "round_robin").

    Args:
        candidates: eligible backends; weight <= 0 means never picked, other
            weights are ignored; a ramp < 1 makes a candidate skip turns.
        loads: unused.
        rng: chooses the starting position, and draws the turns of ramping candidates.
        balance_factor: unused.

    Raises:
        ValueError: see `usable` (non-finite weight, negative or repeated index).
    """

    name: ClassVar[str] = "round_robin"

    __slots__ = ("_indexes", "_n", "_next", "_ramp", "_random")

    def __init__(
        self,
        candidates: Sequence[Candidate],
        loads: Loads,
        rng: random.Random,
        *,
        balance_factor: float = 1.25,
    ) -> None:
        self._indexes, _ = usable(candidates)
        self._ramp = ramps(candidates, self._indexes)
        self._random = rng.random
        self._n = len(self._indexes)
        self._next = rng.randrange(self._n) if self._n else 0

    def pick(self, ctx: PickContext) -> int | None:
        """Return the next backend index in turn, never one in `ctx.exclude`.

        Returns None when there is no candidate or every candidate is excluded.
        """
        if ctx.exclude or not self._n or self._ramp is not None:
            return self._pick_slow(ctx)
        i = self._next
        nxt = i + 1
        self._next = 0 if nxt == self._n else nxt
        return self._indexes[i]

    def _pick_slow(self, ctx: PickContext) -> int | None:
        exclude = ctx.exclude
        indexes = self._indexes
        ramp = self._ramp
        n = self._n
        i = self._next
        sat_out = -1
        for _ in range(n):
            k = i
            index = indexes[k]
            i = 0 if i + 1 == n else i + 1
            if index in exclude:
                continue
            if ramp is not None and ramp[k] < 1.0 and self._random() >= ramp[k]:
                if sat_out < 0:
                    sat_out = k
                continue
            self._next = i
            return index
        if sat_out < 0:
            return None
        self._next = 0 if sat_out + 1 == n else sat_out + 1
        return indexes[sat_out]
