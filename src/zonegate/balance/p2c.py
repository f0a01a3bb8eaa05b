"""Least load by the power of two choices (Mitzenmacher), on latency x in-flight.

Theory of operation: a pick draws two distinct candidates at random, each by weight,
and takes the one with the lower cost `latency * (inflight + 1)`, where latency is
the backend's EWMA from `Loads` (Finagle's peak-EWMA idea, Envoy's least_request
with two choices). Comparing two random candidates instead of all of them is O(log n)
and avoids the herd effect of always choosing the global best from stale data.

A backend with no latency sample yet (0.0) is costed at the mean latency of the
candidates that have one (`DEFAULT_LATENCY` if none has), so a new backend is
tried but not flooded: its cost grows with its in-flight count like any other's.

A backend that has not answered for a while has its latency decayed by half every
`IDLE_HALF_LIFE` seconds of idleness (on the pool's clock, `Loads.now`), as Finagle's
peak EWMA decays between observations: otherwise one slow early sample would make a
backend lose every comparison forever, and never get the request that corrects it.

Ties go to the first draw. With excluded backends (a retry), the two draws are
made among the allowed candidates only, in O(n).

Slow start: the pair is drawn by configured weight (`weight / ramp`), and a ramping
winner (`Candidate.ramp` = f < 1) sits out with probability 1 - f, leaving the
request to the other of the pair. A ramping backend thus takes f of the requests it
would take at full weight, whatever its latency (a fresh, idle backend would
otherwise win most comparisons). Drawing by the ramped weight as well would count
the factor twice.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence
from typing import ClassVar

from zonegate.balance._common import WeightedSampler, configured, ramps, usable
from zonegate.balance.base import IDLE_HALF_LIFE, Candidate, Loads, PickContext

__all__ = ["DEFAULT_LATENCY", "LeastLoadPicker"]

DEFAULT_LATENCY = 0.001
"""Latency (seconds) assumed for every backend while none has a sample."""


class LeastLoadPicker:
    """Power of two choices on EWMA latency x (in-flight + 1) (config name "least_load").

    Args:
        candidates: eligible backends; weight <= 0 means never picked.
        loads: in-flight counts and latency EWMAs, read on every pick.
        rng: the only source of randomness.
        balance_factor: unused.

    Raises:
        ValueError: see `usable` (non-finite weight, negative or repeated index).
    """

    name: ClassVar[str] = "least_load"

    __slots__ = (
        "_cum",
        "_indexes",
        "_last",
        "_loads",
        "_ramp",
        "_random",
        "_rng",
        "_sampler",
        "_total",
    )

    def __init__(
        self,
        candidates: Sequence[Candidate],
        loads: Loads,
        rng: random.Random,
        *,
        balance_factor: float = 1.25,
    ) -> None:
        self._indexes, weights = usable(candidates)
        ramp = ramps(candidates, self._indexes)
        # Ramp of each backend index that ramps (the winner's is looked up by index).
        self._ramp = None if ramp is None else dict(zip(self._indexes, ramp, strict=True))
        self._loads = loads
        self._rng = rng
        self._random = rng.random
        self._sampler = WeightedSampler(configured(weights, ramp))
        self._cum = self._sampler.cum
        self._total = self._sampler.total
        self._last = self._sampler.last

    def pick(self, ctx: PickContext) -> int | None:
        """Return the cheaper of two random backends, never one in `ctx.exclude`.

        Returns None when there is no candidate or every candidate is excluded.
        """
        if ctx.exclude or self._last < 1:
            return self._pick_slow(ctx)
        indexes = self._indexes
        ka = bisect_right(self._cum, self._random() * self._total, 0, self._last)
        a = indexes[ka]
        b = indexes[self._sampler.draw_other(self._rng, ka)]
        return self._cheaper(a, b)

    def _cheaper(self, a: int, b: int) -> int:
        loads = self._loads
        latency = loads.latency
        inflight = loads.inflight
        la = latency[a]
        lb = latency[b]
        if la == 0.0 or lb == 0.0:
            default = self._default_latency()
            la = la or default
            lb = lb or default
        idle = loads.idle_for(a)
        if idle > IDLE_HALF_LIFE:
            la *= 0.5 ** (idle / IDLE_HALF_LIFE)
        idle = loads.idle_for(b)
        if idle > IDLE_HALF_LIFE:
            lb *= 0.5 ** (idle / IDLE_HALF_LIFE)
        if la * (inflight[a] + 1) > lb * (inflight[b] + 1):
            a, b = b, a
        ramp = self._ramp
        if ramp is not None:
            f = ramp[a]
            if f < 1.0 and self._random() >= f:
                return b  # the winner ramps and sits this one out
        return a

    def _default_latency(self) -> float:
        latency = self._loads.latency
        known = [x for x in map(latency.__getitem__, self._indexes) if x > 0.0]
        return sum(known) / len(known) if known else DEFAULT_LATENCY

    def _pick_slow(self, ctx: PickContext) -> int | None:
        if self._last < 0:
            return None
        sampler = self._sampler
        indexes = self._indexes
        exclude = ctx.exclude
        if not exclude:  # a single candidate
            return indexes[0]
        ka = sampler.draw_allowed(self._rng, indexes, exclude)
        if ka is None:
            return None
        a = indexes[ka]
        kb = sampler.draw_allowed(self._rng, indexes, {*exclude, a})
        if kb is None:
            return a
        return self._cheaper(a, indexes[kb])
