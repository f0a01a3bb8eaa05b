"""The httpx transports: split routing, failover and retry around an inner transport.

Theory of operation
-------------------
Per request::

    host is a split domain of the config in force?  no ──► the inner transport, as is
      │ yes
      ▼
    route = zone of hash(device_id) % sharding        (_shard.route)
    choice = first zone of zone_order(route) whose breaker admits it  (_failover)
    addresses = resolve(choice.domain)                (_httpdns: HTTPDNS, fallback, cache)
    send to addresses[0] (best ranked): URL host = that IP, Host header (and TLS SNI)
      = the zone domain, with the request's port
      │
      ├─ a response (any status) ─► breaker success, address success;
      │      X-Zonegate-Version > ours ─► background refresh (never waits for it)
      └─ a network error ─► breaker failure (a trip asks the other zones' control
             endpoints for a new config), address failure;
             idempotent request ─► once more on choose_zone(exclude the failed zone)
             otherwise ─► the httpx error is raised

Idempotent: GET, HEAD, OPTIONS, PUT, DELETE, TRACE, or any request carrying an
`Idempotency-Key` header. Its body is read into memory first so it can be sent twice.
A network error is a connect error or timeout, a read/write error or timeout, or the
server closing the connection before answering; a pool timeout is ours, not the
zone's, and is neither counted nor retried.

`Router` holds the decisions and counters shared by both transports; `Transport`
(threads) and `AsyncTransport` (asyncio) do the I/O.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from zonegate.client._addresses import CachePolicy, RankPolicy
from zonegate.client._exceptions import ResolveError
from zonegate.client._failover import (
    Breaker,
    BreakerPolicy,
    BreakerState,
    Choice,
    Transition,
    choose_zone,
)
from zonegate.client._follow import (
    VERSION_HEADER,
    AsyncFollower,
    AsyncWorker,
    Clock,
    Control,
    FollowerState,
    SyncFollower,
    Worker,
    default_cache_path,
    endpoints_of,
    tls_context,
)
from zonegate.client._httpdns import (
    AsyncResolver,
    Resolver,
    ResolverCore,
    SyncResolver,
    system_resolver,
)
from zonegate.client._shard import ClientConfig, Route, route, zone_order
from zonegate.topology.schema import SplitMap

log = logging.getLogger("zonegate.client")

__all__ = ["IDEMPOTENT_METHODS", "NETWORK_ERRORS", "AsyncTransport", "Transport", "is_idempotent"]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
"""RFC 9110 §9.2.2."""
IDEMPOTENCY_KEY = "Idempotency-Key"

NETWORK_ERRORS: tuple[type[httpx.HTTPError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)
"""Errors that count against a zone and may be retried on another one (ResolveError
is a ConnectError)."""


def is_idempotent(request: httpx.Request) -> bool:
    """Whether a request may be sent twice: an idempotent method or an Idempotency-Key."""
    return request.method in IDEMPOTENT_METHODS or IDEMPOTENCY_KEY in request.headers


def split_address(address: str, default_port: int | None) -> tuple[str, int | None]:
    """`ip`, `ip:port`, `[v6]:port` or a bare IPv6 address -> (host, port)."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if address.count(":") == 1:
        host, _, port = address.partition(":")
        return host, int(port)
    return address, default_port


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of a request: its route and the zone chosen for it."""

    route: Route
    choice: Choice
    retry: bool = False

    @property
    def zone(self) -> str:
        return self.choice.zone


class _ZoneStats:
    __slots__ = ("errors", "requests", "rerouted", "retries")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.retries = 0
        self.rerouted = 0


class Router:
    """Routing decisions and counters shared by `Transport` and `AsyncTransport`.

    Thread-safe: breakers and counters change under one lock, held for no I/O.
    """

    def __init__(
        self,
        device_id: str,
        policy: BreakerPolicy,
        follower: FollowerState,
        resolver: ResolverCore,
        clock: Clock,
        version_header: str,
    ) -> None:
        self.device_id = device_id
        self.policy = policy
        self.follower = follower
        self.resolver = resolver
        self.clock = clock
        self.version_header = version_header
        self.lock = threading.Lock()
        self.breakers: dict[str, Breaker] = {}
        self.zone_stats: dict[str, _ZoneStats] = {}
        self.passthrough = 0

    def route(self, host: str) -> Route | None:
        """This device's route for `host` under the config in force (None: not split)."""
        config = self.follower.config
        return route(config, host, self.device_id) if config is not None else None

    def plan(self, host: str, failed: Attempt | None = None) -> Attempt | None:
        """The attempt for a request to `host`; None: not a split domain.

        With `failed`, the retry: another zone than the failed one when there is one,
        else the same zone again (its next-ranked address)."""
        config = self.follower.config
        if config is None:
            return None
        r = route(config, host, self.device_id)
        if r is None:
            if failed is None:
                with self.lock:
                    self.passthrough += 1
            return None
        order = zone_order(config, r)
        now = self.clock()
        with self.lock:
            for zone, _ in order:
                if zone not in self.breakers:
                    self.breakers[zone] = Breaker(self.policy)
                    self.zone_stats[zone] = _ZoneStats()
            exclude = [failed.zone] if failed is not None else []
            choice = choose_zone(order, self.breakers, now, exclude)
            if choice is None:
                choice = choose_zone(order, self.breakers, now)
            assert choice is not None  # a split map has at least one zone
            stats = self.zone_stats[choice.zone]
            stats.requests += 1
            if choice.zone != r.zone:
                stats.rerouted += 1
            if failed is not None:
                stats.retries += 1
        for zone, t in choice.transitions:
            self._log(zone, t)
        return Attempt(r, choice, retry=failed is not None)

    def rewrite(self, request: httpx.Request, attempt: Attempt, address: str) -> httpx.Request:
        """The request sent to `address`, with Host (and SNI) = the zone domain."""
        url = request.url
        ip, port = split_address(address, url.port)
        domain = attempt.choice.domain
        headers = request.headers.copy()
        headers["Host"] = domain if url.port is None else f"{domain}:{url.port}"
        extensions = dict(request.extensions)
        if url.scheme == "https":
            extensions["sni_hostname"] = domain
        return httpx.Request(
            request.method,
            url.copy_with(host=ip, port=port),
            headers=headers,
            stream=request.stream,
            extensions=extensions,
        )

    def succeeded(self, attempt: Attempt, address: str, response: httpx.Response) -> int | None:
        """A response came back; returns the version it announces, if newer than ours."""
        now = self.clock()
        with self.lock:
            t = self.breakers[attempt.zone].succeeded(attempt.choice.admission, now)
        self.resolver.record(address, True)
        if t is not None:
            self._log(attempt.zone, t)
        value = response.headers.get(self.version_header)
        if value is not None and value.isdigit():
            version = int(value)
            if version > self.follower.version:
                return version
        return None

    def failed(self, attempt: Attempt, address: str | None, exc: Exception) -> bool:
        """A network error; returns whether the zone's breaker just opened."""
        now = self.clock()
        with self.lock:
            self.zone_stats[attempt.zone].errors += 1
            t = self.breakers[attempt.zone].failed(attempt.choice.admission, now)
        if address is not None:
            self.resolver.record(address, False)
        log.info(
            "zone %s (%s) network error: %s: %s",
            attempt.zone,
            address or attempt.choice.domain,
            type(exc).__name__,
            exc,
        )
        if t is not None:
            self._log(attempt.zone, t)
            return t.new is BreakerState.OPEN
        return False

    def abandoned(self, attempt: Attempt) -> None:
        with self.lock:
            self.breakers[attempt.zone].abandoned(attempt.choice.admission)

    def _log(self, zone: str, t: Transition) -> None:
        if t.cool_down > 0:
            log.warning(
                "zone %s: breaker %s -> %s (%s), cool-down %.1fs",
                zone,
                t.old.value,
                t.new.value,
                t.trigger.value,
                t.cool_down,
            )
        else:
            log.warning(
                "zone %s: breaker %s -> %s (%s)", zone, t.old.value, t.new.value, t.trigger.value
            )

    def stats(self) -> dict[str, Any]:
        now = self.clock()
        f = self.follower
        with self.lock:
            zones = {
                zone: {
                    "requests": s.requests,
                    "errors": s.errors,
                    "retries": s.retries,
                    "rerouted": s.rerouted,
                    "switches": self.breakers[zone].trips,
                    "state": self.breakers[zone].state.value,
                    "error_rate": round(self.breakers[zone].error_rate(now), 4),
                }
                for zone, s in self.zone_stats.items()
            }
            passthrough = self.passthrough
        return {
            "device_id": self.device_id,
            "version": f.version,
            "config_source": f.source,
            "refreshes": f.refreshes,
            "control_errors": f.failures,
            "passthrough": passthrough,
            "zones": zones,
            "resolver": self.resolver.stats(),
        }


