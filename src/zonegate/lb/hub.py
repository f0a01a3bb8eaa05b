"""The health hub: the one place a `zonegate lb` decides backend health.

One hub per `zonegate lb` process group. It runs the active checks, receives the
passive observations of every worker, runs the pure state machines (health/machine.py)
and the spill plan (lb/router.py), and publishes one `PoolState` per pool to every
worker whenever it changes. Workers never decide health on their own, so all workers
of one LB agree: with `--workers N` they receive the same states over their channel
within a millisecond of each other.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from zonegate.health.machine import AdminState, Ejected, EjectionBlocked, PoolHealth, Transition
from zonegate.health.probes import ActiveChecker
from zonegate.lb.pools import PoolState
from zonegate.lb.router import PoolPlan, plan_pool
from zonegate.lb.stats import STATUS_CLASSES
from zonegate.lb.worker import zone_pools
from zonegate.topology.schema import Pool
from zonegate.topology.snapshot import Snapshot

log = logging.getLogger("zonegate.health")

TICK = 0.25
"""Longest time between two re-evaluations of time-driven changes; the hub also wakes at
the health machines' deadlines (an ejection ends, a slow-start ramp steps)."""

Subscriber = Callable[[dict[str, PoolState]], None]


class HealthHub:
    """Owns the health of every pool a zone's LB uses."""

    def __init__(
        self, snapshot: Snapshot, zone: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.clock = clock
        self.zone = zone
        self.snapshot = snapshot
        self.pools: dict[str, Pool] = {}
        self.healths: dict[str, PoolHealth] = {}
        self.plans: dict[str, PoolPlan] = {}
        self.states: dict[str, PoolState] = {}
        self.subscribers: list[Subscriber] = []
        self._set(snapshot, previous={})
        self.checker = ActiveChecker(self.pools, self.healths, self._on_transition, now=clock)
        self._ticker: asyncio.Task[None] | None = None
        self._starting = False
        self.control_version = 0
        self._blocked_logged: set[tuple[str, str]] = set()

    def _set(self, snapshot: Snapshot, previous: dict[str, PoolHealth]) -> None:
        topo = snapshot.topology
        now = self.clock()
        self.pools = {n: topo.pools[n] for n in zone_pools(topo, self.zone)}
        healths = {}
        for name, pool in self.pools.items():
            old = previous.get(name)
            healths[name] = old.carry_over(pool, now) if old is not None else PoolHealth(pool, now)
        self.healths = healths

    async def start(self) -> None:
        """Probe every backend once, publish, then keep checking."""
        self._starting = True
        try:
            await self.checker.first_round()
        finally:
            self._starting = False
        self.publish()
        self.checker.start()
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        await self.checker.stop()

    async def reload(self, snapshot: Snapshot) -> None:
        """Follow a new topology, keeping the health of backends that stay."""
        self.snapshot = snapshot
        self._set(snapshot, previous=self.healths)
        self.checker.update(self.pools, self.healths)
        self.publish()

    async def _tick(self) -> None:
        # Wake at the machines' next deadline (an ejection ends, a ramp steps), and at
        # least every TICK; a transition in between publishes on its own.
        while True:
            now = self.clock()
            nxt = min(
                (d for h in self.healths.values() if (d := h.deadline()) is not None),
                default=now + TICK,
            )
            await asyncio.sleep(min(TICK, max(0.005, nxt - now)))
            self.publish()

    # inputs

    def _on_transition(self, pool: str, index: int, tr: Transition) -> None:
        backend = self.pools[pool].backends[index].id
        level = logging.INFO if self._starting else logging.WARNING
        log.log(
            level, "backend %s/%s %s -> %s: %s", pool, backend, tr.old.name, tr.new.name, tr.reason
        )
        if not self._starting:
            self.publish()

    def record_passive(self, pool: str, index: int, backend_id: str, ok: bool, reason: str) -> None:
        """A worker saw a request succeed after failures, or fail."""
        health = self.healths.get(pool)
        if (
            health is None
            or index >= len(health)
            or self.pools[pool].backends[index].id != backend_id
        ):
            return  # reported against an older config
        result = health.record_passive(index, ok, self.clock(), reason)
        if isinstance(result, Ejected):
            log.warning(
                "backend %s/%s ejected for %.1fs (ejection %d in a row): %s",
                pool,
                backend_id,
                result.until - self.clock(),
                result.count,
                result.reason,
            )
            self.publish()
        elif isinstance(result, EjectionBlocked):
            key = (pool, backend_id)
            if key not in self._blocked_logged:  # once per streak, not once per request
                self._blocked_logged.add(key)
                log.warning("backend %s/%s not ejected: %s", pool, backend_id, result.reason)
        elif ok:
            self._blocked_logged.discard((pool, backend_id))

    @property
    def version(self) -> int:
        """The config version in force: the control plane's when following one."""
        return self.control_version or self.snapshot.version

    def apply_control(self, version: int, backends: Mapping[str, str]) -> None:
        """Follow a control-plane version: its admin state of every backend we serve.

        Args:
            version: the control plane's version.
            backends: admin state by `"{pool}/{backend_id}"`; backends not listed keep
                theirs.
        """
        self.control_version = version
        changed = False
        for name, pool in self.pools.items():
            health = self.healths[name]
            for i, b in enumerate(pool.backends):
                want = backends.get(f"{name}/{b.id}")
                if want is not None and health.targets[i].admin.value != want:
                    health.set_admin(i, AdminState(want))
                    log.warning(
                        "backend %s/%s admin state -> %s (control version %d)",
                        name,
                        b.id,
                        want,
                        version,
                    )
                    changed = True
        if changed:
            self.publish()

    def set_admin(self, pool: str, backend_id: str, state: str) -> bool:
        """Drain, disable or enable a backend at runtime; False if there is no such backend."""
        health = self.healths.get(pool)
        if health is None:
            return False
        for i, b in enumerate(self.pools[pool].backends):
            if b.id == backend_id:
                health.set_admin(i, AdminState(state))
                log.warning("backend %s/%s admin state -> %s", pool, backend_id, state)
                self.publish()
                return True
        return False

    # outputs

    def compute(self, now: float) -> dict[str, PoolState]:
        """The state of every pool at `now` (pure given the health machines)."""
        shares = {name: h.healthy_share(now) for name, h in self.healths.items()}
        states: dict[str, PoolState] = {}
        for name, health in self.healths.items():
            pool = self.pools[name]
            backup_share = shares.get(pool.backup) if pool.backup else None
            if pool.backup and backup_share is None:
                backup_share = 0.0
            views = health.view(now)
            plan = plan_pool(
                shares[name],
                overprovisioning=pool.overprovisioning,
                panic_threshold=pool.panic_threshold,
                backup_share=backup_share,
                any_enabled=any(v.admin is AdminState.ENABLED for v in views),
                backup=pool.backup or "",
            )
            self.plans[name] = plan
            if plan.panic:
                weights = tuple(
                    float(pool.backends[v.index].weight) if v.admin is AdminState.ENABLED else 0.0
                    for v in views
                )
            else:
                weights = tuple(round(v.weight, 2) if v.available else 0.0 for v in views)
            states[name] = PoolState(weights, plan.local_share, plan.panic, plan.reason)
        return states

    def publish(self) -> None:
        states = self.compute(self.clock())
        if states == self.states:
            return
        for name, st in states.items():
            old = self.states.get(name)
            if old is None or old.panic != st.panic or old.local_share != st.local_share:
                log.info("pool %s: %s", name, st.reason)
        self.states = states
        for sub in self.subscribers:
            sub(states)

    def subscribe(self, sub: Subscriber) -> None:
        self.subscribers.append(sub)
        if self.states:
            sub(self.states)

    def status(self, stats: dict[str, Any] | None = None) -> dict[str, Any]:
        """The /status document: pools, backends, health, weights, load."""
        # Publish first: what is reported as available is what the workers pick from,
        # even when a time-driven change (an ejection ending) is due but not yet ticked.
        self.publish()
        now = self.clock()
        pools_stats = (stats or {}).get("pools", {})
        out: dict[str, Any] = {"zone": self.zone, "version": self.version, "pools": {}}
        if self.control_version:
            out["file_version"] = self.snapshot.version
        for name, health in self.healths.items():
            pool = self.pools[name]
            st = self.states.get(name)
            ps = pools_stats.get(name, {})
            # Worker figures by backend id: a worker mid-reload may order them differently.
            inflight = dict(zip(ps.get("ids", ()), ps.get("inflight", ()), strict=False))
            responses = dict(zip(ps.get("ids", ()), ps.get("responses", ()), strict=False))
            backends = []
            for v in health.view(now):
                b = pool.backends[v.index]
                backends.append(
                    {
                        "id": v.id,
                        "address": str(b.address),
                        "health": v.state.name.lower(),
                        "available": v.available,
                        "admin": v.admin.value,
                        "weight": b.weight,
                        "effective_weight": st.weights[v.index] if st else 0.0,
                        "ejected_for": round(v.ejected_until - now, 3) if v.ejected_until else 0.0,
                        "reason": v.reason,
                        "inflight": inflight.get(v.id, 0),
                        "responses": dict(
                            zip(STATUS_CLASSES, responses.get(v.id, [0] * 5), strict=True)
                        ),
                    }
                )
            out["pools"][name] = {
                "zone": pool.zone,
                "balance": pool.balance,
                "backup": pool.backup,
                "healthy": sum(1 for b in backends if b["available"]),
                "total": len(backends),
                "healthy_share": round(health.healthy_share(now), 4),
                "local_share": st.local_share if st else 1.0,
                "panic": st.panic if st else False,
                "plan": st.reason if st else "",
                "capacity": pool.capacity,
                "inflight": sum(b["inflight"] for b in backends),
                "responses": ps.get("latency_count", 0),
                "backends": backends,
            }
        return out
