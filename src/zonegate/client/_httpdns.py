"""The SDK's resolver: HTTPDNS first, the system resolver as fallback, a TTL cache.

Theory of operation
-------------------
Zone domains (api-cp.example.test) are resolved through `zonegate httpdns`
(`GET /d?host=a,b` answers `{"answers": [{"host", "ips", "ttl", ...}]}`), because
LocalDNS may be slow to follow a change, cache past the TTL or be hijacked::

    resolve(host)
      ├─ a static override (hosts=)                       ─► it
      ├─ cached and FRESH                                 ─► it
      ├─ cached and REFRESH (past refresh_ahead of TTL)   ─► it; refresh in the background
      └─ missing or past its TTL: fetch now
            HTTPDNS endpoints in order (skipped for a backoff after they all failed)
              └─ no answer ─► the fallback resolver (system DNS, or a callable)
                    └─ no answer ─► the expired answer, up to max_stale past its TTL
                          └─ none ─► ResolveError

Addresses come back ranked by `_addresses.AddressBook` (recent failures last), fed
by the transport with the outcome of every request. Every zone domain of the split
config is prefetched in one HTTPDNS request when a config arrives, so a failover
does not wait for a lookup.

`ResolverCore` holds the cache and decisions; `SyncResolver` and `AsyncResolver` do
the I/O (the async one runs the fallback callable in a thread).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import httpx

from zonegate.client._addresses import AddressBook, Answer, CachePolicy, Freshness, RankPolicy
from zonegate.client._exceptions import ResolveError
from zonegate.client._follow import AsyncWorker, Clock, Worker, tls_context
from zonegate.client._shard import normalize_host

log = logging.getLogger("zonegate.client")

Resolver = Callable[[str], Sequence[str]]
"""A fallback resolver: host name -> IP addresses (raise OSError or return [] when it
has none). Must be thread-safe; it is called from request threads."""

MAX_HOSTS = 16
"""Hosts per HTTPDNS request (the server's limit)."""
HTTPDNS_BACKOFF_MIN = 1.0
HTTPDNS_BACKOFF_MAX = 30.0


def system_resolver(host: str) -> list[str]:
    """The system resolver (getaddrinfo): IPv4 and IPv6 addresses, in its order."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class ResolverCore:
    """Cache, ranking and HTTPDNS backoff (shared by the sync and async resolvers).

    Args:
        httpdns: HTTPDNS base URLs, tried in order (may be empty).
        hosts: static overrides, host -> address(es), each `ip` or `ip:port`.
        fallback: the resolver used when HTTPDNS has no answer; None: none.
        cache: TTL policy.
        rank: address ranking policy.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        httpdns: Sequence[str],
        *,
        hosts: Mapping[str, str | Sequence[str]] | None,
        fallback: Resolver | None,
        cache: CachePolicy,
        rank: RankPolicy,
        clock: Clock,
    ) -> None:
        self.urls = [u.rstrip("/") for u in httpdns]
        for u in self.urls:
            if not u.startswith(("http://", "https://")):
                raise ValueError(f"httpdns: {u!r} is not an http(s) URL")
        self.static: dict[str, tuple[str, ...]] = {}
        for host, addrs in (hosts or {}).items():
            values = (addrs,) if isinstance(addrs, str) else tuple(addrs)
            if not values:
                raise ValueError(f"hosts[{host!r}]: no address")
            self.static[normalize_host(host)] = values
        self.fallback = fallback
        self.policy = cache
        self.book = AddressBook(rank)
        self.clock = clock
        self.lock = threading.Lock()
        self.cache: dict[str, Answer] = {}
        self._current = 0
        self._skip_until = 0.0
        self._backoff = HTTPDNS_BACKOFF_MIN
        self.counts = {"httpdns": 0, "httpdns_errors": 0, "fallback": 0, "stale": 0, "failed": 0}

    # --- the cache

    def cached(self, host: str, now: float) -> tuple[list[str] | None, bool]:
        """(ranked addresses or None: fetch now, whether to refresh in the background)."""
        static = self.static.get(host)
        with self.lock:
            if static is not None:
                return self.book.rank(static, now), False
            entry = self.cache.get(host)
            if entry is None:
                return None, False
            fresh = entry.freshness(now, self.policy)
            if fresh is Freshness.FRESH:
                return self.book.rank(entry.addresses, now), False
            if fresh is Freshness.REFRESH:
                return self.book.rank(entry.addresses, now), True
            return None, False

    def stale(self, host: str, now: float) -> list[str] | None:
        """The expired answer, while within `max_stale`."""
        with self.lock:
            entry = self.cache.get(host)
            if entry is None or entry.freshness(now, self.policy) is Freshness.EXPIRED:
                return None
            self.counts["stale"] += 1
            return self.book.rank(entry.addresses, now)

    def store(self, answer: Answer) -> None:
        with self.lock:
            self.cache[answer.host] = answer

    def ranked(self, answer: Answer, now: float) -> list[str]:
        with self.lock:
            return self.book.rank(answer.addresses, now)

    def record(self, address: str, ok: bool) -> None:
        """The outcome of a request sent to `address` (ranking input)."""
        now = self.clock()
        with self.lock:
            self.book.record(address, ok, now)

    # --- HTTPDNS

    def httpdns_order(self, now: float) -> list[str]:
        """HTTPDNS URLs to try now (none while backing off after they all failed)."""
        with self.lock:
            if not self.urls or now < self._skip_until:
                return []
            n = len(self.urls)
            return [self.urls[(self._current + i) % n] for i in range(n)]

    def httpdns_ok(self, url: str) -> None:
        with self.lock:
            self._current = self.urls.index(url)
            self._backoff = HTTPDNS_BACKOFF_MIN
            self._skip_until = 0.0
            self.counts["httpdns"] += 1

    def httpdns_failed(self, url: str, why: str) -> None:
        with self.lock:
            self.counts["httpdns_errors"] += 1
        log.warning("httpdns %s: %s", url, why)

    def httpdns_all_failed(self, now: float) -> None:
        with self.lock:
            self._skip_until = now + self._backoff
            self._backoff = min(HTTPDNS_BACKOFF_MAX, self._backoff * 2)

    def parse(self, body: bytes, now: float) -> dict[str, Answer]:
        """The non-empty answers of an HTTPDNS `/d` response body.

        Raises:
            ValueError: not the expected JSON.
        """
        doc: Any = json.loads(body)
        answers = doc.get("answers") if isinstance(doc, dict) else None
        if not isinstance(answers, list):
            raise ValueError("no answers list")
        out: dict[str, Answer] = {}
        for a in answers:
            if not isinstance(a, dict):
                raise ValueError("an answer is not an object")
            host, ips, ttl = a.get("host"), a.get("ips"), a.get("ttl", 0)
            if not isinstance(host, str) or not isinstance(ips, list):
                raise ValueError("an answer lacks host or ips")
            if not ips:
                continue
            if isinstance(ttl, bool) or not isinstance(ttl, int | float):
                raise ValueError(f"{host}: ttl is not a number")
            out[normalize_host(host)] = Answer(
                normalize_host(host),
                tuple(str(ip) for ip in ips),
                now,
                self.policy.clamp(float(ttl)),
                "httpdns",
            )
        return out

    def from_fallback(self, host: str, addresses: Iterable[str], now: float) -> Answer | None:
        addrs = tuple(dict.fromkeys(str(a) for a in addresses))
        if not addrs:
            return None
        with self.lock:
            self.counts["fallback"] += 1
        return Answer(host, addrs, now, self.policy.fallback_ttl, "system")

    def failed_all(self, host: str, why: str) -> ResolveError:
        with self.lock:
            self.counts["failed"] += 1
        return ResolveError(host, why)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                **self.counts,
                "cached": {
                    h: {"addresses": list(a.addresses), "source": a.source, "ttl": a.ttl}
                    for h, a in self.cache.items()
                },
            }


