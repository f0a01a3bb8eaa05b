"""The demo's load generator: paced requests from many devices, routed like an SDK would.

Theory of operation
-------------------
`LoadGen` is pacing and bookkeeping only: `workers` tasks each send one request at a
time at `rate / workers` per second, for a device id drawn at random from a large
population, and record every outcome as a `Sample`. Where a request goes is decided
by one pluggable `Router`::

    LoadGen ── device id ──> Router.request(device) ──> Outcome ──> Sample
                                   │
                  split map, version, failover, connections

A `Router` owns everything a client library owns: which zone a device belongs to,
which address serves that zone, keep-alive connections, what happens on a network
error, and when to refresh its configuration. Two exist:

- `SplitRouter` (here): the split map from the control plane's ``GET /v1/state``,
  refreshed whenever an answer carries a higher ``X-Zonegate-Version``; a request goes
  to the LB listener of the device's zone with the zone's domain as Host; on a network
  error an idempotent GET is retried once on another zone, and the zone is skipped
  for `DOWN_FOR` seconds (a client-side zone failover).
- `SdkRouter` (`zonegate.lab.sdkload`, when the SDK is installed): the same through
  `zonegate.client`.

A pacing rule keeps the rate an upper bound: a slow answer delays that worker's next
request but never causes a burst to catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, Protocol

import httptools
import httpx

from zonegate.balance.shard import zone_for
from zonegate.control.model import DesiredState
from zonegate.lab.drills import Sample
from zonegate.topology.schema import SplitMap
from zonegate.topology.types import HostPort

__all__ = [
    "DOWN_FOR",
    "REQUEST_TIMEOUT",
    "HttpConnection",
    "LoadGen",
    "Outcome",
    "Router",
    "SplitRouter",
    "admin_call",
    "error_kind",
]

REQUEST_TIMEOUT = 3.0
DOWN_FOR = 1.0
"""After a network error on a zone, the router sends that zone's devices to another
zone for this long before it tries the zone again."""
VERSION_HEADER = b"x-zonegate-version"


class _Response:
    """httptools callbacks: the status comes from the parser, headers from here."""

    __slots__ = ("backend", "body", "done", "keep_body", "served", "status", "version")

    def __init__(self, keep_body: bool = False) -> None:
        self.backend = ""
        self.served = ""  # X-Zone: the zone of the backend that answered
        self.body = b""
        self.done = False
        self.keep_body = keep_body
        self.status = 0
        self.version = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"x-backend":
            self.backend = value.decode("latin-1")
        elif name == b"x-zone":
            self.served = value.decode("latin-1")
        elif name == VERSION_HEADER:
            with contextlib.suppress(ValueError):
                self.version = int(value)

    def on_body(self, body: bytes) -> None:
        if self.keep_body:
            self.body += body

    def on_message_complete(self) -> None:
        self.done = True


class HttpConnection:
    """One client connection, reopened after an error or a Connection: close."""

    def __init__(self, addr: HostPort) -> None:
        self.addr = addr
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, head: bytes, within: float, keep_body: bool = False) -> _Response:
        """Send a bodyless request and read the whole response `within` s.

        Raises:
            OSError, TimeoutError, httptools.HttpParserError: the network or the peer
                failed; the connection is unusable (call `close`).
        """
        resp = _Response(keep_body)
        parser = httptools.HttpResponseParser(resp)
        async with asyncio.timeout(within):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(
                    self.addr.host, self.addr.port
                )
            assert self.reader is not None
            self.writer.write(head)
            while not resp.done:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionResetError("connection closed before the response ended")
                parser.feed_data(data)
        resp.status = parser.get_status_code()
        if not parser.should_keep_alive():
            self.close()
        return resp

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


NETWORK_ERRORS = (OSError, TimeoutError, httptools.HttpParserError)


def error_kind(exc: BaseException) -> str:
    """A short name for a failed request: refused, timeout, reset, bad_response."""
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, httptools.HttpParserError):
        return "bad_response"
    if isinstance(exc, ConnectionError):
        return "reset"
    return type(exc).__name__


async def admin_call(addr: HostPort, method: str, path: str) -> tuple[int, bytes]:
    """One request to an LB admin endpoint (it closes after each answer)."""
    conn = HttpConnection(addr)
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    try:
        resp = await conn.request(head, 2.0, keep_body=True)
    finally:
        conn.close()
    return resp.status, resp.body


# --- routing --------------------------------------------------------------------------


class Outcome(NamedTuple):
    """One request's result as a router reports it (see `Sample` for the fields)."""

    zone: str
    backend: str
    status: int
    error: str
    home: str
    version: int = 0
    failover: bool = False
    served: str = ""


class Router(Protocol):
    """Where a device's request goes, and everything a client library keeps for it."""

    name: str
    """Shown in the report: which client did the routing."""
    version: int
    """The control-plane version the router follows now."""
    version_events: list[tuple[float, int]]
    """(time, version) each time the router started following a newer version."""

    async def start(self) -> None:
        """Load the initial configuration (before the first request)."""

    async def request(self, device_id: str) -> Outcome:
        """Send one idempotent GET for `device_id`; never raises for network errors."""

    def home_of(self, device_id: str) -> str:
        """The zone the router's current split map gives the device."""

    async def close(self) -> None:
        """Close every connection."""


