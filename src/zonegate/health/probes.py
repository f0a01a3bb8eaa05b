"""Active health checks on real sockets, and the loop that feeds `PoolHealth`.

The probers turn every network outcome into a `ProbeResult` (ok, a reason in a few
words, latency). They never raise for a network failure. `ActiveChecker` probes every
backend of every pool on its own interval, records results into the pools'
`PoolHealth` and reports transitions to a callback. Deciding what a result means is
left to `health.machine`.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING

import httptools

from zonegate.errors import bug
from zonegate.health.machine import HealthState, PoolHealth, ProbeResult, Transition
from zonegate.topology.types import HostPort, format_duration

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from zonegate.topology.schema import ActiveCheck, Backend, Pool

BODY_LIMIT = 64 * 1024
"""Bytes of response body searched for `expect_body` (the schema documents 64 KiB)."""
READ_SIZE = 16 * 1024
USER_AGENT = "zonegate-health"
JITTER = 0.1
"""Each interval is stretched or shrunk by up to this share, so checks do not align."""


def _error_reason(exc: OSError, phase: str) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connect refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, BrokenPipeError):
        return "connection closed by peer"
    detail = exc.strerror or str(exc) or type(exc).__name__
    return f"{phase} failed: {detail}"


# The timeout is part of the result ("timeout after 1s"), so the prober owns it.
async def probe_tcp(host: str, port: int, timeout: float) -> ProbeResult:  # noqa: ASYNC109
    """Check that a TCP connection to host:port opens within `timeout` seconds.

    Returns:
        ok with reason "connected", or not ok with "connect refused",
        "connect timeout after 1s", "connect failed: ..." (never raises for the network).
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:  # before OSError: TimeoutError is one
        return ProbeResult(
            False, f"connect timeout after {format_duration(timeout)}", loop.time() - start
        )
    except OSError as exc:
        return ProbeResult(False, _error_reason(exc, "connect"), loop.time() - start)
    writer.close()
    return ProbeResult(True, "connected", loop.time() - start)


class _Response:
    """httptools callbacks collecting one response (status via the parser)."""

    __slots__ = ("body", "complete", "headers_done", "started")

    def __init__(self) -> None:
        self.started = False
        self.headers_done = False
        self.complete = False
        self.body = bytearray()

    def on_message_begin(self) -> None:
        self.started = True

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        room = BODY_LIMIT - len(self.body)
        if room > 0:
            self.body += body[:room]

    def on_message_complete(self) -> None:
        self.complete = True


def _request(host: str, port: int, check: ActiveCheck) -> bytes | None:
    """The check's request bytes, or None when `check.host` cannot go in a header."""
    authority = check.host or str(HostPort(host, port))
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in authority):
        return None
    try:
        return (
            f"GET {check.path} HTTP/1.1\r\n"
            f"Host: {authority}\r\n"
            f"User-Agent: {USER_AGENT}\r\n"
            "Accept: */*\r\n"
            "Connection: close\r\n\r\n"
        ).encode("ascii")
    except UnicodeEncodeError:
        return None


