"""One proxy worker: listeners, pools, upstream connection pools, the deadline sweeper.

A worker serves traffic. It does not decide health: it follows `PoolState`s published
by the health hub (lb/hub.py) and reports passive observations (failures, and the
first success after failures) back to it through a `HubLink`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
from collections.abc import Coroutine
from typing import Any, Protocol

from zonegate.lb.pools import PoolRuntime, PoolState, link_backups
from zonegate.lb.proxy import ClientConnection, UpstreamPool
from zonegate.lb.router import RouteTable
from zonegate.lb.tcp import TcpConnection
from zonegate.topology.schema import Listener, Topology
from zonegate.topology.snapshot import Snapshot

log = logging.getLogger("zonegate.lb")

SWEEP_INTERVAL = 0.1
VIA = b"1.1 zonegate"


class ListenError(OSError):
    """A listener or the admin endpoint cannot bind its address (taken, not local...)."""

    def __init__(self, what: str, address: str, cause: OSError) -> None:
        reason = os.strerror(cause.errno) if cause.errno else str(cause)
        super().__init__(cause.errno, f"cannot listen on {address} ({what}): {reason}")


class HubLink(Protocol):
    """How a worker talks to the health hub."""

    def report_passive(
        self, pool: str, index: int, backend_id: str, ok: bool, reason: str
    ) -> None: ...


def zone_listeners(topo: Topology, zone: str) -> dict[str, Listener]:
    """The listeners (http and tcp) a `zonegate lb --zone ZONE` serves."""
    return {n: lst for n, lst in topo.listeners.items() if lst.zone == zone}


def zone_pools(topo: Topology, zone: str) -> list[str]:
    """Pools this zone's LB needs: those its listeners route to, and their backups."""
    names: set[str] = set()
    for lst in topo.listeners.values():
        if lst.zone == zone:
            names.update(r.pool for r in lst.routes)
    for name in list(names):
        backup = topo.pools[name].backup if name in topo.pools else None
        if backup:
            names.add(backup)
    return sorted(n for n in names if n in topo.pools)


class ListenerRuntime:
    """A listener's settings as connections read them; updated in place on reload."""

    __slots__ = (
        "cfg",
        "extra_headers",
        "extra_raw",
        "forwarded",
        "header_timeout",
        "idle_timeout",
        "name",
        "proto",
        "routes",
        "total_timeout",
        "via",
    )

    def __init__(self, name: str, cfg: Listener, version: int) -> None:
        self.name = name
        self.proto = b"http"
        self.via = VIA
        self.update(cfg, version)

    def update(self, cfg: Listener, version: int) -> None:
        self.cfg = cfg
        self.routes = RouteTable(cfg.routes)
        self.forwarded = cfg.forwarded_headers
        self.header_timeout = cfg.timeouts.header
        self.idle_timeout = cfg.timeouts.client_idle
        self.total_timeout = cfg.timeouts.total
        self.extra_headers: list[tuple[bytes, bytes]] = []
        if cfg.version_header:
            self.extra_headers.append((cfg.version_header.encode(), str(version).encode()))
        # The same fields, serialized, for the responses the proxy writes itself.
        self.extra_raw = b"".join(b"%s: %s\r\n" % kv for kv in self.extra_headers)


