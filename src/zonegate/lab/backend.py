"""A small, fast HTTP/1.1 origin server for demos, tests and benchmarks.

Run it as ``python -m zonegate.lab.backend --listen 127.0.0.1:8101 --name cp-1
--zone changping``; once it accepts connections it prints one line
``listening on HOST:PORT`` (the real port when asked for port 0).

It is an ``asyncio.Protocol`` on uvloop with httptools parsing: keep-alive,
pipelining (answers leave in request order), flow control both ways, and no
request or response body is ever held in memory. Endpoints:

=========================  ============================================================
``GET /`` (and unknown)    200 ``hello from NAME``; every response carries
                           ``X-Backend: NAME`` and ``X-Zone: ZONE``
``GET /healthz``           200 ``ok``, or 503 after ``POST /admin/fail-health``
                           (``POST /admin/heal`` restores it)
``ANY /echo``              JSON: method, path, query, headers as ``[name, value]``
                           pairs, body bytes received, HTTP version, peer address
``POST|PUT /upload``       streams the body, answers JSON ``{"bytes", "crc32"}``
``GET /download?bytes=N``  N bytes of `pattern` (``&chunked=1`` for chunked), with
                           ``X-Crc32`` = `pattern_crc32` (N)
``ANY /slow?ms=N``         answers after N ms
``ANY /status/NNN``        answers status NNN
``ANY /hang``              never answers
``ANY /close``             closes without answering (``?rst=1``: TCP reset)
``ANY /stats``             JSON ``{"requests", "name", "zone", "connections", ...}``
=========================  ============================================================

Malformed requests get 400 (too-long target 414, too-large headers 431) and the
connection is closed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import http
import ipaddress
import json
import os
import signal
import socket
import struct
import sys
import zlib
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import httptools
import uvloop

if TYPE_CHECKING:
    from zonegate.topology.schema import Topology

__all__ = [
    "PATTERN_BLOCK",
    "Backend",
    "BackendSpec",
    "BackendState",
    "backends_of",
    "iter_pattern",
    "main",
    "pattern_crc32",
    "run_backends",
    "serve",
    "start_server",
]

# Byte i of every download is i % 256: a 64 KiB block of bytes(range(256)) repeated.
PATTERN_BLOCK = bytes(range(256)) * 256
# One write is four blocks: fewer syscalls, and still aligned on the pattern.
_UNIT = PATTERN_BLOCK * 4
_CHUNKED_UNIT = b"%x\r\n" % len(_UNIT) + _UNIT + b"\r\n"

MAX_TARGET = 8 * 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 200
# Requests parsed but not answered yet; past this we stop reading the socket.
MAX_QUEUE = 64

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CONN_KEEP_ALIVE = b"Connection: keep-alive\r\n"
_CONN_CLOSE = b"Connection: close\r\n"
_TEXT = b"text/plain; charset=utf-8"
_JSON = b"application/json"


def iter_pattern(n: int, chunk: int = len(_UNIT)):
    """Yield the first `n` bytes of the download pattern in pieces of `chunk` bytes."""
    if chunk <= 0 or chunk % 256:
        raise ValueError("chunk must be a positive multiple of 256")
    unit = _UNIT if chunk == len(_UNIT) else bytes(range(256)) * (chunk // 256)
    while n > 0:
        k = min(n, chunk)
        yield unit if k == chunk else unit[:k]
        n -= k


# --- CRC32 of the pattern without reading n bytes --------------------------------------
#
# zlib.crc32(block, c) is affine in the starting value c over GF(2): L(c) ^ crc32(block).
# Powers of that map give the CRC of k blocks in O(log k) 32x32 matrix products.


def _gf2_apply(cols: Sequence[int], v: int) -> int:
    r = 0
    i = 0
    while v:
        if v & 1:
            r ^= cols[i]
        v >>= 1
        i += 1
    return r


def _affine_compose(a: tuple[list[int], int], b: tuple[list[int], int]) -> tuple[list[int], int]:
    """Return the affine map "apply b, then a"."""
    la, ca = a
    lb, cb = b
    return [_gf2_apply(la, col) for col in lb], _gf2_apply(la, cb) ^ ca


@functools.cache
def _block_map() -> tuple[list[int], int]:
    c0 = zlib.crc32(PATTERN_BLOCK, 0)
    return [zlib.crc32(PATTERN_BLOCK, 1 << i) ^ c0 for i in range(32)], c0


@functools.lru_cache(maxsize=256)
def pattern_crc32(n: int) -> int:
    """CRC32 (as zlib.crc32) of the first `n` bytes of the download pattern, cheaply."""
    if n < 0:
        raise ValueError("n must be >= 0")
    blocks, rest = divmod(n, len(PATTERN_BLOCK))
    if blocks <= 64:
        crc = 0
        for piece in iter_pattern(blocks * len(PATTERN_BLOCK)):
            crc = zlib.crc32(piece, crc)
    else:
        result: tuple[list[int], int] = ([1 << i for i in range(32)], 0)
        base = _block_map()
        while blocks:
            if blocks & 1:
                result = _affine_compose(base, result)
            blocks >>= 1
            if blocks:
                base = _affine_compose(base, base)
        crc = result[1]
    return zlib.crc32(PATTERN_BLOCK[:rest], crc)


# --- the server -------------------------------------------------------------------------


@functools.cache
def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("ascii")


class BackendState:
    """Identity, health flag and counters shared by all connections of one server."""

    def __init__(self, name: str, zone: str) -> None:
        for label, value in (("name", name), ("zone", zone)):
            if not value.isprintable() or not value.isascii():
                raise ValueError(f"{label} must be printable ASCII: {value!r}")
        self.name = name
        self.zone = zone
        self.healthy = True
        self.requests = 0
        self.connections = 0
        self.open: set[_Connection] = set()
        self.common = f"X-Backend: {name}\r\nX-Zone: {zone}\r\n".encode("ascii")
        body = f"hello from {name}\n".encode("ascii")
        head = (
            _status_line(200)
            + self.common
            + b"Content-Type: "
            + _TEXT
            + b"\r\nContent-Length: %d\r\n" % len(body)
        )
        # `GET /` is the benchmark path: one precomputed bytes object per connection mode.
        self.hello = {
            b"": head + b"\r\n" + body,
            _CONN_KEEP_ALIVE: head + _CONN_KEEP_ALIVE + b"\r\n" + body,
            _CONN_CLOSE: head + _CONN_CLOSE + b"\r\n" + body,
        }

    def stats(self) -> dict[str, Any]:
        """The JSON document served on ``/stats``."""
        return {
            "requests": self.requests,
            "name": self.name,
            "zone": self.zone,
            "healthy": self.healthy,
            "connections": self.connections,
            "open_connections": len(self.open),
        }


class _Reject(Exception):
    """Raised in a parser callback to answer `status` and close."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Request:
    __slots__ = (
        "body_bytes",
        "crc",
        "error",
        "header_bytes",
        "headers",
        "keep_alive",
        "method",
        "path",
        "query",
        "target",
        "upload",
        "version",
    )

    def __init__(self) -> None:
        self.target = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.method = b""
        self.version = "1.1"
        self.keep_alive = True
        self.path = b"/"
        self.query = b""
        self.upload = False
        self.body_bytes = 0
        self.crc = 0
        # Set on a synthetic entry: answer this status (0: answer nothing) and close.
        self.error: int | None = None


