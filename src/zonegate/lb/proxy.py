"""The L7 proxy's hot path: client connections, exchanges, upstream connections.

Built on asyncio Protocols (uvloop in production) and httptools, with no streams and
no task per request: bytes arrive in `data_received`, the parsers call back, and the
proxy writes what it has to the other side once per read. Bodies are streamed chunk
by chunk in both directions with flow control (pause the reader when the writer's
buffer is high), never buffered whole.

One `Exchange` is one request/response. Its life::

    route -> select backend (spill, retries exclude tried ones) -> idle upstream or connect
      -> send head (+ body as it arrives) -> response head -> body -> done
                │ connect failed / reset before any response byte
                └─> passive failure; retry on another backend if allowed; else 502/504

Request framing is ours: llhttp checks one head at a time (fed exactly the head's
bytes), and the body is read by count (Content-Length) or by http1.ChunkedDecoder. So
the end of every request is known, and an upstream connection goes back to the idle
pool only when both its request and its response were complete.

An Upgrade request (WebSocket, h2c) is forwarded with its Upgrade field and body. A 101
from the backend turns the pair into a `Tunnel` (bytes both ways, half-closes passed
on); any other answer is a plain response, after which the client connection closes
(its bytes after the request belong to a protocol that was not agreed).

Timeouts are deadlines checked by the worker's sweeper every 100 ms, not timers per
request: the header timeout (slowloris), the client idle time, the upstream read time.
The upstream read time runs once the request is sent, or while the backend does not
take the body; never while the client is slow to send it (a client's fault is never
the backend's).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING, cast

import httptools

from zonegate.errors import HttpParseError
from zonegate.lb import http1
from zonegate.lb.http1 import (
    BODY_CHUNKED,
    BODY_NONE,
    BODY_UNTIL_CLOSE,
    RequestHead,
    build_request_head,
    build_response_head,
    check_request,
    check_response,
    simple_response,
)
from zonegate.lb.pools import choose_backend

if TYPE_CHECKING:
    from zonegate.lb.pools import PoolRuntime
    from zonegate.lb.worker import ListenerRuntime, Worker

log = logging.getLogger("zonegate.lb")

INF = float("inf")
REPLAY_LIMIT = 64 * 1024
"""Request body bytes kept for a retry; a longer body that was partly sent is not retried."""
PENDING_HIGH = 256 * 1024
"""Unsent request body bytes above which we stop reading the client."""
WRITE_HIGH = 256 * 1024
"""Backends of the home pool that failed one request before its retries go to the backup
pool: two failing at once point at the pool (a zone outage the health checks have not
seen yet), as haproxy's redispatch and Envoy's previous_priorities retry plugin do."""

# Client reading states
IDLE, HEAD, BODY = 0, 1, 2

# Reasons to pause reading from the client (bit flags)
P_PIPELINE, P_UPSTREAM, P_PENDING, P_REFUSED, P_UPGRADE = 1, 2, 4, 8, 16

_HELD_BY_UPSTREAM = P_UPSTREAM | P_PENDING

_CRLF = b"\r\n"
_HEAD_END = b"\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"


class _Reject(Exception):
    """Raised inside parser callbacks to stop parsing; the reason is on the connection."""


class ClientConnection(asyncio.Protocol):
    """One downstream (client) connection of an HTTP listener."""

    __slots__ = (
        "body_left",
        "chunks",
        "closing",
        "deadline",
        "early",
        "eof",
        "error",
        "exchange",
        "ext_method",
        "feeding",
        "head_raw",
        "head_tail",
        "header_bytes",
        "headers",
        "listener",
        "parser",
        "parser_fresh",
        "paused",
        "peer_ip",
        "queue",
        "reading",
        "refused",
        "start_buf",
        "stopped",
        "transport",
        "tunnel",
        "upgrading",
        "url",
        "worker",
        "write_paused",
    )

    def __init__(self, worker: Worker, listener: ListenerRuntime) -> None:
        self.worker = worker
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.parser = self._new_parser()
        self.parser_fresh = True
        self.reading = IDLE
        self.deadline = INF
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.head_raw = 0
        self.exchange: Exchange | None = None
        self.feeding: Exchange | None = None
        self.queue: deque[Exchange] = deque()
        self.paused = 0
        self.write_paused = False
        self.error: tuple[int, str] | None = None
        self.closing = False
        self.eof = False
        self.refused: tuple[int, str] | None = None
        self.peer_ip = b"-"
        self.body_left = 0
        """Content-Length bytes still to read of the request being read."""
        self.chunks: http1.ChunkedDecoder | None = None
        self.head_tail = b""
        """The last bytes (up to 3) of the head read so far: its end may straddle reads."""
        self.start_buf = b""
        """The first bytes of a request whose method is not complete yet."""
        self.ext_method: bytes | None = None
        """The real method of the request being read, when llhttp was given GET."""
        self.stopped = False
        """Nothing more is read as HTTP (after Connection: close, or an Upgrade)."""
        self.upgrading: Exchange | None = None
        """The Upgrade request waiting for its answer (101: tunnel; else close)."""
        self.early: list[bytes] = []
        self.tunnel: Tunnel | None = None

    def _new_parser(self) -> httptools.HttpRequestParser:
        parser = httptools.HttpRequestParser(self)
        # HTTP/1.2 and up are read as 1.1 (RFC 9110 §2.5); check_request answers 505
        # for other versions. No other leniency: llhttp stays strict.
        parser.set_dangerous_leniencies(lenient_version=True)
        return parser

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast("asyncio.Transport", transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_ip = peer[0].encode()
        w = self.worker
        w.connections.add(self)
        if len(w.connections) > self.listener.cfg.limits.max_connections:
            transport.abort()
            return
        self.deadline = w.now + self.listener.idle_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.worker.connections.discard(self)
        if self.tunnel is not None:
            self.tunnel.close()
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            ex.client_gone()
        for q in self.queue:
            q.client_gone()
        self.queue.clear()

    def pause_writing(self) -> None:
        # The client reads slower than the backend sends. The upstream read timeout
        # stops while we hold the backend back (the wait is not the backend's fault);
        # the client gets client_idle to read again, as when it stops sending.
        self.write_paused = True
        if self.tunnel is not None:
            self.tunnel.up.pause_reading()
            return
        deadline = self.worker.now + self.listener.idle_timeout
        if deadline < self.deadline:
            self.deadline = deadline
        ex = self.exchange
        if ex is not None and ex.up is not None:
            ex.up.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.tunnel is not None:
            self.tunnel.up.resume_reading()
            return
        if self.reading == IDLE:
            self.deadline = (
                INF if self.exchange is not None else self.worker.now + self.listener.idle_timeout
            )
        elif self.reading == BODY:
            self.deadline = self.worker.now + self.listener.idle_timeout
        ex = self.exchange
        if ex is not None and ex.up is not None:
            ex.up.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.from_client(data)
            return
        if self.closing or self.refused is not None:
            return
        if self.upgrading is not None:
            self._keep_early(data)
            return
        if self.stopped:
            return
        if self.start_buf:
            data = self.start_buf + data
            self.start_buf = b""
            self.reading = IDLE
        pos = 0
        end = len(data)
        try:
            while pos < end and not self.stopped and self.refused is None:
                if self.reading == BODY:
                    pos = self._read_body(data, pos)
                else:
                    pos = self._read_head(data, pos)
                    if self.reading == HEAD:
                        limits = self.listener.cfg.limits
                        if self.head_raw > limits.header_bytes + limits.request_line_bytes:
                            self._reject_now(431, "request header block too large")
                            return
        except (httptools.HttpParserCallbackError, httptools.HttpParserError) as e:
            self._parse_failed(e)
            return
        except HttpParseError as e:
            self.error = (e.hint, str(e))
            self._parse_failed(e)
            return
        if self.upgrading is not None and pos < end:
            self._keep_early(data[pos:])
        ex = self.exchange
        if ex is not None:
            ex.flush_upstream()

    def _read_head(self, data: bytes, pos: int) -> int:
        """Feed llhttp the head bytes in data[pos:], and no byte after the head."""
        end = len(data)
        piece_start = pos
        prefix = b""
        if self.reading == IDLE:
            if not self.parser_fresh:
                self.parser = self._new_parser()
                self.parser_fresh = True
            self.head_raw = 0
            self.head_tail = b""
            self.ext_method = None
            sp = data.find(b" ", pos, pos + http1.MAX_METHOD + 1)
            if sp < 0:
                if end - pos <= http1.MAX_METHOD and http1.is_token(data[pos:]):
                    # The method may go on in the next read: a head has begun (the
                    # header timeout runs), llhttp sees it once its end is known.
                    self.start_buf = data[pos:]
                    self.reading = HEAD
                    self.deadline = self.worker.now + self.listener.header_timeout
                    return end
            else:
                method = data[pos:sp]
                if method not in http1.LLHTTP_METHODS and http1.is_token(method):
                    # llhttp knows a fixed list of methods; any token is one (RFC 9110
                    # §9.1). llhttp gets GET, which it frames like any other method.
                    self.ext_method = method
                    prefix = http1.METHOD_PLACEHOLDER
                    piece_start = sp
        tail = self.head_tail
        stop = data.find(_HEAD_END, pos)
        if tail:
            # The end of the head may straddle the previous read and this one.
            j = (tail + data[pos : pos + 3]).find(_HEAD_END)
            if j >= 0:
                stop = pos + j + 4 - len(tail)
            elif stop >= 0:
                stop += 4
        elif stop >= 0:
            stop += 4
        if stop < 0:
            stop = end
            self.head_tail = (tail + data[pos:])[-3:]
        piece = data[piece_start:stop]
        self.head_raw += stop - pos
        try:
            self.parser.feed_data(prefix + piece if prefix else piece)
        except httptools.HttpParserUpgrade:
            # The head ended (on_headers_complete ran); the body is ours to read.
            self.parser_fresh = False
        return stop

    def _read_body(self, data: bytes, pos: int) -> int:
        ex = self.feeding
        self.deadline = self.worker.now + self.listener.idle_timeout
        chunks = self.chunks
        if chunks is None:
            take = min(len(data) - pos, self.body_left)
            if ex is not None:
                ex.client_body(data if pos == 0 and take == len(data) else data[pos : pos + take])
            self.body_left -= take
            pos += take
            if not self.body_left:
                self._message_done()
            return pos
        parts, pos = chunks.feed(data, pos)
        if ex is not None:
            for part in parts:
                ex.client_body(part)
        if chunks.done:
            self.chunks = None
            self._message_done()
        return pos

    def _keep_early(self, data: bytes) -> None:
        """Client bytes after an Upgrade request, kept for the tunnel until the answer.

        Reading pauses at once, so this holds one read at most.
        """
        self.early.append(data)
        self.pause(P_UPGRADE)

    def eof_received(self) -> bool:
        if self.tunnel is not None:
            return self.tunnel.eof("client")
        # A half-closed client may still read the response of a request it finished.
        self.eof = True
        return self.exchange is not None and (
            self.reading == IDLE or self.refused is not None or self.stopped
        )

    # parser callbacks

    def on_message_begin(self) -> None:
        self.reading = HEAD
        self.url = b""
        self.headers = []
        self.header_bytes = 0
        self.deadline = self.worker.now + self.listener.header_timeout

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.listener.cfg.limits.request_line_bytes:
            self.error = (414, "request target too long")
            raise _Reject

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > self.listener.cfg.limits.header_bytes:
            self.error = (431, "request header block too large")
            raise _Reject

    def on_headers_complete(self) -> None:
        p = self.parser
        method = self.ext_method or p.get_method()
        try:
            req = check_request(
                method, self.url, p.get_http_version(), self.headers, p.should_keep_alive()
            )
        except HttpParseError as e:
            self.error = (e.hint, str(e))
            raise _Reject from None
        self.head_raw = 0
        if req.body == BODY_NONE:
            self.reading = IDLE
            self.deadline = INF
        else:
            self.reading = BODY
            self.deadline = self.worker.now + self.listener.idle_timeout
            # llhttp would read the body next: a fresh parser takes the next head.
            self.parser_fresh = False
            if req.body == BODY_CHUNKED:
                limits = self.listener.cfg.limits
                self.chunks = http1.ChunkedDecoder(max_trailers=limits.header_bytes)
            else:
                self.body_left = req.content_length
        if req.upgrade is not None or not req.keep_alive:
            # Nothing after this request is read as HTTP: after an Upgrade it belongs
            # to the new protocol (or to nobody, if the backend declines).
            req.keep_alive = False
        ex = Exchange(self, req)
        if req.body != BODY_NONE:
            self.feeding = ex
        if self.exchange is None:
            self.exchange = ex
            ex.start()
        else:
            self.queue.append(ex)
            self.pause(P_PIPELINE)
        if req.body == BODY_NONE:
            self._message_done(ex)

    def _message_done(self, ex: Exchange | None = None) -> None:
        """The request being read is complete (head and body)."""
        fed = self.feeding
        if fed is not None:
            self.feeding = None
            fed.client_body_done()
            ex = fed
        self.reading = IDLE
        if self.exchange is not None:
            self.deadline = INF
        if ex is not None and not ex.req.keep_alive:
            self.stopped = True
            if ex.req.upgrade is not None and not ex.finished:
                self.upgrading = ex

    # helpers

    def pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason
        if reason & _HELD_BY_UPSTREAM and self.reading == BODY and not self.write_paused:
            # We stopped reading the body because the backend is slow to take it: the
            # client's body timer stops (the upstream read timeout still runs).
            self.deadline = INF

    def resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and self.transport is not None and not self.closing:
                self.transport.resume_reading()
                if self.reading == BODY and not self.write_paused:
                    self.deadline = self.worker.now + self.listener.idle_timeout

    def _parse_failed(self, e: Exception) -> None:
        status, msg = self.error or (400, str(e) or "malformed request")
        if isinstance(e, httptools.HttpParserError) and self.error is None:
            status = http1.parser_error_status(str(e))
            msg = f"malformed request: {e}"
        self.worker.count_client_error("client_bad_request")
        self._reject_now(status, msg)

    def _reject_now(self, status: int, msg: str) -> None:
        """Refuse what the client sent last: `status`, then close.

        Complete requests read before the bad bytes are still answered, in order, and
        the error goes out after their responses: a pipelining client must not take the
        400 for the answer to an earlier, valid request. Nothing after the bad bytes is
        parsed. A request whose body was being read when it went wrong is abandoned.
        """
        log.info("%d %s client=%s", status, msg, self.peer_ip.decode())
        self.refused = (status, msg)
        self.deadline = INF
        self.pause(P_REFUSED)
        bad = self.feeding
        if bad is not None:
            self.feeding = None
            if bad is self.exchange:
                if bad.response_started:
                    # Answered before its body was complete (so not kept alive): let the
                    # response finish, then close without the error.
                    bad.keep_alive = False
                    self.refused = None
                    return
                self.exchange = None
                bad.client_gone()
            else:
                if bad in self.queue:
                    self.queue.remove(bad)
                bad.client_gone()
        if self.exchange is None:
            self._send_refusal()

    def _send_refusal(self) -> None:
        refused = self.refused
        self.closing = True
        t = self.transport
        if t is not None:
            if refused is not None:
                t.write(
                    simple_response(
                        refused[0], refused[1], close=True, extra=self.listener.extra_raw
                    )
                )
            t.close()

    def on_deadline(self, now: float) -> None:
        """Called by the sweeper when `deadline` has passed."""
        if self.transport is None:
            return
        if self.write_paused and self.tunnel is None:
            # Not reading what we send: the client's fault, never the backend's (the
            # exchange ends with client_gone, which blames nobody).
            self.worker.count_client_error("client_write_timeout")
            log.info("closing client %s: not reading the response", self.peer_ip.decode())
            self.closing = True
            self.transport.abort()
        elif self.reading == HEAD:
            self.worker.count_client_error("client_header_timeout")
            self._reject_now(408, "timed out reading the request head")
        elif self.reading == BODY:
            # Client's fault: the exchange ends with client_gone, which blames nobody.
            self.worker.count_client_error("client_body_timeout")
            log.info("closing client %s: request body stalled", self.peer_ip.decode())
            self.closing = True
            self.transport.abort()
        elif self.tunnel is not None:
            log.info("closing tunnel of client %s: idle", self.peer_ip.decode())
            self.tunnel.close()
        else:
            self.closing = True
            self.transport.close()

    def exchange_done(self, ex: Exchange, keep_alive: bool) -> None:
        """An exchange finished writing its response."""
        if self.exchange is not ex:
            return
        self.exchange = None
        if self.upgrading is ex:
            self.upgrading = None
            self.early.clear()
        t = self.transport
        if t is None or self.closing:
            return
        self.resume(P_UPSTREAM | P_PENDING)
        if self.refused is not None and not self.queue:
            if keep_alive:
                self._send_refusal()
            else:
                self.closing = True
                t.close()
            return
        if not keep_alive or (self.eof and not self.queue):
            self.closing = True
            t.close()
            return
        if self.queue:
            nxt = self.queue.popleft()
            self.exchange = nxt
            if not self.queue:
                self.resume(P_PIPELINE)
            # Not from inside the previous exchange's parser callbacks.
            asyncio.get_running_loop().call_soon(nxt.start)
            return
        self.resume(P_PIPELINE)
        if self.reading == IDLE:
            self.deadline = self.worker.now + self.listener.idle_timeout

    def send_error(self, status: int, msg: str, keep_alive: bool) -> None:
        t = self.transport
        if t is not None and not self.closing:
            t.write(
                simple_response(status, msg, close=not keep_alive, extra=self.listener.extra_raw)
            )


class Exchange:
    """One request and its response, from routing to the last response byte."""

    __slots__ = (
        "body_done",
        "chunk_out",
        "client",
        "connecting",
        "expires",
        "finished",
        "head",
        "home",
        "index",
        "interim",
        "keep_alive",
        "out",
        "pending",
        "pending_size",
        "pool",
        "replay",
        "replay_size",
        "req",
        "resp",
        "response_started",
        "retries_left",
        "sent_body",
        "switching",
        "t0",
        "tried",
        "up",
        "upstream_reusable",
    )

    def __init__(self, client: ClientConnection, req: RequestHead) -> None:
        self.client = client
        self.req = req
        self.home: PoolRuntime | None = None
        self.pool: PoolRuntime | None = None
        self.index = -1
        self.up: UpstreamConnection | None = None
        self.connecting = False
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.replay: list[bytes] | None = [] if req.body != BODY_NONE else None
        self.replay_size = 0
        self.sent_body = 0
        self.body_done = req.body == BODY_NONE
        self.response_started = False
        self.finished = False
        self.interim = False
        self.switching = False
        """The backend's 101 is being read: a tunnel follows its head."""
        self.chunk_out = False
        self.keep_alive = req.keep_alive
        self.upstream_reusable = True
        self.out: list[bytes] = []
        self.tried: dict[str, set[int]] | None = None
        self.retries_left = 0
        self.head = b""
        self.resp: http1.ResponseHead | None = None
        self.t0 = 0.0
        self.expires = INF
        """When the listener's total timeout ends this exchange (INF: no cap)."""

    # request side

    def start(self) -> None:
        """Route the request and send it to a backend."""
        if self.finished:
            return
        self.t0 = perf_counter()
        client = self.client
        lst = client.listener
        if lst.total_timeout is not None:
            self.expires = client.worker.now + lst.total_timeout
        req = self.req
        pool_name = lst.routes.match(req.host, req.path)
        worker = client.worker
        home = worker.pools.get(pool_name) if pool_name is not None else None
        if home is None:
            worker.count_client_error("no_route")
            self.fail_early(
                404, f"no route for host {req.host!r} path {req.path.decode('latin-1')!r}"
            )
            return
        self.home = home
        self.retries_left = home.cfg.retries
        self.head = build_request_head(
            req, client_ip=client.peer_ip, proto=lst.proto, forwarded=lst.forwarded, via=lst.via
        )
        self._dispatch()

    def _select(self) -> tuple[PoolRuntime, int] | None:
        home = self.home
        assert home is not None
        return choose_backend(home, self.req, self.client.peer_ip, self.tried)

    def _dispatch(self, sel: tuple[PoolRuntime, int] | None = None) -> None:
        if sel is None:
            sel = self._select()
        if sel is None:
            home = self.home
            assert home is not None
            home.stats.errors["no_backend"] += 1
            msg = f"no backend available in pool {home.name}"
            if home.backup is not None:
                msg += f" or its backup {home.backup.name}"
            self.fail_early(503, msg)
            return
        pool, idx = sel
        self.pool = pool
        self.index = idx
        pool.loads.start(idx)
        pool.inflight += 1
        upool = self.client.worker.upstream_pool(pool, idx)
        up = upool.pop_idle()
        if up is not None:
            self._attach(up)
        else:
            self.connecting = True
            self.client.worker.spawn(self._connect(upool))

    async def _connect(self, upool: UpstreamPool) -> None:
        pool = self.pool
        assert pool is not None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(pool.cfg.timeouts.connect):
                _, up = await loop.create_connection(
                    lambda: UpstreamConnection(upool), upool.host, upool.port
                )
        except TimeoutError:
            self.connecting = False
            if self.finished:
                return
            self._upstream_failed("connect_timeout", "connect timeout", nothing_sent=True)
            return
        except OSError as e:
            self.connecting = False
            if self.finished:
                return
            self._upstream_failed(
                "connect_failed", f"connect failed: {e.strerror or e}", nothing_sent=True
            )
            return
        self.connecting = False
        if self.finished:
            upool.release(up)
            return
        self._attach(up)

    def _attach(self, up: UpstreamConnection) -> None:
        self.up = up
        up.begin(self)
        out = self.pending
        if out:
            up.transport.write(self.head + b"".join(out))  # type: ignore[union-attr]
            self.sent_body += self.pending_size
            self.pending = []
            self.pending_size = 0
            self.client.resume(P_PENDING)
        else:
            up.transport.write(self.head)  # type: ignore[union-attr]

    def client_body(self, chunk: bytes) -> None:
        if self.finished:
            return
        chunked = self.req.body == BODY_CHUNKED
        framed = b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk
        replay = self.replay
        if replay is not None:
            self.replay_size += len(framed)
            if self.replay_size > REPLAY_LIMIT:
                self.replay = None
            else:
                replay.append(framed)
        up = self.up
        if up is not None:
            up.out.append(framed)
            self.sent_body += len(framed)
        else:
            self.pending.append(framed)
            self.pending_size += len(framed)
            if self.pending_size > PENDING_HIGH:
                self.client.pause(P_PENDING)

    def client_body_done(self) -> None:
        if self.req.body == BODY_CHUNKED:
            self.client_body_raw(_LAST_CHUNK)
        self.body_done = True
        up = self.up
        if up is not None and not up.closed:
            up.start_read_timer()

    def client_body_raw(self, data: bytes) -> None:
        replay = self.replay
        if replay is not None:
            replay.append(data)
            self.replay_size += len(data)
        up = self.up
        if up is not None:
            up.out.append(data)
            self.sent_body += len(data)
        else:
            self.pending.append(data)
            self.pending_size += len(data)

    def flush_upstream(self) -> None:
        """Write what the client side queued for the upstream during one read."""
        up = self.up
        if up is not None and up.out:
            data = b"".join(up.out)
            up.out.clear()
            if up.transport is not None and not up.closed:
                up.transport.write(data)

    # response side

    def on_response_head(
        self, status: int, reason: bytes, raw: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None:
        if status == 101 and self.req.upgrade is not None:
            if self.body_done:
                self.interim = False
                self.switching = True
                self.response_started = True
                self.out.append(
                    http1.build_switch_head(reason, raw, extra=self.client.listener.extra_headers)
                )
                return
            # Switching before the request body is complete: the bytes after the head
            # would be neither body nor tunnel for sure.
            self.upstream_error("bad_response", "101 before the request body was complete")
            return
        if 100 <= status < 200:
            self.interim = True
            if status == 100 and self.req.expect_continue:
                self.out.append(b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        self.interim = False
        resp = check_response(status, raw, request_method=self.req.method, keep_alive=keep_alive)
        self.resp = resp
        if not self.body_done:
            # The backend answered before the request body was complete: the upstream
            # connection is out of step and the client's remaining body is dropped.
            self.upstream_reusable = False
            self.keep_alive = False
        lst = self.client.listener
        head, self.chunk_out = build_response_head(
            resp,
            reason,
            client_keep_alive=self.keep_alive,
            http10_client=self.req.http10,
            extra=lst.extra_headers,
        )
        if resp.body in (BODY_UNTIL_CLOSE,) and self.req.http10:
            self.keep_alive = False
        self.response_started = True
        self.out.append(head)

    def on_response_body(self, chunk: bytes) -> None:
        if self.chunk_out:
            self.out.append(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        else:
            self.out.append(chunk)

    def on_response_complete(self) -> None:
        if self.switching:
            return  # the 101 head: the tunnel starts where llhttp stops
        if self.interim:
            self.interim = False
            return
        if self.chunk_out:
            self.out.append(_LAST_CHUNK)
        self.flush_client()
        self._finish(self.resp.status if self.resp else 502, reusable=self.upstream_reusable)

    def switch_protocols(self, up: UpstreamConnection, rest: bytes) -> None:
        """The backend answered 101: account for the exchange, start the tunnel.

        `rest` is what the backend sent after its 101 head.
        """
        client = self.client
        self.flush_client()
        self.up = None
        up.exchange = None
        up.deadline = INF
        client.worker.busy.discard(up)
        self._account(101)
        self.finished = True
        client.exchange = None
        client.upgrading = None
        early = b"".join(client.early)
        client.early.clear()
        tunnel = Tunnel(client, up)
        tunnel.start(early, rest)

    def flush_client(self) -> None:
        out = self.out
        if out:
            t = self.client.transport
            if t is not None and not self.client.closing:
                t.write(b"".join(out) if len(out) > 1 else out[0])
            out.clear()

    def _account(self, status: int) -> None:
        """Stats, loads and passive health for a response the backend gave."""
        pool = self.pool
        if pool is None:
            return
        worker = self.client.worker
        latency = perf_counter() - self.t0
        idx = self.index
        pool.loads.done(idx, latency, worker.now)
        pool.inflight -= 1
        pool.stats.record(idx, status, latency)
        if status >= 500 and pool.cfg.health.passive.consecutive_5xx:
            worker.passive(pool, idx, ok=False, reason=f"status {status}")
        elif pool.fail_streak[idx]:
            worker.passive(pool, idx, ok=True, reason="")

    def _finish(self, status: int, *, reusable: bool) -> None:
        if self.finished:
            return
        self.finished = True
        up = self.up
        self.up = None
        self._account(status)
        if up is not None:
            resp = self.resp
            if reusable and self.body_done and resp is not None and resp.upstream_keep_alive:
                up.upool.release(up)
            else:
                up.close()
        self.client.exchange_done(self, self.keep_alive)

    # failures

    def fail_early(self, status: int, msg: str) -> None:
        """Answer an error of ours before anything was forwarded."""
        host = self.req.host or "-"
        log.warning(
            "%d %s method=%s host=%s path=%s client=%s",
            status,
            msg,
            self.req.method.decode(),
            host,
            self.req.path.decode("latin-1"),
            self.client.peer_ip.decode(),
        )
        self.finished = True
        keep = self.keep_alive and self.body_done
        self.keep_alive = keep
        self.client.send_error(status, msg, keep)
        self.client.exchange_done(self, keep)

    def _upstream_failed(self, kind: str, reason: str, *, nothing_sent: bool) -> None:
        """Connect failure, reset or EOF before any response byte."""
        pool = self.pool
        assert pool is not None
        idx = self.index
        worker = self.client.worker
        pool.stats.errors[kind] += 1
        pool.loads.done(idx, None, worker.now)
        pool.inflight -= 1
        self.up = None
        bid = pool.ids[idx]
        worker.passive(pool, idx, ok=False, reason=reason)
        if self.finished:
            return
        can_replay = nothing_sent or self.sent_body == 0 or self.replay is not None
        allowed = nothing_sent or self.req.idempotent or self.sent_body == 0
        sel = None
        if self.retries_left > 0 and allowed and can_replay:
            if self.tried is None:
                self.tried = {}
            self.tried.setdefault(pool.name, set()).add(idx)
            # With no backend left to try, the answer is this failure, not a 503.
            sel = self._select()
        if sel is not None:
            self.retries_left -= 1
            pool.stats.errors["retried"] += 1
            if self.sent_body and self.replay is not None:
                self.pending = list(self.replay)
                self.pending_size = self.replay_size
            self.sent_body = 0
            # Per request, so DEBUG: the counters (zonegate_errors_total{kind="retried"})
            # and the hub's ejection lines tell the story at INFO.
            log.debug(
                "retrying %s after %s on %s/%s", self.req.method.decode(), reason, pool.name, bid
            )
            self._dispatch(sel)
            return
        status = 504 if kind in ("connect_timeout", "read_timeout") else 502
        self.finished = True
        pool.stats.record(idx, status, perf_counter() - self.t0)
        log.warning(
            "%d upstream %s pool=%s backend=%s method=%s path=%s client=%s",
            status,
            reason,
            pool.name,
            bid,
            self.req.method.decode(),
            self.req.path.decode("latin-1"),
            self.client.peer_ip.decode(),
        )
        keep = self.keep_alive and self.body_done
        self.keep_alive = keep
        self.client.send_error(status, f"upstream {reason}", keep)
        self.client.exchange_done(self, keep)

    def upstream_lost(self, exc: Exception | None) -> None:
        """The upstream connection closed under this exchange."""
        if self.finished:
            return
        resp = self.resp
        if (
            self.response_started
            and resp is not None
            and resp.body == BODY_UNTIL_CLOSE
            and exc is None
        ):
            self.on_response_complete()
            return
        if not self.response_started:
            self.up = None
            why = f"reset before response ({exc})" if exc else "closed before response"
            self._upstream_failed("reset_before_response", why, nothing_sent=False)
            return
        self._abort_midway("upstream closed mid-response")

    def upstream_error(self, kind: str, reason: str) -> None:
        """A bad response or a read timeout on the upstream connection."""
        if self.finished:
            return
        up = self.up
        if up is not None:
            self.up = None
            up.exchange = None
            up.close()
        if not self.response_started:
            pool = self.pool
            assert pool is not None
            if kind == "read_timeout":
                # The request reached the backend: retrying could run it twice.
                self.retries_left = 0
            self._upstream_failed(kind, reason, nothing_sent=False)
            return
        self._abort_midway(reason, kind)

    def expire(self) -> None:
        """The listener's total time for one exchange (`timeouts.total`) ran out.

        504 if the response has not started, else a cut connection. Not retried, and
        no backend is blamed: a slow client or a big body can take the time as well.
        """
        if self.finished:
            return
        up = self.up
        if up is not None:
            self.up = None
            up.exchange = None
            up.close()
        pool = self.pool
        if self.response_started:
            self._abort_midway("total timeout", "total_timeout", blame=False)
            return
        self.finished = True
        if pool is not None:
            pool.stats.errors["total_timeout"] += 1
            pool.loads.done(self.index, None, self.client.worker.now)
            pool.inflight -= 1
            pool.stats.record(self.index, 504, perf_counter() - self.t0)
        keep = self.keep_alive and self.body_done
        self.keep_alive = keep
        self.client.send_error(504, "exchange exceeded the listener's total timeout", keep)
        self.client.exchange_done(self, keep)

    def _abort_midway(self, reason: str, kind: str | None = None, *, blame: bool = True) -> None:
        """The response had started: the client can only see a cut connection."""
        pool = self.pool
        self.finished = True
        if pool is not None:
            pool.stats.errors["aborted_midway"] += 1
            if kind is not None:
                pool.stats.errors[kind] += 1
            pool.loads.done(self.index, None, self.client.worker.now)
            pool.inflight -= 1
            if blame:
                self.client.worker.passive(pool, self.index, ok=False, reason=reason)
            log.warning(
                "aborting response pool=%s backend=%s: %s", pool.name, pool.ids[self.index], reason
            )
        up = self.up
        self.up = None
        if up is not None:
            up.close()
        self.flush_client()
        client = self.client
        client.exchange = None
        client.closing = True
        if client.transport is not None:
            client.transport.abort()

    def client_gone(self) -> None:
        """The client closed or was cut while this exchange was open."""
        if self.finished:
            return
        self.finished = True
        pool = self.pool
        if pool is not None and self.index >= 0:
            pool.loads.done(self.index, None, self.client.worker.now)
            pool.inflight -= 1
        up = self.up
        self.up = None
        if up is not None:
            up.close()


class Tunnel:
    """Bytes both ways between a client and a backend after a 101 (RFC 9110 §7.8).

    Flow control as for bodies: a side whose buffer is full pauses reading the other.
    A half-close (FIN) is passed on; both closed, the tunnel ends; either connection
    lost, the other closes after what it has to send. `timeouts.client_idle` ends a
    tunnel silent in both directions. Nobody is blamed for how a tunnel ends.
    """

    __slots__ = ("client", "eof_from", "up")

    def __init__(self, client: ClientConnection, up: UpstreamConnection) -> None:
        self.client = client
        self.up = up
        self.eof_from: set[str] = set()

    def start(self, early: bytes, rest: bytes) -> None:
        client = self.client
        client.tunnel = self
        self.up.tunnel = self
        client.reading = IDLE
        self._touch()
        if rest:
            self.from_upstream(rest)
        if early:
            self.from_client(early)
        client.resume(P_UPGRADE)
        if client.eof:
            self.eof("client")

    def _touch(self) -> None:
        client = self.client
        client.deadline = client.worker.now + client.listener.idle_timeout

    def from_client(self, data: bytes) -> None:
        t = self.up.transport
        if t is not None and not self.up.closed:
            t.write(data)
            self._touch()

    def from_upstream(self, data: bytes) -> None:
        t = self.client.transport
        if t is not None and not self.client.closing:
            t.write(data)
            self._touch()

    def eof(self, side: str) -> bool:
        """One side sent FIN: pass it on; returns whether to keep the transport open."""
        self.eof_from.add(side)
        other = self.up.transport if side == "client" else self.client.transport
        if len(self.eof_from) == 2 or other is None or not other.can_write_eof():
            self.close()
            return False
        other.write_eof()
        return True

    def close(self) -> None:
        client = self.client
        up = self.up
        if not client.closing:
            client.closing = True
            if client.transport is not None:
                client.transport.close()
        up.close()


class UpstreamPool:
    """Idle keep-alive connections to one backend, most recently used first."""

    __slots__ = ("host", "idle", "idle_timeout", "max_idle", "port", "worker")

    def __init__(
        self, worker: Worker, host: str, port: int, max_idle: int, idle_timeout: float
    ) -> None:
        self.worker = worker
        self.host = host
        self.port = port
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.idle: list[UpstreamConnection] = []

    def pop_idle(self) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            up = idle.pop()
            if not up.closed:
                return up
        return None

    def release(self, up: UpstreamConnection) -> None:
        up.exchange = None
        up.deadline = INF
        if up.paused:
            up.resume_reading()
        self.worker.busy.discard(up)
        if up.closed or len(self.idle) >= self.max_idle:
            up.close()
            return
        up.idle_since = self.worker.now
        self.idle.append(up)

    def expire(self, now: float) -> None:
        idle = self.idle
        while idle and idle[0].idle_since + self.idle_timeout < now:
            idle.pop(0).close()

    def close_all(self) -> None:
        for up in self.idle:
            up.close()
        self.idle.clear()


class UpstreamConnection(asyncio.Protocol):
    """One connection to a backend, reused across exchanges (never two at a time)."""

    __slots__ = (
        "closed",
        "deadline",
        "exchange",
        "head_only",
        "headers",
        "idle_since",
        "out",
        "parser",
        "paused",
        "reason",
        "transport",
        "tunnel",
        "upool",
    )

    def __init__(self, upool: UpstreamPool) -> None:
        self.upool = upool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.reason = b""
        self.closed = False
        self.deadline = INF
        self.idle_since = 0.0
        self.head_only = False
        self.paused = False
        self.out: list[bytes] = []
        self.tunnel: Tunnel | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast("asyncio.Transport", transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH)

    def begin(self, ex: Exchange) -> None:
        self.exchange = ex
        self.head_only = ex.req.method == b"HEAD"
        self.upool.worker.busy.add(self)
        if ex.body_done:
            self.start_read_timer()
        else:
            # The client is still sending its body: its own idle timer covers that
            # wait; the read timer starts when the body is sent, or when the backend
            # stops taking it (pause_writing).
            self.deadline = ex.expires

    def start_read_timer(self) -> None:
        """The backend owes us bytes from now on: `timeouts.read` (capped by total)."""
        ex = self.exchange
        if ex is not None and ex.pool is not None and not self.paused:
            deadline = self.upool.worker.now + ex.pool.cfg.timeouts.read
            self.deadline = deadline if deadline < ex.expires else ex.expires

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.exchange = None
            self.upool.worker.busy.discard(self)
            if self.transport is not None:
                self.transport.close()

    def pause_reading(self) -> None:
        """Hold the backend back (the client is slow); its read timeout stops meanwhile."""
        if not self.paused and self.transport is not None and not self.closed:
            self.paused = True
            ex = self.exchange
            self.deadline = ex.expires if ex is not None else INF
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            ex = self.exchange
            if ex is not None and ex.pool is not None:
                deadline = self.upool.worker.now + ex.pool.cfg.timeouts.read
                self.deadline = deadline if deadline < ex.expires else ex.expires
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.client.pause(P_UPSTREAM)
            return
        ex = self.exchange
        if ex is not None:
            ex.client.pause(P_UPSTREAM)
            # The backend does not take the body: that wait is the backend's.
            self.start_read_timer()

    def resume_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.client.resume(P_UPSTREAM)
            return
        ex = self.exchange
        if ex is not None:
            ex.client.resume(P_UPSTREAM)
            if not ex.body_done and not ex.response_started:
                self.deadline = ex.expires

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.from_upstream(data)
            return
        ex = self.exchange
        if ex is None:
            # A backend talking out of turn on an idle connection: never reuse it.
            self.close()
            return
        deadline = self.upool.worker.now + ex.pool.cfg.timeouts.read  # type: ignore[union-attr]
        self.deadline = deadline if deadline < ex.expires else ex.expires
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            if self.exchange is ex:
                if ex.switching:
                    ex.switch_protocols(self, data[e.args[0] :])
                    return
                # A 101 to a request that did not ask to switch: the backend's mistake.
                ex.upstream_error("bad_response", "unsolicited 101 switching protocols")
            # (Else the exchange already gave this connection up, and may be on
            # another one by now: leave it alone.)
            self.close()
            return
        except httptools.HttpParserError as e:
            ex.upstream_error("bad_response", f"malformed response: {e}")
            # Also when the exchange had already finished (garbage after a complete
            # response): a connection whose parser failed is never reused.
            self.close()
            return
        if self.exchange is ex:
            ex.flush_client()
            if ex.client.write_paused:
                self.pause_reading()

    def eof_received(self) -> bool:
        if self.tunnel is not None:
            return self.tunnel.eof("upstream")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        was_closed = self.closed
        self.closed = True
        if self.tunnel is not None:
            self.tunnel.close()
        self.upool.worker.busy.discard(self)
        ex = self.exchange
        self.exchange = None
        if ex is not None and not was_closed:
            ex.upstream_lost(exc)

    def on_deadline(self, now: float) -> None:
        ex = self.exchange
        if ex is None:
            self.close()
        elif ex.expires <= now:
            ex.expire()
        else:
            ex.upstream_error("read_timeout", "read timeout")

    # parser callbacks

    def on_message_begin(self) -> None:
        if self.exchange is None:
            # A response nobody asked for (a body on a 204, a second response): the
            # backend is out of step with us; never reuse this connection.
            self.close()
        self.headers = []
        self.reason = b""

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        ex = self.exchange
        if ex is None:
            return
        p = self.parser
        ex.on_response_head(p.get_status_code(), self.reason, self.headers, p.should_keep_alive())
        if self.head_only and not ex.interim:
            # llhttp does not know this answers a HEAD: finish here and start the
            # next response with a fresh parser.
            self.parser = httptools.HttpResponseParser(self)
            ex.on_response_complete()

    def on_body(self, body: bytes) -> None:
        ex = self.exchange
        if ex is not None:
            ex.on_response_body(body)

    def on_message_complete(self) -> None:
        ex = self.exchange
        if ex is not None:
            ex.on_response_complete()