async def probe_http(
    host: str,
    port: int,
    check: ActiveCheck,
    timeout: float,  # noqa: ASYNC109 (as probe_tcp)
) -> ProbeResult:
    """One HTTP/1.1 GET of `check.path`; ok when the status (and body) match the check.

    The whole exchange (connect, request, status, and body when `expect_body` is set)
    must finish within `timeout` seconds. The body is read up to BODY_LIMIT bytes, with
    Content-Length, chunked or read-to-close framing, and stops as soon as the
    substring is seen.

    Returns:
        ok with reason "status 200", or not ok with "connect refused",
        "timeout after 1s", "status 503 not in 200-399", "body lacks 'ok'",
        "bad response: ..." (never raises for the network or the peer's bytes).
    """
    loop = asyncio.get_running_loop()
    start = loop.time()

    def done(ok: bool, reason: str) -> ProbeResult:
        return ProbeResult(ok, reason, loop.time() - start)

    request = _request(host, port, check)
    if request is None:
        return done(False, f"invalid Host header {check.host!r} in check")
    expect = check.expect_body.encode() if check.expect_body is not None else None
    phase = "connect"
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            phase = "request"
            writer.write(request)
            await writer.drain()
            phase = "response"
            resp = _Response()
            parser = httptools.HttpResponseParser(resp)
            status = 0
            while True:
                data = await reader.read(READ_SIZE)
                if data:
                    parser.feed_data(data)
                if resp.headers_done and not status:
                    status = parser.get_status_code()
                    if status not in check.expect_status:
                        return done(False, f"status {status} not in {check.expect_status}")
                    if expect is None:
                        return done(True, f"status {status}")
                if status and expect is not None:
                    if expect in resp.body:
                        return done(True, f"status {status}, body has {check.expect_body!r}")
                    if resp.complete or not data or len(resp.body) >= BODY_LIMIT:
                        where = "" if len(resp.body) < BODY_LIMIT else " in first 64 KiB"
                        return done(False, f"body lacks {check.expect_body!r}{where}")
                if not data:
                    what = "mid-response" if resp.started else "before status line"
                    return done(False, f"connection closed {what}")
    except TimeoutError:  # before OSError: TimeoutError is one
        prefix = "connect timeout" if phase == "connect" else "timeout"
        return done(False, f"{prefix} after {format_duration(timeout)}")
    except OSError as exc:
        return done(False, _error_reason(exc, phase))
    except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
        return done(False, f"bad response: {exc}")
    finally:
        if writer is not None:
            writer.close()


async def probe(address: HostPort, check: ActiveCheck) -> ProbeResult:
    """Run the check `check.type` names against `address` (the default `Probe`)."""
    if check.type == "http":
        return await probe_http(address.host, address.port, check, check.timeout)
    return await probe_tcp(address.host, address.port, check.timeout)


_Key = tuple[str, str, int]
"""A check loop's identity: pool name, backend id, occurrence of that id in the pool."""


