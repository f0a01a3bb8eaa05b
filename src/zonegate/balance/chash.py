"""Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam, 2016).

Theory of operation: each candidate owns points ("virtual nodes") on a ring of
64-bit integers; a key goes to the owner of the first point at or after the key's
hash, wrapping around. Removing a candidate hands only its own keys to the others;
adding one takes about 1/(n+1) of the keys.

Hash (fixed, documented, the same in every process and version; Python's `hash()`
is salted per process and would move every key on restart):

- key:   `int.from_bytes(blake2b(key, digest_size=8).digest(), "big")`
- point: the same over the UTF-8 bytes `f"{ident}-{replica}"`, replica = 0, 1, ...,
  where ident is the candidate's `key` (the backend name or address, so reordering or
  inserting backends in the file moves no key) or, when empty, its index

Points per candidate: `POINTS_PER_WEIGHT` for the heaviest candidate, the others in
proportion to their weight (at least 1), scaled down so the ring holds at most
`MAX_POINTS`. Scaling by the heaviest rather than the mean keeps the other
candidates' points unchanged when a lighter one is removed, added or ramps up
through slow start, so only its own keys move.

Bounded loads (HAProxy's `hash-balance-factor`): with T requests in flight over the
candidates, candidate i accepts one more only while
`inflight[i] + 1 <= ceil(balance_factor * (T + 1) * weight[i] / total_weight)`;
with equal weights that is the paper's `ceil(c * (T + 1) / n)`. A candidate over
its bound is skipped and the walk goes on clockwise, as are excluded candidates.
Some candidate is always under its bound (one has at most its weighted share of
T); if only excluded ones are, the walk ignores the bound and takes the first
allowed candidate on the ring.

A pick is one blake2b, one bisect and, while no candidate is near its bound, one
comparison: O(log ring). A missing key (`hash_key` None) gets a weighted random
pick.

Slow start: the ring is built on configured weights (`weight / ramp`), so a ramp
moves no ring point. A ramping candidate (`Candidate.ramp` = f < 1) takes a key of
its arcs only if the key's admission value `u(key) < f`, where
`u(key) = int.from_bytes(blake2b(key, digest_size=8, person=b"zonegate-ramp").digest(),
"big") / 2**64`; other keys walk on clockwise as if it were over its bound. Keys stay
sticky during the ramp: as f grows, keys only move onto the returning backend, never
back and forth, and it serves f of the keys it owns (f times its full share). Its
load bound uses the ramped weight.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections.abc import Sequence
from hashlib import blake2b
from typing import ClassVar

from zonegate.balance._common import WeightedSampler, configured, ramps, usable
from zonegate.balance.base import Candidate, Loads, PickContext

__all__ = ["MAX_POINTS", "POINTS_PER_WEIGHT", "ConsistentHashPicker", "admission", "hash64"]

POINTS_PER_WEIGHT = 256
"""Ring points of the heaviest candidate: shares at equal weights within ~15% of 1/n."""

MAX_POINTS = 10_000
"""Ring size cap: keeps a rebuild around 10 ms."""


def hash64(data: bytes) -> int:
    """Return the fixed 64-bit hash of `data` used for keys and ring points."""
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


_points: dict[str, list[int]] = {}
"""Ring points of each backend identity, replica by replica, computed once per process.