class SplitRouter:
    """The demo's own client-side routing (stand-in for the SDK; see the module doc).

    Args:
        control: control plane base URLs, tried in order.
        domain: the split domain requested (api.example.test).
        listeners: per zone, the LB listener that serves the zone's domain.
        clock: seconds since the demo started (for `version_events`).
        path: the path of every GET.
    """

    name = "demo split router"

    def __init__(
        self,
        control: Sequence[str],
        domain: str,
        listeners: Mapping[str, HostPort],
        clock: Callable[[], float],
        path: str = "/",
    ) -> None:
        self.control = list(control)
        self.domain = domain
        self.listeners = dict(listeners)
        self.clock = clock
        self.path = path
        self.version = 0
        self.version_events: list[tuple[float, int]] = []
        self.split: SplitMap | None = None
        self._idle: dict[str, list[HttpConnection]] = {z: [] for z in self.listeners}
        self._down_until: dict[str, float] = {}
        self._refresh: asyncio.Task[None] | None = None
        self._http = httpx.AsyncClient(timeout=2.0)

    async def start(self) -> None:
        """Fetch the split map; raises httpx.HTTPError if no control plane answers."""
        last: Exception | None = None
        for _ in range(3):
            try:
                await self._fetch()
                return
            except (httpx.HTTPError, ValueError) as exc:
                last = exc
                await asyncio.sleep(0.2)
        assert last is not None
        raise last

    async def _fetch(self) -> None:
        errors: list[str] = []
        for url in self.control:
            try:
                resp = await self._http.get(f"{url}/v1/state")
                resp.raise_for_status()
            except httpx.HTTPError as exc:
                errors.append(f"{url}: {exc}")
                continue
            state = DesiredState.model_validate_json(resp.content)
            if state.version > self.version:
                self.split = state.split.get(self.domain)
                self.version = state.version
                self.version_events.append((self.clock(), state.version))
            return
        raise httpx.ConnectError("; ".join(errors) or "no control URL")

    def _refresh_soon(self) -> None:
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.get_running_loop().create_task(self._refresh_once())

    async def _refresh_once(self) -> None:
        # A failed refresh is retried by the next answer that carries the new version.
        with contextlib.suppress(httpx.HTTPError, ValueError):
            await self._fetch()

    def home_of(self, device_id: str) -> str:
        if self.split is not None:
            found = zone_for(device_id, self.split)
            if found is not None:
                return found[0]
        return next(iter(self.listeners))

    def _host(self, zone: str) -> str:
        if self.split is not None and zone in self.split.zones:
            return self.split.zones[zone].domain
        return self.domain

    async def request(self, device_id: str) -> Outcome:
        home = self.home_of(device_id)
        others = [z for z in self.listeners if z != home]
        now = self.clock()
        order = [home, *others]
        if self._down_until.get(home, 0.0) > now and others:
            order = [*others, home]
        first_error = ""
        for attempt, zone in enumerate(order[:2]):
            out = await self._send(zone, device_id)
            if isinstance(out, str):
                self._down_until[zone] = self.clock() + DOWN_FOR
                first_error = first_error or out
                continue
            if zone == home:
                self._down_until.pop(home, None)
            status, backend, version, served = out
            if version > self.version:
                self._refresh_soon()
            failover = zone != home or attempt > 0
            return Outcome(zone, backend, status, "", home, version, failover, served)
        return Outcome(order[min(1, len(order) - 1)], "", 0, first_error, home, 0, len(order) > 1)

    async def _send(self, zone: str, device_id: str) -> tuple[int, str, int, str] | str:
        """(status, backend, version, served zone), or the error kind."""
        idle = self._idle[zone]
        conn = idle.pop() if idle else HttpConnection(self.listeners[zone])
        head = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self._host(zone)}\r\n"
            f"User-Agent: zonegate-demo\r\nX-Device-Id: {device_id}\r\n\r\n"
        ).encode()
        try:
            resp = await conn.request(head, REQUEST_TIMEOUT)
        except NETWORK_ERRORS as exc:
            conn.close()
            return error_kind(exc)
        if conn.writer is not None:
            idle.append(conn)
        return resp.status, resp.backend, resp.version, resp.served

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
            idle.clear()
        await self._http.aclose()


# --- load -----------------------------------------------------------------------------


class LoadGen:
    """Paced closed-loop workers sending requests through a `Router`.

    Args:
        router: decides where each request goes.
        devices: the device population; each request draws one at random.
        rate: requests per second over all workers (an upper bound).
        clock: seconds since the demo started.
        workers: concurrent requests at most.
    """

    def __init__(
        self,
        router: Router,
        devices: Sequence[str],
        rate: float,
        clock: Callable[[], float],
        workers: int = 16,
    ) -> None:
        self.router = router
        self.devices = devices
        self.rate = rate
        self.clock = clock
        self.workers = workers
        self.samples: list[Sample] = []
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for i in range(self.workers):
            self._tasks.append(loop.create_task(self._worker(i)))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _worker(self, i: int) -> None:
        rng = random.Random(f"worker-{i}")
        interval = self.workers / self.rate
        next_t = self.clock() + interval * i / self.workers
        while True:
            delay = next_t - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
            next_t = max(next_t + interval, self.clock() - interval)
            device = rng.choice(self.devices)
            t = self.clock()
            out = await self.router.request(device)
            self.samples.append(
                Sample(
                    t,
                    out.zone,
                    out.backend,
                    out.status,
                    self.clock() - t,
                    out.error,
                    out.home,
                    out.version,
                    out.failover,
                    out.served,
                )
            )
