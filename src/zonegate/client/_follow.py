"""The SDK's config follower: first config, last-good cache, version-driven refresh.

Theory of operation
-------------------
::

    construction ── GET /v1/state, endpoints in order ──► config, written to the cache
        │  none answers: the cache file (last good copy)
        │  no cache: the `split=` seed (version 0)
        │  none of them: ConfigUnavailable
        ▼
    requests ── a response says X-Zonegate-Version: V > ours ──► announce(V)
        │       a zone's breaker opened ──► refresh(avoid=that zone)
        │       every `refresh_interval` seconds ──► refresh()
        ▼
    background (thread or task, never the request) ── GET /v1/state ──► newer? swap
        the config (one reference assignment), write the cache; still older than
        announced, or no endpoint answered: retry after a backoff (0.2 s doubling
        to 5 s) while it stays behind.

Endpoints are `(zone, url)`; a refresh asked with `avoid=Z` tries the endpoints of
other zones first: the failing zone's control endpoint is likely down with it. The
endpoint that answered last is tried first next time.

The cache file holds the control plane's `DesiredState` JSON as served, written
atomically by `zonegate.control.follow.write_cache_file` (the same function and
format `zonegate lb --control-cache` uses).

`FollowerState` holds the decisions and is shared; `SyncFollower` (a background
thread, via `Worker`) and `AsyncFollower` (an asyncio task, via `AsyncWorker`) only
do the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import heapq
import itertools
import json
import logging
import os
import ssl
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from zonegate.client._exceptions import ConfigUnavailable
from zonegate.client._shard import ClientConfig
from zonegate.control.follow import write_cache_file

log = logging.getLogger("zonegate.client")


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context (the CA bundle httpx uses) shared by every client the SDK makes:
    loading the bundle costs about 20 ms of CPU, once per process instead of three
    times per transport."""
    return httpx.create_ssl_context()


VERSION_HEADER = "X-Zonegate-Version"
"""The response header carrying the control plane version (zonegate lb stamps it)."""
BACKOFF_MIN = 0.2
BACKOFF_MAX = 5.0

Clock = Callable[[], float]
Control = Sequence[str] | Mapping[str, str | Sequence[str]]
"""Control endpoints: URLs in order, or per zone its URL(s) (then a refresh after a
zone fails asks the other zones' endpoints first)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One control plane base URL, and the zone it lives in (None: unknown)."""

    url: str
    zone: str | None = None


def endpoints_of(control: Control) -> list[Endpoint]:
    """Normalize the `control=` argument.

    Raises:
        ValueError: a URL that is not http(s), or a bare string instead of a list.
    """
    if isinstance(control, str):
        raise ValueError("control: give a list of URLs (or a mapping zone -> URL), not a str")
    out: list[Endpoint] = []
    if isinstance(control, Mapping):
        for zone, urls in control.items():
            for url in [urls] if isinstance(urls, str) else urls:
                out.append(Endpoint(_check_url(url), str(zone)))
    else:
        out = [Endpoint(_check_url(u)) for u in control]
    return out


def _check_url(url: str) -> str:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"control: {url!r} is not an http(s) URL")
    return url.rstrip("/")