def _failure(status: int) -> _Request:
    req = _Request()
    req.method = b"GET"
    req.keep_alive = False
    req.error = status
    return req


class _Connection(asyncio.Protocol):
    """One client connection: parse, queue, answer strictly in order."""

    def __init__(self, state: BackendState) -> None:
        self._state = state
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport = None  # type: ignore[assignment]
        self._peer: Any = None
        self._req: _Request = None  # type: ignore[assignment]
        self._queue: deque[_Request] = deque()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._broken = False  # the parser failed: parse nothing more
        self._eof = False
        self._read_paused = False
        self._write_paused = False
        self._writable: asyncio.Future[None] | None = None

    # -- transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._peer = transport.get_extra_info("peername")
        self._state.connections += 1
        self._state.open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._state.open.discard(self)
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()
        self._wake_writer()

    def data_received(self, data: bytes) -> None:
        if self._closing or self._broken:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No upgraded protocol is spoken here: answer what was parsed, then close.
            self._fail(0)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._fail(cause.status if isinstance(cause, _Reject) else 500)
        except httptools.HttpParserError:
            self._fail(400)

    def eof_received(self) -> bool:
        self._eof = True
        # Half-closed clients still get the answers to what they already sent.
        return self._task is not None or bool(self._queue)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_writer()
        if self._task is None:
            self._drain()

    # -- parser callbacks

    def on_message_begin(self) -> None:
        self._req = _Request()

    def on_url(self, url: bytes) -> None:
        req = self._req
        req.target += url
        if len(req.target) > MAX_TARGET:
            raise _Reject(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self._req
        req.header_bytes += len(name) + len(value)
        if req.header_bytes > MAX_HEADER_BYTES or len(req.headers) >= MAX_HEADERS:
            raise _Reject(431)
        req.headers.append((name, value))

    def on_headers_complete(self) -> None:
        req = self._req
        parser = self._parser
        req.method = parser.get_method()
        req.version = parser.get_http_version()
        req.keep_alive = parser.should_keep_alive()
        target = req.target
        if target[:1] == b"/":
            req.path, _, req.query = target.partition(b"?")
        elif target[:7].lower() in (b"http://", b"https:/"):
            url = httptools.parse_url(target)
            req.path = url.path or b"/"
            req.query = url.query or b""
        else:  # CONNECT authority or OPTIONS *
            req.path = target
        req.upload = req.path == b"/upload"
        if req.version == "1.1" and self._idle():
            for name, value in req.headers:
                if name.lower() == b"expect" and value.lower() == b"100-continue":
                    self._transport.write(_CONTINUE)
                    break

    def on_body(self, body: bytes) -> None:
        req = self._req
        req.body_bytes += len(body)
        if req.upload:
            req.crc = zlib.crc32(body, req.crc)

    def on_message_complete(self) -> None:
        req = self._req
        self._req = None  # type: ignore[assignment]
        if self._closing:
            return
        self._state.requests += 1
        if self._idle():
            self._handle(req)
        else:
            self._queue.append(req)
            self._update_reading()

    # -- answering

    def _idle(self) -> bool:
        return self._task is None and not self._queue and not self._write_paused

    def _fail(self, status: int) -> None:
        self._broken = True
        self._req = None  # type: ignore[assignment]
        if self._idle():
            self._handle(_failure(status))
        else:
            self._queue.append(_failure(status))
            self._update_reading()

    def _drain(self) -> None:
        queue = self._queue
        while queue and self._task is None and not self._write_paused and not self._closing:
            try:
                self._handle(queue.popleft())
            except Exception:
                self._abort()
        if self._closing:
            return
        self._update_reading()
        if self._eof and self._task is None and not queue:
            self._close()

    def _update_reading(self) -> None:
        want_pause = len(self._queue) >= MAX_QUEUE or self._broken
        if want_pause != self._read_paused and not self._closing:
            self._read_paused = want_pause
            if want_pause:
                self._transport.pause_reading()
            else:
                self._transport.resume_reading()

    def _handle(self, req: _Request) -> None:
        path = req.path
        if req.error is not None:
            if req.error:
                self._respond(req, req.error, b"bad request\n")
            else:
                self._close()
            return
        if path == b"/" and req.method == b"GET":
            keep = req.keep_alive
            self._transport.write(self._state.hello[self._conn_header(req, keep)])
            if not keep:
                self._close()
            return
        handler = _ROUTES.get(path)
        if handler is None:
            handler = _Connection._status if path.startswith(b"/status/") else _Connection._hello
        coro = handler(self, req)
        if coro is not None:
            self._task = asyncio.get_running_loop().create_task(self._run(coro))

    async def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            return
        except Exception:
            # A half-written response cannot be repaired: drop the connection.
            self._abort()
            return
        self._task = None
        self._drain()

    def _close(self) -> None:
        if not self._closing:
            self._closing = True
            self._queue.clear()
            self._transport.close()

    def _abort(self) -> None:
        self._closing = True
        self._queue.clear()
        self._transport.abort()

    def _wake_writer(self) -> None:
        waiter = self._writable
        if waiter is not None:
            self._writable = None
            if not waiter.done():
                waiter.set_result(None)

    async def _wait_writable(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()
        await self._writable

    def _conn_header(self, req: _Request, keep: bool) -> bytes:
        if not keep:
            return _CONN_CLOSE
        return b"" if req.version == "1.1" else _CONN_KEEP_ALIVE

    def _head(
        self,
        req: _Request,
        status: int,
        content_type: bytes,
        length: int | None,
        extra: bytes = b"",
    ) -> bytes:
        """Status line and headers; `length` None means a chunked body."""
        if status in (204, 304):
            framing = b""
        elif length is None:
            framing = b"Content-Type: " + content_type + b"\r\nTransfer-Encoding: chunked\r\n"
        else:
            framing = b"Content-Type: " + content_type + b"\r\nContent-Length: %d\r\n" % length
        return b"".join(
            (
                _status_line(status),
                self._state.common,
                framing,
                extra,
                self._conn_header(req, req.keep_alive),
                b"\r\n",
            )
        )

    def _respond(
        self,
        req: _Request,
        status: int,
        body: bytes,
        content_type: bytes = _TEXT,
        extra: bytes = b"",
    ) -> None:
        if status in (204, 304):
            body = b""
        head = self._head(req, status, content_type, len(body), extra)
        self._transport.write(head if req.method == b"HEAD" else head + body)
        if not req.keep_alive:
            self._close()

    def _respond_json(self, req: _Request, doc: dict[str, Any], status: int = 200) -> None:
        body = json.dumps(doc, separators=(",", ":")).encode() + b"\n"
        self._respond(req, status, body, _JSON)

    def _method_not_allowed(self, req: _Request, allow: bytes) -> None:
        self._respond(req, 405, b"method not allowed\n", extra=b"Allow: " + allow + b"\r\n")

    # -- endpoints: return None when answered, or a coroutine that answers later

    def _hello(self, req: _Request) -> None:
        self._respond(req, 200, f"hello from {self._state.name}\n".encode())

    def _healthz(self, req: _Request) -> None:
        if req.method not in (b"GET", b"HEAD"):
            return self._method_not_allowed(req, b"GET, HEAD")
        if self._state.healthy:
            self._respond(req, 200, b"ok")
        else:
            self._respond(req, 503, b"unhealthy")

    def _admin_fail_health(self, req: _Request) -> None:
        if req.method != b"POST":
            return self._method_not_allowed(req, b"POST")
        self._state.healthy = False
        self._respond(req, 200, b"health check now failing\n")

    def _admin_heal(self, req: _Request) -> None:
        if req.method != b"POST":
            return self._method_not_allowed(req, b"POST")
        self._state.healthy = True
        self._respond(req, 200, b"health check now passing\n")

    def _stats(self, req: _Request) -> None:
        self._respond_json(req, self._state.stats())

    def _echo(self, req: _Request) -> None:
        peer = self._peer
        self._respond_json(
            req,
            {
                "method": req.method.decode("latin-1"),
                "path": req.path.decode("latin-1"),
                "query": req.query.decode("latin-1"),
                "target": req.target.decode("latin-1"),
                "http_version": req.version,
                "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in req.headers],
                "body_bytes": req.body_bytes,
                "peer": list(peer[:2]) if isinstance(peer, tuple) else None,
                "backend": self._state.name,
                "zone": self._state.zone,
            },
        )

    def _upload(self, req: _Request) -> None:
        if req.method not in (b"POST", b"PUT"):
            return self._method_not_allowed(req, b"POST, PUT")
        self._respond_json(req, {"bytes": req.body_bytes, "crc32": req.crc})

    def _status(self, req: _Request) -> None:
        code = req.path[len(b"/status/") :]
        if len(code) != 3 or not code.isdigit() or not 200 <= int(code) <= 599:
            return self._respond(req, 400, b"status must be 200..599\n")
        status = int(code)
        self._respond(req, status, b"status %d\n" % status)

    def _close_endpoint(self, req: _Request) -> None:
        if _query(req).get("rst") == "1":
            sock = self._transport.get_extra_info("socket")
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self._abort()
        else:
            self._close()

    async def _hang(self, req: _Request) -> None:
        await asyncio.get_running_loop().create_future()

    def _slow(self, req: _Request) -> Coroutine[Any, Any, None] | None:
        try:
            ms = float(_query(req).get("ms", "0"))
            if not 0 <= ms <= 3_600_000:
                raise ValueError
        except ValueError:
            return self._respond(req, 400, b"ms must be a number of milliseconds\n")
        return self._slow_answer(req, ms)

    async def _slow_answer(self, req: _Request, ms: float) -> None:
        await asyncio.sleep(ms / 1000)
        self._respond(req, 200, b"slept %d ms\n" % ms)

    def _download(self, req: _Request) -> Coroutine[Any, Any, None] | None:
        if req.method not in (b"GET", b"HEAD"):
            return self._method_not_allowed(req, b"GET, HEAD")
        query = _query(req)
        try:
            n = int(query.get("bytes", "0"))
            if n < 0:
                raise ValueError
        except ValueError:
            return self._respond(req, 400, b"bytes must be a non-negative integer\n")
        # HTTP/1.0 has no chunked encoding.
        chunked = query.get("chunked") == "1" and req.version == "1.1"
        return self._stream_download(req, n, chunked)

    async def _stream_download(self, req: _Request, n: int, chunked: bool) -> None:
        extra = b"X-Crc32: %d\r\n" % pattern_crc32(n)
        head = self._head(req, 200, b"application/octet-stream", None if chunked else n, extra)
        write = self._transport.write
        write(head)
        if req.method != b"HEAD":
            remaining = n
            writes = 0
            while remaining > 0:
                if self._write_paused:
                    await self._wait_writable()
                if self._closing:
                    return
                k = min(remaining, len(_UNIT))
                if chunked:
                    write(_CHUNKED_UNIT if k == len(_UNIT) else b"%x\r\n%s\r\n" % (k, _UNIT[:k]))
                else:
                    write(_UNIT if k == len(_UNIT) else _UNIT[:k])
                remaining -= k
                writes += 1
                if not writes % 16 and not self._write_paused:
                    # A fast reader never pauses us: let other connections run.
                    await asyncio.sleep(0)
            if chunked:
                write(b"0\r\n\r\n")
        if not req.keep_alive:
            self._close()


def _query(req: _Request) -> dict[str, str]:
    return dict(parse_qsl(req.query.decode("latin-1")))


_ROUTES = {
    b"/healthz": _Connection._healthz,
    b"/echo": _Connection._echo,
    b"/upload": _Connection._upload,
    b"/download": _Connection._download,
    b"/slow": _Connection._slow,
    b"/hang": _Connection._hang,
    b"/close": _Connection._close_endpoint,
    b"/stats": _Connection._stats,
    b"/admin/fail-health": _Connection._admin_fail_health,
    b"/admin/heal": _Connection._admin_heal,
}


class Backend:
    """A backend server running in the current event loop (see `start_server`)."""

    def __init__(self, server: asyncio.Server, state: BackendState) -> None:
        self.server = server
        self.state = state
        sockname = server.sockets[0].getsockname()
        self.host: str = sockname[0]
        self.port: int = sockname[1]

    @property
    def address(self) -> str:
        """``HOST:PORT``, with brackets around an IPv6 host."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def close(self) -> None:
        """Stop listening and drop every open connection."""
        self.server.close()
        for conn in list(self.state.open):
            conn._abort()
        await self.server.wait_closed()


async def start_server(host: str, port: int, name: str, zone: str = "default") -> Backend:
    """Start listening on `host`:`port` in the running loop and return the `Backend`."""
    state = BackendState(name, zone)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Connection(state), host, port, reuse_address=True, backlog=1024
    )
    return Backend(server, state)


async def serve(host: str, port: int, name: str, zone: str = "default") -> None:
    """Serve until cancelled; prints ``listening on HOST:PORT`` once ready."""
    backend = await start_server(host, port, name, zone)
    try:
        print(f"listening on {backend.address}", flush=True)
        await asyncio.get_running_loop().create_future()
    finally:
        await backend.close()


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def _label(value: str) -> str:
    if not value or not value.isascii() or not value.isprintable():
        raise argparse.ArgumentTypeError(f"expected printable ASCII, got {value!r}")
    return value


async def _main(host: str, port: int, name: str, zone: str) -> None:
    task = asyncio.ensure_future(serve(host, port, name, zone))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m zonegate.lab.backend", description="Demo/test HTTP backend."
    )
    parser.add_argument(
        "--listen",
        type=_parse_listen,
        default=("127.0.0.1", 8101),
        metavar="HOST:PORT",
        help="address to listen on (port 0: any free port)",
    )
    parser.add_argument("--name", type=_label, default="backend", help="X-Backend value")
    parser.add_argument("--zone", type=_label, default="default", help="X-Zone value")
    args = parser.parse_args(argv)
    host, port = args.listen
    try:
        uvloop.run(_main(host, port, args.name, args.zone))
    except OSError as exc:
        print(f"cannot listen on {host}:{port}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


# --- `zonegate backends FILE [--zone Z]`: the demo backends a topology names ----------


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """One demo backend to start: its X-Backend name, X-Zone and listen address."""

    name: str
    zone: str
    host: str
    port: int

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def backends_of(topo: Topology, zone: str | None = None) -> list[BackendSpec]:
    """Every backend address of the topology's pools (of `zone` only, if given).

    In file order; an address named by several pools is started once, under its
    first name. Raises `ValueError` for an unknown zone, a zone without backends, or
    a backend given by host name (a demo backend listens on an IP address).
    """
    if zone is not None and zone not in topo.zones:
        raise ValueError(f"no zone {zone!r} (zones: {', '.join(topo.zones)})")
    specs: dict[tuple[str, int], BackendSpec] = {}
    for pool_name, pool in topo.pools.items():
        if zone is not None and pool.zone != zone:
            continue
        for b in pool.backends:
            host, port = b.address.host, b.address.port
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise ValueError(
                    f"pools.{pool_name}: backend {b.id} is at {b.address}, a host name; "
                    "demo backends listen on IP addresses only"
                ) from None
            specs.setdefault((host, port), BackendSpec(b.id, pool.zone, host, port))
    if not specs:
        where = f"zone {zone!r}" if zone is not None else "the topology"
        raise ValueError(f"{where} has no pool backends")
    return list(specs.values())


async def _serve_all(specs: Sequence[BackendSpec]) -> int:
    started: list[Backend] = []
    try:
        for spec in specs:
            try:
                started.append(await start_server(spec.host, spec.port, spec.name, spec.zone))
            except OSError as exc:
                print(
                    f"zonegate backends: cannot listen on {spec.address} ({spec.name}): "
                    f"{os.strerror(exc.errno).lower() if exc.errno else exc}",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
        listing = ", ".join(f"{s.name}={b.address}" for s, b in zip(specs, started, strict=True))
        print(f"zonegate backends ready: {len(started)} backends: {listing}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        return 0
    finally:
        for backend in started:
            await backend.close()


def run_backends(path: str, zone: str | None = None) -> int:
    """Run the demo backends that `path`'s pools name (of `zone`) until SIGTERM/SIGINT.

    Prints one ready line naming every backend, or one error line and returns 1 when
    the file is invalid or an address cannot be bound.
    """
    from zonegate.errors import ConfigErrors
    from zonegate.topology.load import load_topology

    try:
        specs = backends_of(load_topology(path), zone)
    except ConfigErrors as exc:
        print(exc, file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"zonegate backends: {path}: {exc}", file=sys.stderr)
        return 1
    return uvloop.run(_serve_all(specs))


if __name__ == "__main__":
    sys.exit(main())