@dataclass(frozen=True, slots=True)
class _Parts:
    state: FollowerState
    core: ResolverCore
    router: Router
    headers: dict[str, str]
    seed: ClientConfig | None


def _build(
    *,
    control: Control,
    device_id: str,
    token: str | None,
    cache_path: str | Path | bool,
    split: Mapping[str, SplitMap | Mapping[str, Any]] | None,
    httpdns: Sequence[str],
    hosts: Mapping[str, str | Sequence[str]] | None,
    resolver: Resolver | None,
    breaker: BreakerPolicy,
    dns_cache: CachePolicy,
    rank: RankPolicy,
    refresh_interval: float | None,
    version_header: str,
    clock: Clock,
) -> _Parts:
    if not isinstance(device_id, str):
        raise TypeError("device_id must be a str")
    device_id.encode("utf-8")  # a lone surrogate: UnicodeEncodeError (a ValueError) now
    endpoints = endpoints_of(control)
    if cache_path is True:
        path: Path | None = default_cache_path(endpoints) if endpoints else None
    elif cache_path is False:
        path = None
    else:
        path = Path(cache_path)
    state = FollowerState(endpoints, path, refresh_interval, clock)
    core = ResolverCore(
        list(httpdns), hosts=hosts, fallback=resolver, cache=dns_cache, rank=rank, clock=clock
    )
    router = Router(device_id, breaker, state, core, clock, version_header)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    seed = ClientConfig.seed(split) if split is not None else None
    return _Parts(state, core, router, headers, seed)


