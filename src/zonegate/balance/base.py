"""What every picker shares: the candidates it chooses from, the live loads, the context.

A pool's runtime builds a picker from the *eligible* backends (healthy, enabled, not
ejected) and their effective weights, and rebuilds it when that set or a weight
changes. Pickers never see health; they see candidates. In-flight counts and latency
live in `Loads`, which outlives pickers, so a rebuild forgets nothing.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

EWMA_DECAY = 10.0
"""Time constant (seconds) of the latency EWMA used by least_load."""

IDLE_HALF_LIFE = 1.0
"""Seconds of idleness that halve a backend's remembered latency (Finagle's peak EWMA
decays between observations), so one slow sample cannot keep a backend out forever."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A backend a picker may choose: its index in the pool and its effective weight.

    `key` is a stable identity (the backend's name or address) for pickers whose
    choices must survive a reordering of the pool, such as consistent hashing;
    empty means the index.

    `ramp` is the slow-start factor in (0, 1] (1.0: not ramping). `weight` already
    includes it (configured weight x ramp): pickers that share by weight (random,
    weighted, hash) need nothing more. Pickers that do not (round_robin, least_conn,
    least_load) work on the configured weight (`weight / ramp`) and let a ramping
    candidate sit out a pick with probability `1 - ramp` (see each module).
    """

    index: int
    weight: float
    key: str = ""
    ramp: float = 1.0


@dataclass(slots=True)
class Loads:
    """Live per-backend load of one pool, indexed by backend index."""

    inflight: list[int]
    latency: list[float]
    """EWMA of response latency in seconds (0.0 until the first sample)."""
    _stamp: list[float] = field(default_factory=list)
    now: float = 0.0
    """The latest time seen by `done()`: the pool's clock, as far as pickers know."""

    def idle_for(self, index: int) -> float:
        """Seconds since `index` last answered, on the pool's clock (0 if it never did)."""
        stamp = self._stamp[index]
        return self.now - stamp if stamp else 0.0

    @classmethod
    def for_pool(cls, size: int) -> Loads:
        return cls([0] * size, [0.0] * size, [0.0] * size)

    def carry_over(self, old: Loads, remap: Sequence[int]) -> None:
        """Take the live load of the backends a reload kept.

        Args:
            old: the previous generation's loads.
            remap: for each index of `old`, the backend's index here (-1: it left).
        """
        for i, j in enumerate(remap):
            if j >= 0:
                self.inflight[j] = old.inflight[i]
                self.latency[j] = old.latency[i]
                self._stamp[j] = old._stamp[i]
        self.now = max(self.now, old.now)

    def start(self, index: int) -> None:
        self.inflight[index] += 1

    def done(self, index: int, latency: float | None, now: float) -> None:
        """A request to `index` ended; `latency` is None when it failed before answering."""
        self.inflight[index] -= 1
        if now > self.now:
            self.now = now
        if latency is None:
            return
        old = self.latency[index]
        if old == 0.0:
            self.latency[index] = latency
        else:
            # Time-decayed EWMA (as Finagle's peak-EWMA): recent samples weigh more.
            elapsed = max(now - self._stamp[index], 0.0)
            if elapsed > IDLE_HALF_LIFE:
                old *= 0.5 ** (elapsed / IDLE_HALF_LIFE)
            w = pow(2.718281828459045, -elapsed / EWMA_DECAY)
            self.latency[index] = old * w + latency * (1.0 - w)
        self._stamp[index] = now


class ForwardedLoads(Loads):
    """The loads of a pool generation a reload replaced: requests it still has in
    flight start and end on the live generation (through `target()`), so in-flight
    counts and latency stay right across a reload. Backends that left are dropped.

    Args:
        old: the replaced loads (kept readable for the old pickers, never updated).
        target: returns the live generation's loads (itself forwarded after another
            reload, so chains of reloads resolve).
        remap: for each index of `old`, the backend's index in the target (-1: left).
    """

    __slots__ = ("_remap", "_target")

    def __init__(self, old: Loads, target: Callable[[], Loads], remap: Sequence[int]) -> None:
        super().__init__(old.inflight, old.latency, old._stamp, old.now)
        self._target = target
        self._remap = list(remap)

    def start(self, index: int) -> None:
        j = self._remap[index]
        if j >= 0:
            self._target().start(j)

    def done(self, index: int, latency: float | None, now: float) -> None:
        j = self._remap[index]
        if j >= 0:
            self._target().done(j, latency, now)


@dataclass(slots=True)
class PickContext:
    """Per-request inputs of a pick.

    hash_key: bytes the hash picker hashes (None: fall back to a random pick).
    exclude: backend indexes already tried by this request (haproxy's srvtoavoid);
    a picker avoids them while any other candidate exists, and returns None
    only when every candidate is excluded.
    """

    hash_key: bytes | None = None
    exclude: frozenset[int] | set[int] = frozenset()


class Picker(Protocol):
    """One balancing algorithm over a fixed candidate list."""

    name: ClassVar[str]

    def pick(self, ctx: PickContext) -> int | None:
        """Return the chosen backend index, or None when no candidate is allowed."""
        ...


class PickerFactory(Protocol):
    def __call__(
        self,
        candidates: Sequence[Candidate],
        loads: Loads,
        rng: random.Random,
        *,
        balance_factor: float = ...,
    ) -> Picker: ...
