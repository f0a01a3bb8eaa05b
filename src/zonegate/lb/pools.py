"""A pool as one worker sees it: backends, current candidate weights, picker, loads.

Health is decided elsewhere (the health hub, one per `zonegate lb`, see lb/hub.py);
the worker receives a `PoolState` whenever it changes and rebuilds its picker.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from urllib.parse import parse_qsl

from zonegate.balance import make_picker
from zonegate.balance.base import Candidate, ForwardedLoads, Loads, PickContext, Picker
from zonegate.lb.http1 import RequestHead
from zonegate.lb.stats import ForwardedStats, PoolStats
from zonegate.topology.schema import Pool


@dataclass(frozen=True, slots=True)
class PoolState:
    """What the health hub publishes about one pool.

    weights: the candidate weight of each backend (by index); 0 means not eligible.
    In panic mode the hub has already put every enabled backend back in.
    """

    weights: tuple[float, ...]
    local_share: float = 1.0
    panic: bool = False
    reason: str = ""


class PoolRuntime:
    """One pool in one worker."""

    __slots__ = (
        "_busy",
        "backends",
        "backup",
        "capacity",
        "cfg",
        "fail_streak",
        "hash_key",
        "ids",
        "loads",
        "name",
        "picker",
        "rng",
        "state",
        "stats",
    )

    def __init__(
        self, name: str, cfg: Pool, rng: random.Random, previous: PoolRuntime | None = None
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.backends = list(cfg.backends)
        self.ids = [b.id for b in self.backends]
        self.rng = rng
        self.capacity = cfg.capacity
        self.hash_key = cfg.hash_key
        self.backup: PoolRuntime | None = None
        n = len(self.backends)
        self.loads = Loads.for_pool(n)
        self.stats = PoolStats(n)
        self.fail_streak = [0] * n
        self._busy = [0]
        if previous is not None:
            self._carry_over(previous)
        initial = tuple(float(b.weight) if b.state == "enabled" else 0.0 for b in self.backends)
        self.state = PoolState(initial)
        self.picker: Picker = self._build_picker()

    @property
    def inflight(self) -> int:
        """Requests (or TCP connections) in flight in this pool, every generation."""
        return self._busy[0]

    @inflight.setter
    def inflight(self, value: int) -> None:
        self._busy[0] = value

    def _carry_over(self, previous: PoolRuntime) -> None:
        """Continue `previous`, the generation of this pool a reload replaces.

        Counters, in-flight counts and latency carry over for every backend (by id)
        that stays, so Prometheus counters stay monotonic and least_conn or
        bounded-load hashing do not see busy backends as idle. Requests still in
        flight on `previous` end (and count) on this generation: its loads and stats
        forward here from now on.
        """
        where = {bid: i for i, bid in enumerate(self.ids)}
        remap = [where.get(bid, -1) for bid in previous.ids]
        self.loads.carry_over(previous.loads, remap)
        self.stats.carry_over(previous.stats, remap)
        for i, j in enumerate(remap):
            if j >= 0:
                self.fail_streak[j] = previous.fail_streak[i]
        self._busy = previous._busy
        previous.loads = ForwardedLoads(previous.loads, lambda: self.loads, remap)
        previous.stats = ForwardedStats(previous.stats, lambda: self.stats, remap)

    def _build_picker(self) -> Picker:
        ids = self.ids
        backends = self.backends
        cands = [
            Candidate(i, w, ids[i], _ramp(w, backends[i].weight))
            for i, w in enumerate(self.state.weights)
            if w > 0
        ]
        return make_picker(
            self.cfg.balance,
            cands,
            self.loads,
            self.rng,
            balance_factor=self.cfg.hash_balance_factor,
        )

    def apply(self, state: PoolState) -> None:
        """Take a new state from the hub."""
        if len(state.weights) != len(self.backends):
            return  # published for another generation of this pool; a fresh one follows
        changed = state.weights != self.state.weights
        self.state = state
        if changed:
            self.picker = self._build_picker()

    def eligible(self) -> bool:
        return any(w > 0 for w in self.state.weights)

    def over_capacity(self) -> bool:
        return self.capacity is not None and self.inflight >= self.capacity

    def pick(
        self, req: RequestHead | None, client_ip: bytes, exclude: set[int] | frozenset[int]
    ) -> int | None:
        """Choose a backend of this pool (no spill), or None."""
        key = self.key_for(req, client_ip) if self.cfg.balance == "hash" else None
        return self.picker.pick(PickContext(key, exclude))

    def key_for(self, req: RequestHead | None, client_ip: bytes) -> bytes | None:
        """The consistent-hash key of a request (None: no key, pick at random)."""
        kind = self.hash_key.kind
        if kind == "client_ip" or req is None:
            return client_ip
        name = self.hash_key.name
        if kind == "header":
            return req.header(name.encode())
        if kind == "cookie":
            for k, v in req.headers:
                if k.lower() == b"cookie":
                    for part in v.split(b";"):
                        cname, _, cval = part.strip().partition(b"=")
                        if cname.decode("latin-1") == name:
                            return cval
            return None
        q = req.target.find(b"?")
        if q < 0:
            return None
        for k, v in parse_qsl(req.target[q + 1 :].decode("latin-1"), keep_blank_values=True):
            if k == name:
                return v.encode("latin-1")
        return None


def _ramp(effective: float, configured: float) -> float:
    """The slow-start factor behind an effective weight (1.0 when not ramping)."""
    return min(1.0, effective / configured) if configured > 0 else 1.0


def link_backups(pools: dict[str, PoolRuntime]) -> None:
    """Point each pool at its backup's runtime."""
    for p in pools.values():
        p.backup = pools.get(p.cfg.backup) if p.cfg.backup else None


RETRY_BACKUP_AFTER = 2
"""Once this many backends of the home pool failed one request, its next try goes to
the backup pool: when a whole pool dies, retries must not all land on dead backends
before health checks notice."""

_EMPTY: frozenset[int] = frozenset()


def choose_backend(
    home: PoolRuntime,
    req: RequestHead | None,
    peer_ip: bytes,
    tried: dict[str, set[int]] | None,
) -> tuple[PoolRuntime, int] | None:
    """Pick the pool (home or its backup) and backend for one attempt.

    Spills to the backup by the hub's local share, when the home pool is over
    capacity, or after RETRY_BACKUP_AFTER failed tries at home; falls back to the other
    pool when the chosen one has no candidate left. None: nothing can take it.
    """
    target = home
    backup = home.backup
    if backup is not None:
        share = home.state.local_share
        spill = share < 1.0 and (share <= 0.0 or home.rng.random() >= share)
        if (
            spill
            or (home.over_capacity() and not backup.over_capacity())
            or (tried and len(tried.get(home.name, _EMPTY)) >= RETRY_BACKUP_AFTER)
        ):
            target = backup
    idx = target.pick(req, peer_ip, tried.get(target.name, _EMPTY) if tried else _EMPTY)
    if idx is None:
        other = backup if target is home else home
        if other is None:
            return None
        idx = other.pick(req, peer_ip, tried.get(other.name, _EMPTY) if tried else _EMPTY)
        if idx is None:
            return None
        target = other
    if target is not home:
        home.stats.errors["spilled"] += 1
    return target, idx