A pure function's memo: the points depend only on the identity, so pools share them,
and a rebuild (slow start rebuilds often) costs a sort instead of 10k hashes.
At most MAX_POINTS per identity, for identities the process has seen.
"""


def admission(key: bytes) -> float:
    """Return the fixed value in [0, 1) a ramping candidate compares with its factor."""
    return int.from_bytes(blake2b(key, digest_size=8, person=b"zonegate-ramp").digest(), "big") / (
        1 << 64
    )


def _points_of(ident: str, count: int) -> list[int]:
    points = _points.setdefault(ident, [])
    for r in range(len(points), count):
        points.append(hash64(f"{ident}-{r}".encode()))
    return points


def _ring(
    indexes: Sequence[int], idents: Sequence[str], weights: Sequence[float]
) -> tuple[list[int], list[int]]:
    """Build the sorted ring points and the backend index owning each."""
    heaviest = max(weights)
    scale = min(POINTS_PER_WEIGHT / heaviest, MAX_POINTS / sum(weights))
    # Sort (point, index) packed into one int: ints sort several times faster than
    # tuples. Ties (never seen in practice) break by index, deterministically.
    shift = max(indexes).bit_length()
    mask = (1 << shift) - 1
    packed: list[int] = []
    for index, ident, w in zip(indexes, idents, weights, strict=True):
        count = max(1, round(w * scale))
        packed.extend([(p << shift) | index for p in _points_of(ident, count)[:count]])
    packed.sort()
    return [v >> shift for v in packed], [v & mask for v in packed]


class ConsistentHashPicker:
    """Consistent hash ring with bounded loads (config name "hash").

    Args:
        candidates: eligible backends; weight <= 0 means never picked.
        loads: in-flight counts, read for the load bound.
        rng: used only when a request has no hash key.
        balance_factor: c >= 1 in the bound above; larger is stickier.

    Raises:
        ValueError: balance_factor < 1, or see `usable` (non-finite weight,
            negative or repeated index).
    """

    name: ClassVar[str] = "hash"

    __slots__ = (
        "_factor",
        "_indexes",
        "_last",
        "_loads",
        "_owners",
        "_ramp",
        "_ring",
        "_rng",
        "_sampler",
        "_whole",
    )

    def __init__(
        self,
        candidates: Sequence[Candidate],
        loads: Loads,
        rng: random.Random,
        *,
        balance_factor: float = 1.25,
    ) -> None:
        if not balance_factor >= 1.0:
            raise ValueError(f"balance_factor must be >= 1, got {balance_factor!r}")
        self._indexes, weights = usable(candidates)
        ramp = ramps(candidates, self._indexes)
        self._ramp = (
            None
            if ramp is None
            else {i: f for i, f in zip(self._indexes, ramp, strict=True) if f < 1.0}
        )
        self._loads = loads
        self._rng = rng
        self._sampler = WeightedSampler(weights)
        self._ring: list[int] = []
        self._owners: list[int] = []
        # _factor[index] * (T + 1) is the index's bound before ceil, shaved by 1e-9
        # so that float rounding never lets a backend past an exact integer bound.
        self._factor: list[float] = []
        if weights:
            keys = {c.index: c.key or str(c.index) for c in candidates}
            idents = [keys[i] for i in self._indexes]
            self._ring, self._owners = _ring(self._indexes, idents, configured(weights, ramp))
            total = sum(weights)
            self._factor = [0.0] * (max(self._indexes) + 1)
            for index, w in zip(self._indexes, weights, strict=True):
                self._factor[index] = balance_factor * w / total * (1.0 - 1e-9)
        self._last = len(self._ring)
        # When the candidates are the whole pool, T is a plain sum() of the list.
        self._whole = sorted(self._indexes) == list(range(len(loads.inflight)))

    def pick(self, ctx: PickContext) -> int | None:
        """Return the backend for `ctx.hash_key`, never one in `ctx.exclude`.

        Returns None when there is no candidate or every candidate is excluded.
        """
        key = ctx.hash_key
        if key is None:
            return self._pick_random(ctx)
        if ctx.exclude or not self._last:
            return self._pick_slow(key, ctx.exclude)
        i = bisect_left(self._ring, int.from_bytes(blake2b(key, digest_size=8).digest(), "big"))
        owner = self._owners[0 if i == self._last else i]
        inflight = self._loads.inflight
        total = sum(inflight) if self._whole else sum(map(inflight.__getitem__, self._indexes))
        # inflight + 1 <= ceil(x)  <=>  inflight < x, for an integer inflight.
        if inflight[owner] < self._factor[owner] * (total + 1):
            ramp = self._ramp
            if ramp is None or owner not in ramp or admission(key) < ramp[owner]:
                return owner
        return self._pick_slow(key, ctx.exclude)

    def _in_flight(self) -> int:
        inflight = self._loads.inflight
        if self._whole:
            return sum(inflight)
        return sum(map(inflight.__getitem__, self._indexes))

    def _pick_slow(self, key: bytes, exclude: frozenset[int] | set[int]) -> int | None:
        if not self._last:
            return None
        inflight = self._loads.inflight
        factor = self._factor
        room = self._in_flight() + 1
        allowed = [i for i in self._indexes if i not in exclude]
        if not allowed:
            return None
        skip: set[int] | frozenset[int] = exclude
        ramp = self._ramp
        if ramp is not None:
            u = admission(key)
            refused = {i for i in allowed if u >= ramp.get(i, 1.0)}
            if len(refused) < len(allowed):  # if all refuse the key, ramps are ignored
                allowed = [i for i in allowed if i not in refused]
                skip = {*exclude, *refused}
        # If no allowed candidate is under its bound, ignore the bound.
        bounded = any(inflight[i] < factor[i] * room for i in allowed)
        ring, owners, last = self._ring, self._owners, self._last
        j = bisect_left(ring, hash64(key))
        # Terminates: an acceptable owner exists and every candidate has a point.
        while True:
            if j == last:
                j = 0
            owner = owners[j]
            if owner not in skip and (not bounded or inflight[owner] < factor[owner] * room):
                return owner
            j += 1

    def _pick_random(self, ctx: PickContext) -> int | None:
        if not self._last:
            return None
        if ctx.exclude:
            k = self._sampler.draw_allowed(self._rng, self._indexes, ctx.exclude)
            return None if k is None else self._indexes[k]
        return self._indexes[self._sampler.draw(self._rng)]