def _batches(hosts: Sequence[str]) -> list[list[str]]:
    unique = list(dict.fromkeys(hosts))
    return [unique[i : i + MAX_HOSTS] for i in range(0, len(unique), MAX_HOSTS)]


class SyncResolver:
    """Blocking resolver for `Transport`; background refreshes run on its `Worker`."""

    def __init__(self, core: ResolverCore, worker: Worker, *, timeout: float) -> None:
        self.core = core
        self.worker = worker
        self.client = httpx.Client(timeout=timeout, trust_env=False, verify=tls_context())

    def resolve(self, host: str) -> list[str]:
        """Ranked addresses of `host` (see the module docstring).

        Raises:
            ResolveError: no resolver answered and no answer is left in the cache.
        """
        core = self.core
        host = normalize_host(host)
        addrs, refresh = core.cached(host, core.clock())
        if addrs is not None:
            if refresh:
                self.worker.submit(f"dns:{host}", lambda: self._fetch([host]))
            return addrs
        answers, why = self._fetch([host])
        if host in answers:
            return core.ranked(answers[host], core.clock())
        return self._fallback(host, why)

    def prefetch(self, hosts: Sequence[str]) -> None:
        """Resolve `hosts` in the background (HTTPDNS only), to have them cached."""
        todo = [normalize_host(h) for h in hosts if normalize_host(h) not in self.core.static]
        if todo:
            self.worker.submit("dns-prefetch", lambda: self._fetch(todo))

    def _fetch(self, hosts: Sequence[str]) -> tuple[dict[str, Answer], str]:
        core = self.core
        found: dict[str, Answer] = {}
        why = "no httpdns endpoint"
        for batch in _batches(hosts):
            urls = core.httpdns_order(core.clock())
            if not urls and core.urls:
                why = "httpdns backing off after failures"
            for url in urls:
                try:
                    r = self.client.get(f"{url}/d", params={"host": ",".join(batch)})
                    if r.status_code != 200:
                        raise ValueError(f"HTTP {r.status_code} {r.text[:200]!r}")
                    answers = core.parse(r.content, core.clock())
                except (httpx.HTTPError, ValueError) as e:
                    why = f"{type(e).__name__}: {e}"
                    core.httpdns_failed(url, why)
                    continue
                core.httpdns_ok(url)
                for answer in answers.values():
                    core.store(answer)
                found.update(answers)
                why = "httpdns has no address for it"
                break
            else:
                if urls:
                    core.httpdns_all_failed(core.clock())
        return found, why

    def _fallback(self, host: str, why: str) -> list[str]:
        core = self.core
        if core.fallback is not None:
            try:
                answer = core.from_fallback(host, core.fallback(host), core.clock())
            except (OSError, UnicodeError) as e:
                why += f"; fallback resolver: {e}"
            else:
                if answer is not None:
                    core.store(answer)
                    return core.ranked(answer, core.clock())
                why += "; fallback resolver: no address"
        stale = core.stale(host, core.clock())
        if stale is not None:
            return stale
        raise core.failed_all(host, why)

    def close(self) -> None:
        self.client.close()