def default_cache_path(endpoints: Sequence[Endpoint]) -> Path:
    """`$XDG_CACHE_HOME/zonegate/client-HASH.json` (else `~/.cache/...`); HASH names
    the set of control endpoints, so two apps with different control planes on one
    machine do not share a file."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    key = "\n".join(sorted(e.url for e in endpoints)).encode()
    return Path(base) / "zonegate" / f"client-{hashlib.sha256(key).hexdigest()[:16]}.json"


class FollowerState:
    """What the follower knows and decides (no I/O; callers hold no lock: the state
    is small and every method takes `self.lock`).

    Args:
        endpoints: the control endpoints.
        cache_path: the last-good file, or None.
        refresh_interval: seconds between unprompted refreshes; None: never.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        cache_path: Path | None,
        refresh_interval: float | None,
        clock: Clock,
    ) -> None:
        self.endpoints = list(endpoints)
        self.cache_path = cache_path
        self.refresh_interval = refresh_interval
        self.clock = clock
        self.lock = threading.Lock()
        self.config: ClientConfig | None = None
        """The config in force (replaced whole, never mutated)."""
        self.source = ""
        self.wanted = 0
        """The highest version announced by a response header."""
        self.avoid: str | None = None
        self.forced = False
        self.backoff = BACKOFF_MIN
        self.not_before = 0.0
        self.next_periodic: float | None = None
        self._current = 0
        self.refreshes = 0
        self.failures = 0
        self.last_error = ""
        self.listeners: list[Callable[[ClientConfig], None]] = []

    @property
    def version(self) -> int:
        return self.config.version if self.config is not None else -1

    # --- triggers (called on the request path: O(1), never blocking on I/O)

    def announce(self, version: int) -> bool:
        """A response said the control plane is at `version`; True: refresh needed."""
        with self.lock:
            if version <= self.version or version <= self.wanted:
                return False
            self.wanted = version
            return True

    def request(self, avoid: str | None = None) -> None:
        """Ask for a refresh now (a zone's breaker opened: `avoid` it)."""
        with self.lock:
            self.forced = True
            self.avoid = avoid
            self.not_before = 0.0

    def due_in(self, now: float) -> float | None:
        """Seconds until a fetch round should run (0: now); None: nothing wanted."""
        with self.lock:
            if not self.endpoints:
                return None
            behind = self.forced or self.wanted > self.version
            if behind:
                return max(0.0, self.not_before - now)
            if self.next_periodic is not None:
                return max(0.0, self.next_periodic - now)
            return None

    # --- a fetch round

    def order(self) -> list[Endpoint]:
        """Endpoints to try, in order: the last good first; `avoid`'s zone last."""
        with self.lock:
            n = len(self.endpoints)
            if n == 0:
                return []
            ring = [self.endpoints[(self._current + i) % n] for i in range(n)]
            avoid = self.avoid
        if avoid is None:
            return ring
        return [e for e in ring if e.zone != avoid] + [e for e in ring if e.zone == avoid]

    def offer(self, endpoint: Endpoint, body: bytes) -> tuple[ClientConfig, bool]:
        """An endpoint answered 200 with `body`; apply it if newer.

        Returns:
            (the config it holds, whether it was applied).

        Raises:
            ValueError: the body is not a state document.
        """
        config = ClientConfig.from_state(json.loads(body))
        with self.lock:
            self._current = self.endpoints.index(endpoint)
            applied = config.version > self.version
            if applied:
                self._apply(config, endpoint.url)
        if applied:
            self._notify(config)
        return config, applied

    def failed(self, endpoint: Endpoint, why: str) -> None:
        with self.lock:
            self.failures += 1
            self.last_error = f"{endpoint.url}: {why}"
        log.warning("control endpoint %s: %s", endpoint.url, why)

    def round_done(self, answered: bool, now: float) -> None:
        """After trying the endpoints: schedule the retry or the next periodic round."""
        with self.lock:
            self.refreshes += 1
            still_behind = self.wanted > self.version
            if answered and not still_behind:
                self.forced = False
                self.avoid = None
                self.backoff = BACKOFF_MIN
                self.not_before = 0.0
            else:
                self.not_before = now + self.backoff
                self.backoff = min(BACKOFF_MAX, self.backoff * 2)
            if self.refresh_interval is not None:
                self.next_periodic = now + self.refresh_interval

    def _apply(self, config: ClientConfig, source: str) -> None:
        old = self.config
        self.config = config
        self.source = source
        log.info(
            "split config version %d from %s (was %s)",
            config.version,
            source,
            old.version if old is not None else "none",
        )

    def _notify(self, config: ClientConfig) -> None:
        for fn in list(self.listeners):
            fn(config)

    # --- start

    def start_from(self, config: ClientConfig, source: str) -> None:
        """Use a first config (from the control plane, the cache or the seed)."""
        with self.lock:
            if config.version > self.version:
                self._apply(config, source)
            if self.refresh_interval is not None:
                self.next_periodic = self.clock() + self.refresh_interval
        self._notify(config)

    def load_cache(self) -> ClientConfig | None:
        """The config in the cache file, or None (missing or unreadable: logged)."""
        path = self.cache_path
        if path is None:
            return None
        try:
            return ClientConfig.from_state(json.loads(path.read_bytes()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable split config cache %s: %s", path, e)
            return None

    def save_cache(self, body: bytes) -> None:
        if self.cache_path is None:
            return
        try:
            write_cache_file(self.cache_path, body.decode("utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            log.warning("cannot write split config cache %s: %s", self.cache_path, e)

    def no_config(self, why: str) -> ConfigUnavailable:
        where = ", ".join(e.url for e in self.endpoints) or "no control endpoint"
        cache = f"cache {self.cache_path}" if self.cache_path else "no cache file"
        return ConfigUnavailable(
            f"no split config: control plane unreachable ({where}: {why}), {cache} "
            "missing or unreadable, and no split= seed"
        )


def _check_response(r: httpx.Response) -> str | None:
    if r.status_code != 200:
        return f"HTTP {r.status_code} {r.text[:200]!r}"
    return None


def start_without_control(state: FollowerState, seed: ClientConfig | None, why: str) -> None:
    """No control endpoint answered at start: the cache, else the seed, else raise.

    Raises:
        ConfigUnavailable: neither a readable cache nor a seed.
    """
    cached = state.load_cache()
    if cached is not None:
        log.warning(
            "control plane unreachable at start (%s): using cached version %d from %s",
            why,
            cached.version,
            state.cache_path,
        )
        state.start_from(cached, "cache")
    elif seed is not None:
        log.warning("control plane unreachable at start (%s): using the split= seed", why)
        state.start_from(seed, "seed")
    else:
        raise state.no_config(why)
    state.request()  # keep trying in the background


# --- sync ----------------------------------------------------------------------------


class Worker:
    """One daemon thread running keyed jobs at given times, one at a time.

    `submit(key, fn, delay)` schedules `fn` unless a job with that key is already
    due no later; jobs never run on the caller's thread. Exceptions are logged.
    """

    def __init__(self, name: str, clock: Clock) -> None:
        self.clock = clock
        self._cond = threading.Condition()
        self._jobs: dict[str, tuple[float, Callable[[], None]]] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, key: str, fn: Callable[[], None], delay: float = 0.0) -> None:
        when = self.clock() + max(0.0, delay)
        with self._cond:
            if self._stopped:
                return
            queued = self._jobs.get(key)
            if queued is not None and queued[0] <= when:
                return
            self._jobs[key] = (when, fn)
            heapq.heappush(self._heap, (when, next(self._seq), key))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    if self._heap:
                        when, _, key = self._heap[0]
                        job = self._jobs.get(key)
                        if job is None or job[0] != when:
                            heapq.heappop(self._heap)  # superseded
                            continue
                        wait = when - self.clock()
                        if wait <= 0:
                            heapq.heappop(self._heap)
                            del self._jobs[key]
                            fn = job[1]
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
            try:
                fn()
            except Exception:
                log.exception("background job %s failed", key)

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)


class SyncFollower:
    """The follower for `Transport`: fetches on a `Worker` thread with httpx.Client."""

    def __init__(
        self,
        state: FollowerState,
        worker: Worker,
        *,
        headers: Mapping[str, str],
        timeout: float,
    ) -> None:
        self.state = state
        self.worker = worker
        self.client = httpx.Client(
            headers=dict(headers), timeout=timeout, trust_env=False, verify=tls_context()
        )

    def start(self, seed: ClientConfig | None) -> None:
        """Get the first config (control plane, cache, seed) or raise ConfigUnavailable."""
        answered, why = self._round_once()
        if not answered:
            start_without_control(self.state, seed, why)
        self.schedule()

    def announce(self, version: int) -> None:
        if self.state.announce(version):
            self.schedule()

    def request(self, avoid: str | None = None) -> None:
        self.state.request(avoid)
        self.schedule()

    def schedule(self) -> None:
        delay = self.state.due_in(self.state.clock())
        if delay is not None:
            self.worker.submit("config", self._job, delay)

    def _job(self) -> None:
        self._round_once()
        self.schedule()

    def _round_once(self) -> tuple[bool, str]:
        state = self.state
        why = "no control endpoint configured"
        for ep in state.order():
            try:
                r = self.client.get(f"{ep.url}/v1/state")
            except httpx.HTTPError as e:
                why = f"{type(e).__name__}: {e}"
                state.failed(ep, why)
                continue
            bad = _check_response(r)
            if bad is None:
                try:
                    _, applied = state.offer(ep, r.content)
                except ValueError as e:
                    bad = f"invalid state: {e}"
                else:
                    if applied:
                        state.save_cache(r.content)
                    state.round_done(True, state.clock())
                    return True, ""
            why = bad
            state.failed(ep, bad)
        state.round_done(False, state.clock())
        return False, why

    def close(self) -> None:
        self.client.close()


# --- async ---------------------------------------------------------------------------


class AsyncWorker:
    """The asyncio twin of `Worker`: keyed jobs as tasks of the running loop."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._tasks: dict[str, tuple[float, asyncio.Task[None]]] = {}
        self._closed = False

    def submit(self, key: str, fn: Callable[[], Awaitable[None]], delay: float = 0.0) -> None:
        if self._closed:
            return
        when = self.clock() + max(0.0, delay)
        queued = self._tasks.get(key)
        if queued is not None and not queued[1].done():
            if queued[0] <= when or queued[0] <= self.clock():
                return  # due no later, or already running
            queued[1].cancel()
        task = asyncio.get_running_loop().create_task(self._run(key, fn, delay))
        self._tasks[key] = (when, task)

    async def _run(self, key: str, fn: Callable[[], Awaitable[None]], delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            await fn()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background job %s failed", key)
        finally:
            current = self._tasks.get(key)
            if current is not None and current[1] is asyncio.current_task():
                del self._tasks[key]

    async def stop(self) -> None:
        self._closed = True
        tasks = [t for _, t in self._tasks.values()]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()


class AsyncFollower:
    """The follower for `AsyncTransport`: fetches in tasks with httpx.AsyncClient."""

    def __init__(
        self,
        state: FollowerState,
        worker: AsyncWorker,
        *,
        headers: Mapping[str, str],
        timeout: float,
    ) -> None:
        self.state = state
        self.worker = worker
        self.client = httpx.AsyncClient(
            headers=dict(headers), timeout=timeout, trust_env=False, verify=tls_context()
        )

    async def start(self, seed: ClientConfig | None) -> None:
        answered, why = await self._round_once()
        if not answered:
            start_without_control(self.state, seed, why)  # a small file read: fine inline
        self.schedule()

    def announce(self, version: int) -> None:
        if self.state.announce(version):
            self.schedule()

    def request(self, avoid: str | None = None) -> None:
        self.state.request(avoid)
        self.schedule()

    def schedule(self) -> None:
        delay = self.state.due_in(self.state.clock())
        if delay is not None:
            self.worker.submit("config", self._job, delay)

    async def _job(self) -> None:
        await self._round_once()
        self.schedule()

    async def _round_once(self) -> tuple[bool, str]:
        state = self.state
        why = "no control endpoint configured"
        for ep in state.order():
            try:
                r = await self.client.get(f"{ep.url}/v1/state")
            except httpx.HTTPError as e:
                why = f"{type(e).__name__}: {e}"
                state.failed(ep, why)
                continue
            bad = _check_response(r)
            if bad is None:
                try:
                    _, applied = state.offer(ep, r.content)
                except ValueError as e:
                    bad = f"invalid state: {e}"
                else:
                    if applied:
                        await asyncio.to_thread(state.save_cache, r.content)
                    state.round_done(True, state.clock())
                    return True, ""
            why = bad
            state.failed(ep, bad)
        state.round_done(False, state.clock())
        return False, why

    async def aclose(self) -> None:
        await self.client.aclose()
