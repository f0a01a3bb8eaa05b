"""The L4 TCP proxy: a listener with `protocol: tcp` splices each connection to a backend.

Same pools, pickers, health, spill and passive reports as the L7 proxy; no parsing.
A connection picks a backend when it is accepted (reading from the client is paused
until the upstream is connected), retries the connect on other backends of the pool
(and then its backup) up to `retries` times, then copies bytes both ways with flow
control. A half-close on one side is passed on to the other. The listener's
`client_idle` closes a connection silent in both directions for that long.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from zonegate.lb.pools import PoolRuntime
    from zonegate.lb.worker import ListenerRuntime, Worker

log = logging.getLogger("zonegate.lb")

INF = float("inf")
WRITE_HIGH = 256 * 1024


class TcpConnection(asyncio.Protocol):
    """One client connection of a tcp listener and its upstream."""

    def __init__(self, worker: Worker, listener: ListenerRuntime) -> None:
        self.worker = worker
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.upstream: _Upstream | None = None
        self.pool: PoolRuntime | None = None
        self.index = -1
        self.tried: dict[str, set[int]] = {}
        self.retries_left = 0
        self.deadline = INF
        self.closing = False
        self.pending: list[bytes] = []
        self.peer_ip = b"-"
        self.eof_from: set[str] = set()
        """Sides ("client", "upstream") that sent EOF; when both have, it is done."""
        # The worker's drain treats a connection with an exchange as busy.
        self.exchange: object | None = self
        self.queue: tuple[()] = ()

    # client side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t = cast("asyncio.Transport", transport)
        self.transport = t
        t.set_write_buffer_limits(high=WRITE_HIGH)
        peer = t.get_extra_info("peername")
        if peer:
            self.peer_ip = peer[0].encode()
        w = self.worker
        w.connections.add(self)
        if len(w.connections) > self.listener.cfg.limits.max_connections:
            t.abort()
            return
        t.pause_reading()
        log.debug("tcp %s: connection from %s", self.listener.name, self.peer_ip.decode())
        route = self.listener.cfg.routes[0]
        home = w.pools.get(route.pool)
        if home is None:
            t.abort()
            return
        self.retries_left = home.cfg.retries
        self._connect_next(home)

    def data_received(self, data: bytes) -> None:
        self._touch()
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.write(data)
        else:
            self.pending.append(data)

    def eof_received(self) -> bool:
        up = self.upstream
        if up is None or up.transport is None:
            # EOF before the upstream is connected: pass it on once it is.
            if not self.pending or self.pending[-1] != b"":
                self.pending.append(b"")
            return True
        return self.half_closed("client", up.transport)

    def half_closed(self, side: str, other: asyncio.Transport) -> bool:
        """`side` sent EOF: pass it on to `other`; when both sides have, close both."""
        if side in self.eof_from:
            return True
        self.eof_from.add(side)
        if len(self.eof_from) < 2 and other.can_write_eof():
            other.write_eof()
            return True
        self.closing = True
        other.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.worker.connections.discard(self)
        up = self.upstream
        self.upstream = None
        if up is not None and up.transport is not None:
            up.transport.close()
        self._done()

    def pause_writing(self) -> None:
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.resume_reading()

    def on_deadline(self, now: float) -> None:
        log.info("closing idle tcp connection from %s", self.peer_ip.decode())
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    # upstream side

    def _touch(self) -> None:
        self.deadline = self.worker.now + self.listener.idle_timeout

    def _connect_next(self, home: PoolRuntime) -> None:
        from zonegate.lb.pools import choose_backend

        sel = choose_backend(home, None, self.peer_ip, self.tried)
        if sel is None:
            log.warning("tcp %s: no backend available in pool %s", self.listener.name, home.name)
            home.stats.errors["no_backend"] += 1
            if self.transport is not None:
                self.transport.abort()
            return
        pool, idx = sel
        self.pool = pool
        self.index = idx
        pool.loads.start(idx)
        pool.inflight += 1
        pool.stats.errors["tcp_accepted"] += 1
        self.worker.spawn(self._connect(home, pool, idx))

    async def _connect(self, home: PoolRuntime, pool: PoolRuntime, idx: int) -> None:
        addr = pool.backends[idx].address
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(pool.cfg.timeouts.connect):
                _, up = await loop.create_connection(lambda: _Upstream(self), addr.host, addr.port)
        except (OSError, TimeoutError) as e:
            kind = "connect_timeout" if isinstance(e, TimeoutError) else "connect_failed"
            pool.stats.errors[kind] += 1
            pool.loads.done(idx, None, self.worker.now)
            pool.inflight -= 1
            self.pool = None
            self.worker.passive(pool, idx, ok=False, reason=f"{kind}: {e}")
            if self.closing:
                return
            self.tried.setdefault(pool.name, set()).add(idx)
            if self.retries_left > 0:
                self.retries_left -= 1
                pool.stats.errors["retried"] += 1
                self._connect_next(home)
            elif self.transport is not None:
                log.warning("tcp %s: %s to %s, giving up", self.listener.name, kind, addr)
                self.transport.abort()
            return
        if pool.fail_streak[idx]:
            self.worker.passive(pool, idx, ok=True, reason="")
        if self.closing:
            if up.transport is not None:
                up.transport.close()
            return
        self.upstream = up
        log.debug("tcp %s: %s spliced to %s", self.listener.name, self.peer_ip.decode(), addr)
        if self.pending and up.transport is not None:
            eof = self.pending[-1] == b""
            up.transport.write(b"".join(self.pending))
            self.pending = []
            if eof:
                self.half_closed("client", up.transport)
        self._touch()
        if self.transport is not None:
            self.transport.resume_reading()

    def _done(self) -> None:
        pool = self.pool
        if pool is not None:
            self.pool = None
            pool.loads.done(self.index, None, self.worker.now)
            pool.inflight -= 1


class _Upstream(asyncio.Protocol):
    def __init__(self, client: TcpConnection) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t = cast("asyncio.Transport", transport)
        self.transport = t
        t.set_write_buffer_limits(high=WRITE_HIGH)

    def data_received(self, data: bytes) -> None:
        c = self.client
        c._touch()
        if c.transport is not None:
            c.transport.write(data)

    def eof_received(self) -> bool:
        t = self.client.transport
        if t is None:
            return False
        return self.client.half_closed("upstream", t)

    def connection_lost(self, exc: Exception | None) -> None:
        c = self.client
        if c.upstream is self:
            c.upstream = None
            if c.transport is not None:
                c.transport.close()

    def pause_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.resume_reading()