class AsyncResolver:
    """The asyncio twin of `SyncResolver`."""

    def __init__(self, core: ResolverCore, worker: AsyncWorker, *, timeout: float) -> None:
        self.core = core
        self.worker = worker
        self.client = httpx.AsyncClient(timeout=timeout, trust_env=False, verify=tls_context())

    async def resolve(self, host: str) -> list[str]:
        """Ranked addresses of `host`; raises ResolveError like `SyncResolver.resolve`."""
        core = self.core
        host = normalize_host(host)
        addrs, refresh = core.cached(host, core.clock())
        if addrs is not None:
            if refresh:
                self.worker.submit(f"dns:{host}", lambda: self._fetch_only([host]))
            return addrs
        answers, why = await self._fetch([host])
        if host in answers:
            return core.ranked(answers[host], core.clock())
        return await self._fallback(host, why)

    def prefetch(self, hosts: Sequence[str]) -> None:
        todo = [normalize_host(h) for h in hosts if normalize_host(h) not in self.core.static]
        if todo:
            self.worker.submit("dns-prefetch", lambda: self._fetch_only(todo))

    async def _fetch_only(self, hosts: Sequence[str]) -> None:
        await self._fetch(hosts)

    async def _fetch(self, hosts: Sequence[str]) -> tuple[dict[str, Answer], str]:
        core = self.core
        found: dict[str, Answer] = {}
        why = "no httpdns endpoint"
        for batch in _batches(hosts):
            urls = core.httpdns_order(core.clock())
            if not urls and core.urls:
                why = "httpdns backing off after failures"
            for url in urls:
                try:
                    r = await self.client.get(f"{url}/d", params={"host": ",".join(batch)})
                    if r.status_code != 200:
                        raise ValueError(f"HTTP {r.status_code} {r.text[:200]!r}")
                    answers = core.parse(r.content, core.clock())
                except (httpx.HTTPError, ValueError) as e:
                    why = f"{type(e).__name__}: {e}"
                    core.httpdns_failed(url, why)
                    continue
                core.httpdns_ok(url)
                for answer in answers.values():
                    core.store(answer)
                found.update(answers)
                why = "httpdns has no address for it"
                break
            else:
                if urls:
                    core.httpdns_all_failed(core.clock())
        return found, why

    async def _fallback(self, host: str, why: str) -> list[str]:
        core = self.core
        if core.fallback is not None:
            try:
                addrs = await asyncio.to_thread(core.fallback, host)
                answer = core.from_fallback(host, addrs, core.clock())
            except (OSError, UnicodeError) as e:
                why += f"; fallback resolver: {e}"
            else:
                if answer is not None:
                    core.store(answer)
                    return core.ranked(answer, core.clock())
                why += "; fallback resolver: no address"
        stale = core.stale(host, core.clock())
        if stale is not None:
            return stale
        raise core.failed_all(host, why)

    async def aclose(self) -> None:
        await self.client.aclose()