class _Common:
    """What both transports answer about themselves."""

    _router: Router

    @property
    def config(self) -> ClientConfig | None:
        """The split config in force (None before an AsyncTransport has started)."""
        return self._router.follower.config

    @property
    def version(self) -> int:
        """The version of the config in force (0: the seed; -1: none yet)."""
        return self._router.follower.version

    def route(self, host: str) -> Route | None:
        """This device's route for `host` under the config in force, ignoring health
        (None: not a split domain)."""
        return self._router.route(host)

    def stats(self) -> dict[str, Any]:
        """Counters: config version and source, refreshes, per zone requests, errors,
        retries, rerouted (served for devices of another zone), switches (breaker
        trips) and breaker state; resolver counters and cache."""
        return self._router.stats()


class Transport(_Common, httpx.BaseTransport):
    """An httpx transport that sends split-domain requests to the device's zone.

    Args:
        control: control plane base URLs (tried in order), or a mapping zone -> URL(s).
        device_id: the DeviceID whose hash picks the zone.
        token: a read token for the control plane (Bearer), if it needs one.
        cache_path: the last-good config file: True (default) for
            `$XDG_CACHE_HOME/zonegate/client-HASH.json`, a path, or False for none.
        split: a seed config (`{domain: SplitMap or dict}`) used when neither the
            control plane nor the cache answers at start.
        httpdns: zonegate httpdns base URLs; empty: resolve with `resolver` only.
        hosts: static addresses per zone domain (`"ip"` or `"ip:port"`, or a list),
            used before anything else (tests, pinned deployments).
        resolver: fallback resolver (host -> addresses); default the system one
            (getaddrinfo); None: no fallback.
        breaker: failover thresholds (default: 3 consecutive errors, 50% over 10 s).
        retry: retry an idempotent request once on another zone after a network error.
        dns_cache: TTL policy of resolved addresses.
        rank: address ranking policy.
        refresh_interval: seconds between unprompted config refreshes; None: only
            on version headers and failover.
        control_timeout: timeout of each control plane request, seconds.
        httpdns_timeout: timeout of each HTTPDNS request, seconds.
        version_header: the response header carrying the control version.
        transport: the inner transport (default `httpx.HTTPTransport()`); TLS and
            proxy settings go there.
        clock: monotonic seconds (tests).

    Raises:
        ConfigUnavailable: no control endpoint answered, no readable cache, no seed.
        ValueError: a bad URL or setting.
    """

    def __init__(
        self,
        *,
        control: Control = (),
        device_id: str,
        token: str | None = None,
        cache_path: str | Path | bool = True,
        split: Mapping[str, SplitMap | Mapping[str, Any]] | None = None,
        httpdns: Sequence[str] = (),
        hosts: Mapping[str, str | Sequence[str]] | None = None,
        resolver: Resolver | None = system_resolver,
        breaker: BreakerPolicy | None = None,
        retry: bool = True,
        dns_cache: CachePolicy | None = None,
        rank: RankPolicy | None = None,
        refresh_interval: float | None = 300.0,
        control_timeout: float = 2.0,
        httpdns_timeout: float = 2.0,
        version_header: str = VERSION_HEADER,
        transport: httpx.BaseTransport | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        parts = _build(
            control=control,
            device_id=device_id,
            token=token,
            cache_path=cache_path,
            split=split,
            httpdns=httpdns,
            hosts=hosts,
            resolver=resolver,
            breaker=breaker or BreakerPolicy(),
            dns_cache=dns_cache or CachePolicy(),
            rank=rank or RankPolicy(),
            refresh_interval=refresh_interval,
            version_header=version_header,
            clock=clock,
        )
        self._router = parts.router
        self._retry = retry
        if transport is None:
            transport = httpx.HTTPTransport(verify=tls_context())
        self._inner = transport
        self._worker = Worker("zonegate-client", clock)
        self._follower = SyncFollower(
            parts.state, self._worker, headers=parts.headers, timeout=control_timeout
        )
        self._resolver = SyncResolver(parts.core, self._worker, timeout=httpdns_timeout)
        parts.state.listeners.append(lambda c: self._resolver.prefetch(c.zone_domains()))
        try:
            self._follower.start(parts.seed)
        except BaseException:
            self.close()
            raise

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        attempt = self._router.plan(request.url.host)
        if attempt is None:
            return self._inner.handle_request(request)
        retry = self._retry and is_idempotent(request)
        if retry:
            request.read()
        try:
            return self._send(request, attempt)
        except NETWORK_ERRORS:
            if not retry:
                raise
            again = self._router.plan(request.url.host, failed=attempt)
            if again is None:  # the config changed under us: the host is no longer split
                return self._inner.handle_request(request)
            log.info("retrying %s %s on zone %s", request.method, request.url, again.zone)
            return self._send(request, again)

    def _send(self, request: httpx.Request, attempt: Attempt) -> httpx.Response:
        router = self._router
        try:
            address = self._resolver.resolve(attempt.choice.domain)[0]
        except ResolveError as exc:
            self._failed(attempt, None, exc)
            raise
        except BaseException:
            router.abandoned(attempt)
            raise
        try:
            response = self._inner.handle_request(router.rewrite(request, attempt, address))
        except NETWORK_ERRORS as exc:
            self._failed(attempt, address, exc)
            raise
        except BaseException:
            router.abandoned(attempt)
            raise
        version = router.succeeded(attempt, address, response)
        if version is not None:
            self._follower.announce(version)
        return response

    def _failed(self, attempt: Attempt, address: str | None, exc: Exception) -> None:
        if self._router.failed(attempt, address, exc):
            self._follower.request(avoid=attempt.zone)

    def wait_version(self, version: int, timeout: float = 5.0) -> bool:
        """Block until the config in force is at least `version` (True) or `timeout`
        seconds pass (False). For tests and tools; requests never wait."""
        deadline = time.monotonic() + timeout
        while self.version < version:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        return True

    def close(self) -> None:
        self._worker.stop()
        self._follower.close()
        self._resolver.close()
        self._inner.close()


class AsyncTransport(_Common, httpx.AsyncBaseTransport):
    """The asyncio twin of `Transport` (same arguments; `transport` is an
    `httpx.AsyncBaseTransport`, default `httpx.AsyncHTTPTransport()`).

    Nothing is fetched in the constructor: `await start()` gets the first config
    (control plane, cache, seed), and the first request does so if it was not
    called. `ConfigUnavailable` is raised there.
    """

    def __init__(
        self,
        *,
        control: Control = (),
        device_id: str,
        token: str | None = None,
        cache_path: str | Path | bool = True,
        split: Mapping[str, SplitMap | Mapping[str, Any]] | None = None,
        httpdns: Sequence[str] = (),
        hosts: Mapping[str, str | Sequence[str]] | None = None,
        resolver: Resolver | None = system_resolver,
        breaker: BreakerPolicy | None = None,
        retry: bool = True,
        dns_cache: CachePolicy | None = None,
        rank: RankPolicy | None = None,
        refresh_interval: float | None = 300.0,
        control_timeout: float = 2.0,
        httpdns_timeout: float = 2.0,
        version_header: str = VERSION_HEADER,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        parts = _build(
            control=control,
            device_id=device_id,
            token=token,
            cache_path=cache_path,
            split=split,
            httpdns=httpdns,
            hosts=hosts,
            resolver=resolver,
            breaker=breaker or BreakerPolicy(),
            dns_cache=dns_cache or CachePolicy(),
            rank=rank or RankPolicy(),
            refresh_interval=refresh_interval,
            version_header=version_header,
            clock=clock,
        )
        self._router = parts.router
        self._seed = parts.seed
        self._retry = retry
        if transport is None:
            transport = httpx.AsyncHTTPTransport(verify=tls_context())
        self._inner = transport
        self._worker = AsyncWorker(clock)
        self._follower = AsyncFollower(
            parts.state, self._worker, headers=parts.headers, timeout=control_timeout
        )
        self._resolver = AsyncResolver(parts.core, self._worker, timeout=httpdns_timeout)
        self._changed = asyncio.Event()
        parts.state.listeners.append(self._on_config)
        self._start_lock = asyncio.Lock()
        self._started = False

    def _on_config(self, config: ClientConfig) -> None:
        # Called in the event loop (the follower runs there).
        self._resolver.prefetch(config.zone_domains())
        self._changed.set()

    async def start(self) -> None:
        """Get the first config (idempotent).

        Raises:
            ConfigUnavailable: no control endpoint answered, no readable cache, no seed.
        """
        if self._started:
            return
        async with self._start_lock:
            if not self._started:
                await self._follower.start(self._seed)
                self._started = True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self._started:
            await self.start()
        attempt = self._router.plan(request.url.host)
        if attempt is None:
            return await self._inner.handle_async_request(request)
        retry = self._retry and is_idempotent(request)
        if retry:
            await request.aread()
        try:
            return await self._send(request, attempt)
        except NETWORK_ERRORS:
            if not retry:
                raise
            again = self._router.plan(request.url.host, failed=attempt)
            if again is None:
                return await self._inner.handle_async_request(request)
            log.info("retrying %s %s on zone %s", request.method, request.url, again.zone)
            return await self._send(request, again)

    async def _send(self, request: httpx.Request, attempt: Attempt) -> httpx.Response:
        router = self._router
        try:
            address = (await self._resolver.resolve(attempt.choice.domain))[0]
        except ResolveError as exc:
            self._failed(attempt, None, exc)
            raise
        except BaseException:
            router.abandoned(attempt)
            raise
        try:
            response = await self._inner.handle_async_request(
                router.rewrite(request, attempt, address)
            )
        except NETWORK_ERRORS as exc:
            self._failed(attempt, address, exc)
            raise
        except BaseException:
            router.abandoned(attempt)
            raise
        version = router.succeeded(attempt, address, response)
        if version is not None:
            self._follower.announce(version)
        return response

    def _failed(self, attempt: Attempt, address: str | None, exc: Exception) -> None:
        if self._router.failed(attempt, address, exc):
            self._follower.request(avoid=attempt.zone)

    async def wait_version(self, version: int) -> None:
        """Wait until the config in force is at least `version` (bound it with
        `asyncio.timeout`). For tests and tools; requests never wait."""
        while self.version < version:
            self._changed.clear()
            if self.version >= version:
                break
            await self._changed.wait()

    async def aclose(self) -> None:
        await self._worker.stop()
        await self._follower.aclose()
        await self._resolver.aclose()
        await self._inner.aclose()