class ActiveChecker:
    """Runs the active checks of every backend of every pool.

    Each backend has its own task. It probes at once when the backend's state is
    UNKNOWN, and otherwise after a random share of one interval (so checks spread
    out). After that it probes every `interval ± JITTER` seconds, counted from the
    start of one probe to the start of the next, and never runs two probes at once.
    Results go to `PoolHealth.record_active`, and every transition goes to `on_change`.
    Checks keep running for drained and disabled backends, so their state is known
    when they come back.

    Args:
        pools: pool configs by name. Pools without active checks are skipped.
        healths: the PoolHealth of each pool, by the same names.
        on_change: called as `on_change(pool_name, index, transition)`.
        now: the monotonic clock whose time goes to the state machines.
        rng: the source of spread and jitter.
        probe: the prober; default `probe` (real sockets). Tests pass fakes.
        concurrency: how many probes `first_round` runs at once.
    """

    def __init__(
        self,
        pools: Mapping[str, Pool],
        healths: Mapping[str, PoolHealth],
        on_change: Callable[[str, int, Transition], None] | None = None,
        *,
        now: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        probe: Callable[[HostPort, ActiveCheck], Awaitable[ProbeResult]] = probe,
        concurrency: int = 256,
    ) -> None:
        self._on_change = on_change
        self._now = now
        self._rng = rng or random.Random()
        self._probe = probe
        self._concurrency = concurrency
        self._pools: dict[str, Pool] = {}
        self._healths: dict[str, PoolHealth] = {}
        self._index: dict[_Key, int] = {}
        self._tasks: dict[_Key, asyncio.Task[None]] = {}
        self._retired: set[asyncio.Task[None]] = set()
        self._started = False
        self._set(pools, healths)

    @property
    def running(self) -> frozenset[_Key]:
        """Keys (pool, backend id, occurrence) of the check tasks running now."""
        return frozenset(k for k, t in self._tasks.items() if not t.done())

    async def first_round(self) -> None:
        """Probe every backend once, concurrently, and record the results.

        Run it at startup before taking traffic, so every backend's health is known.
        Each probe is bounded by its check's timeout.
        """
        limit = asyncio.Semaphore(self._concurrency)

        async def one(key: _Key) -> None:
            async with limit:
                await self._check_guarded(key)

        async with asyncio.TaskGroup() as tg:
            for key in list(self._index):
                tg.create_task(one(key), name=f"health-first:{key[0]}/{key[1]}")

    def start(self) -> None:
        """Start one check task per backend (idempotent). Needs a running loop."""
        if self._started:
            return
        self._started = True
        for key in self._index:
            self._spawn(key)

    async def stop(self) -> None:
        """Cancel every check task and wait for it.

        Raises:
            Exception: the first error a task died of (a bug), so tests see it.
        """
        tasks = [*self._tasks.values(), *self._retired]
        self._tasks.clear()
        self._retired.clear()
        self._started = False
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                raise result

    async def __aenter__(self) -> ActiveChecker:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def update(self, pools: Mapping[str, Pool], healths: Mapping[str, PoolHealth]) -> None:
        """Follow a reloaded config.

        Stops the tasks of backends that left (or whose pool turned active checks off),
        starts tasks for new backends (they probe at once, being UNKNOWN), and keeps the
        others running: they read the new config and PoolHealth on their next probe.
        """
        old = set(self._index)
        self._set(pools, healths)
        if not self._started:
            return
        for key in old - set(self._index):
            task = self._tasks.pop(key, None)
            if task is not None:
                task.cancel()
                self._retired.add(task)
                task.add_done_callback(self._retired.discard)
        for key in self._index:
            if key not in self._tasks:
                self._spawn(key)

    def _set(self, pools: Mapping[str, Pool], healths: Mapping[str, PoolHealth]) -> None:
        index: dict[_Key, int] = {}
        for name, pool in pools.items():
            if pool.health.active is None:
                continue
            health = healths.get(name)
            if health is None:
                raise ValueError(f"pool {name!r} has no PoolHealth")
            if len(health) != len(pool.backends):
                raise ValueError(f"PoolHealth of pool {name!r} does not match its backends")
            seen: dict[str, int] = {}
            for i, backend in enumerate(pool.backends):
                n = seen[backend.id] = seen.get(backend.id, -1) + 1
                index[(name, backend.id, n)] = i
        self._pools = dict(pools)
        self._healths = dict(healths)
        self._index = index

    def _lookup(self, key: _Key) -> tuple[int, Backend, ActiveCheck] | None:
        index = self._index.get(key)
        if index is None:
            return None
        pool = self._pools[key[0]]
        check = pool.health.active
        if check is None:
            return None
        return index, pool.backends[index], check

    def _spawn(self, key: _Key) -> None:
        found = self._lookup(key)
        if found is None:
            return
        index, _, check = found
        if self._healths[key[0]].targets[index].state is HealthState.UNKNOWN:
            delay = 0.0
        else:
            delay = self._rng.uniform(0.0, check.interval)
        self._tasks[key] = asyncio.create_task(
            self._loop(key, delay), name=f"health:{key[0]}/{key[1]}"
        )

    async def _loop(self, key: _Key, delay: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if delay > 0:
                await asyncio.sleep(delay)
            started = loop.time()
            await self._check_guarded(key)
            found = self._lookup(key)
            if found is None:
                return
            interval = found[2].interval * (1.0 + self._rng.uniform(-JITTER, JITTER))
            delay = max(0.0, interval - (loop.time() - started))

    async def _check_guarded(self, key: _Key) -> None:
        # One broken probe or callback must not stop the checks; CancelledError is a
        # BaseException and passes through.
        try:
            await self._check(key)
        except Exception as exc:
            bug(f"health check of {key[0]}/{key[1]} failed", exc)

    async def _check(self, key: _Key) -> None:
        found = self._lookup(key)
        if found is None:
            return
        _, backend, check = found
        result = await self._probe(backend.address, check)
        # The config may have changed while the probe ran: record only if the result
        # still describes this backend.
        found = self._lookup(key)
        if found is None or found[1].address != backend.address:
            return
        index = found[0]
        transition = self._healths[key[0]].record_active(
            index, result.ok, self._now(), result.reason
        )
        if transition is not None and self._on_change is not None:
            self._on_change(key[0], index, transition)


__all__ = ["BODY_LIMIT", "ActiveChecker", "probe", "probe_http", "probe_tcp"]