class Worker:
    """Serves the listeners (L7 http and L4 tcp) of one zone."""

    def __init__(
        self, snapshot: Snapshot, zone: str, link: HubLink, *, reuse_port: bool = False
    ) -> None:
        self.snapshot = snapshot
        self.zone = zone
        self.link = link
        self.reuse_port = reuse_port
        self.rng = random.Random()
        self.now = 0.0
        self.pools: dict[str, PoolRuntime] = {}
        self.listeners: dict[str, ListenerRuntime] = {}
        self.servers: dict[str, asyncio.Server] = {}
        self.upstreams: dict[tuple[str, int], UpstreamPool] = {}
        self.connections: set[ClientConnection] = set()
        self.busy: set[Any] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.client_errors: dict[str, int] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.control_version = 0
        self._build_pools(snapshot.topology, previous={})

    @property
    def version(self) -> int:
        """The config version stamped on responses: the control plane's when following
        one (`--control`), else the topology file's."""
        return self.control_version or self.snapshot.version

    def set_control_version(self, version: int) -> None:
        """Follow a new control-plane version: stamp it on every response from now on."""
        self.control_version = version
        for lr in self.listeners.values():
            lr.update(lr.cfg, version)

    # setup and reload

    def _build_pools(self, topo: Topology, previous: dict[str, PoolRuntime]) -> None:
        pools = {}
        for name in zone_pools(topo, self.zone):
            pools[name] = PoolRuntime(name, topo.pools[name], self.rng, previous.get(name))
        link_backups(pools)
        self.pools = pools

    async def start(self) -> None:
        """Bind every listener of the zone and start the sweeper."""
        loop = asyncio.get_running_loop()
        self.now = loop.time()
        for name, cfg in zone_listeners(self.snapshot.topology, self.zone).items():
            lr = ListenerRuntime(name, cfg, self.version)
            self.listeners[name] = lr
            self.servers[name] = await self._bind(lr)
        self._sweeper = loop.create_task(self._sweep())

    async def _bind(self, lr: ListenerRuntime) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        bind = lr.cfg.bind
        factory: Any = ClientConnection if lr.cfg.protocol == "http" else TcpConnection
        try:
            server = await loop.create_server(
                lambda: factory(self, lr),
                bind.host,
                bind.port,
                reuse_address=True,
                reuse_port=self.reuse_port or None,
                backlog=4096,
            )
        except OSError as e:
            raise ListenError(f"listener {lr.name}", str(bind), e) from e
        log.info("listener %s on %s", lr.name, bind)
        return server

    async def reload(self, snapshot: Snapshot, states: dict[str, PoolState]) -> None:
        """Swap to a new topology; in-flight exchanges finish on the objects they hold."""
        topo = snapshot.topology
        self.snapshot = snapshot
        self._build_pools(topo, previous=self.pools)
        self.apply_states(states)
        wanted = zone_listeners(topo, self.zone)
        for name in list(self.listeners):
            old = self.listeners[name]
            if name not in wanted or wanted[name].bind != old.cfg.bind:
                self.servers.pop(name).close()
                del self.listeners[name]
        for name, cfg in wanted.items():
            if name in self.listeners:
                self.listeners[name].update(cfg, self.version)
            else:
                lr = ListenerRuntime(name, cfg, self.version)
                try:
                    self.servers[name] = await self._bind(lr)
                except ListenError as e:
                    log.error("reload: %s; the other listeners keep serving", e.strerror)
                    continue
                self.listeners[name] = lr
        # Upstream pools of backends that left are closed once idle.
        keep = {(b.address.host, b.address.port) for p in self.pools.values() for b in p.backends}
        for key in [k for k in self.upstreams if k not in keep]:
            self.upstreams.pop(key).close_all()

    def apply_states(self, states: dict[str, PoolState]) -> None:
        """Take the pool states the hub published."""
        for name, state in states.items():
            pool = self.pools.get(name)
            if pool is not None:
                pool.apply(state)

    # services used by the hot path

    def upstream_pool(self, pool: PoolRuntime, index: int) -> UpstreamPool:
        addr = pool.backends[index].address
        key = (addr.host, addr.port)
        up = self.upstreams.get(key)
        if up is None:
            up = UpstreamPool(
                self, addr.host, addr.port, pool.cfg.keepalive, pool.cfg.keepalive_timeout
            )
            self.upstreams[key] = up
        return up

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            from zonegate.errors import bug

            try:
                bug(f"worker task {task.get_coro()!r} failed", exc)
            except AssertionError:
                log.exception("worker task failed", exc_info=exc)

    def passive(self, pool: PoolRuntime, index: int, *, ok: bool, reason: str) -> None:
        """Report a passive observation (only failures and the first success after them)."""
        if ok:
            pool.fail_streak[index] = 0
        else:
            pool.fail_streak[index] += 1
        self.link.report_passive(pool.name, index, pool.ids[index], ok, reason)

    def count_client_error(self, kind: str) -> None:
        self.client_errors[kind] = self.client_errors.get(kind, 0) + 1

    # timers

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = self.now = loop.time()
            try:
                for c in [c for c in self.connections if c.deadline < now]:
                    c.on_deadline(now)
                for u in [u for u in self.busy if u.deadline < now]:
                    u.on_deadline(now)
                for up in self.upstreams.values():
                    up.expire(now)
            except Exception as e:  # one bad connection must not stop the sweeper
                from zonegate.errors import bug

                bug("sweeper failed", e)

    # stats and shutdown

    def stats_snapshot(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "pools": {
                name: {
                    "ids": list(p.ids),
                    "inflight": list(p.loads.inflight),
                    "latency_ewma": list(p.loads.latency),
                    **p.stats.snapshot(),
                }
                for name, p in self.pools.items()
            },
            "client_errors": dict(self.client_errors),
            "connections": len(self.connections),
        }

    def active_exchanges(self) -> int:
        return sum(1 for c in self.connections if c.exchange is not None)

    async def stop(self, drain_timeout: float) -> None:
        """Stop accepting, let in-flight exchanges finish (up to drain_timeout), close."""
        for server in self.servers.values():
            server.close()
        loop = asyncio.get_running_loop()
        end = loop.time() + drain_timeout
        while True:
            for c in list(self.connections):
                if c.exchange is None and not c.queue and c.transport is not None:
                    c.closing = True
                    c.transport.close()
            if not self.connections or loop.time() >= end:
                break
            await asyncio.sleep(0.05)
        for c in list(self.connections):
            if c.transport is not None:
                c.transport.abort()
        for up in self.upstreams.values():
            up.close_all()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for t in list(self.tasks):
            t.cancel()


def set_reuseport_guard(host: str, port: int) -> socket.socket:
    """Bind (without listening) to fail early when another program holds the port.

    With SO_REUSEPORT the workers' sockets would otherwise silently share a port with
    any other SO_REUSEPORT listener of the same user.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        s.bind((host, port))
    except OSError:
        s.close()
        raise
    return s
