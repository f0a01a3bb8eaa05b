"""Routing and spill decisions of the L7 proxy (pure).

Routes: a request goes to the pool of the first route whose host matches (exact
name first, then the longest '*.suffix', then host-less routes) and whose path
prefix is the longest that matches (plain prefix, as nginx's `location /x`).

Spill, per pool, recomputed whenever health changes (Envoy's priority levels with an
overprovisioning factor, plus panic mode)::

    healthy share h = available weight / configured weight of enabled backends
    local share     = min(1, h x overprovisioning)
                        ┌────────────────────────────── backup can take load? ──┐
                        │ yes                                          no       │
    h >= panic          │ local share stays, 1 - local share spills    local 1  │
    h <  panic          │ same (the backup is better than panic)       PANIC    │
                        └───────────────────────────────────────────────────────┘

In PANIC every enabled backend of the pool is a candidate whatever its health, so a
health check that fails everywhere at once (a bad check, not a dead pool) cannot
empty the pool. A spilled request is served by the backup pool's own backends; it
never spills a second hop, so two pools may back each other up.
"""

from __future__ import annotations

from dataclasses import dataclass

from zonegate.topology.schema import Route


@dataclass(frozen=True, slots=True)
class PoolPlan:
    """How a pool's requests are split between its own backends and its backup."""

    local_share: float
    """Share of requests served locally (1.0 = no spill, 0.0 = all to the backup)."""
    panic: bool
    """Use every enabled backend regardless of health."""
    reason: str


def plan_pool(
    healthy_share: float,
    *,
    overprovisioning: float,
    panic_threshold: float,
    backup_share: float | None,
    any_enabled: bool = True,
    backup: str = "",
) -> PoolPlan:
    """Decide the local/backup split of a pool.

    Args:
        healthy_share: available weight / configured weight of the pool, in [0, 1].
        overprovisioning: Envoy's factor (>= 1): 1.4 keeps all traffic local down to ~71%.
        panic_threshold: below this share, with no usable backup, panic.
        backup_share: the backup pool's healthy share, or None when there is no backup.
        any_enabled: False when every backend is drained or disabled. That is an
            operator's choice, not an outage: the backup takes everything if it can,
            and the pool never panics (panic could only pick enabled backends anyway).
        backup: the backup pool's name, for the reason.

    The reason says why no backup helps: "no backup configured", or "backup pool B
    has no healthy backend" (configured, but down).
    """
    if not 0.0 <= healthy_share <= 1.0:
        raise ValueError(f"healthy_share {healthy_share} not in [0, 1]")
    local = min(1.0, healthy_share * overprovisioning)
    backup_usable = backup_share is not None and backup_share > 0.0
    if backup_share is None:
        no_backup = "no backup configured"
    else:
        no_backup = f"backup pool {backup or '(unnamed)'} has no healthy backend"
    if not any_enabled:
        if backup_usable:
            return PoolPlan(0.0, False, "no enabled backend -> all to backup")
        return PoolPlan(1.0, False, f"no enabled backend, {no_backup}")
    if local >= 1.0:
        return PoolPlan(1.0, False, f"healthy {healthy_share:.0%}")
    if backup_usable:
        spill = f"spill {1 - local:.0%} to backup"
        return PoolPlan(
            local, False, f"healthy {healthy_share:.0%} x {overprovisioning:g} -> {spill}"
        )
    if healthy_share < panic_threshold:
        return PoolPlan(
            1.0, True, f"PANIC: healthy {healthy_share:.0%} < {panic_threshold:.0%}, {no_backup}"
        )
    return PoolPlan(1.0, False, f"healthy {healthy_share:.0%}, {no_backup}")


class RouteTable:
    """The routes of one listener, indexed for matching."""

    def __init__(self, routes: list[Route]) -> None:
        self._exact: dict[str, list[tuple[bytes, str]]] = {}
        self._wild: list[tuple[str, list[tuple[bytes, str]]]] = []
        self._any: list[tuple[bytes, str]] = []
        wild: dict[str, list[tuple[bytes, str]]] = {}
        for r in routes:
            entry = (r.path_prefix.encode(), r.pool)
            if r.host is None:
                self._any.append(entry)
            elif r.host.startswith("*."):
                wild.setdefault(r.host[1:].lower(), []).append(entry)
            else:
                self._exact.setdefault(r.host.lower().rstrip("."), []).append(entry)
        for table in (*self._exact.values(), *wild.values(), self._any):
            table.sort(key=lambda e: -len(e[0]))
        self._wild = sorted(wild.items(), key=lambda kv: -len(kv[0]))
        self.pools = sorted({r.pool for r in routes})

    def match(self, host: str, path: bytes) -> str | None:
        """The pool for a request, or None when no route matches."""
        table = self._exact.get(host)
        if table is not None:
            for prefix, pool in table:
                if path.startswith(prefix):
                    return pool
        for suffix, table in self._wild:
            if host.endswith(suffix):
                for prefix, pool in table:
                    if path.startswith(prefix):
                        return pool
        for prefix, pool in self._any:
            if path.startswith(prefix):
                return pool
        return None
