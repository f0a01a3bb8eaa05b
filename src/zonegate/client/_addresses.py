"""Resolved addresses: TTL cache decisions and the ranking of a zone's addresses.

Theory of operation
-------------------
The HTTPDNS client (`_httpdns`) caches one `Answer` per zone domain. Its age decides
what a lookup does::

    0 ──────── refresh_at ──────────── expires ─────────── expires + max_stale ──►
      FRESH        │ REFRESH: serve it, fetch       │ STALE: fetch now; if no         EXPIRED:
      serve it     │ a new one in the background    │ resolver answers, serve it      gone
                   refresh_at = fetched + ttl * refresh_ahead

so a domain in steady use is refreshed before it expires and a lookup never waits
for HTTPDNS, while an HTTPDNS outage is bridged first by the system resolver, then by
the last answer (for `max_stale` seconds).

A zone domain may resolve to several addresses (VIPs of the zone). `AddressBook`
remembers what happened to each and `rank` orders them, best first:

1. addresses that failed recently (`penalty` seconds, and no success since) go last;
2. then by recent failure rate: failures / outcomes, both decayed with half-life
   `half_life` (so an address that failed a minute ago but works now recovers),
   compared in steps of `rate_step` so noise does not reorder them;
3. then the most recent success first (a warm connection is likely still there);
4. then more successes (decayed) first;
5. then the resolver's order (stable).

Pure: `now` (monotonic seconds) is passed in.
"""

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["AddressBook", "Answer", "CachePolicy", "Freshness", "RankPolicy"]


class Freshness(enum.Enum):
    """What a cached answer is good for at a given time."""

    FRESH = "fresh"
    REFRESH = "refresh"
    """Still valid; time to fetch a new one in the background."""
    STALE = "stale"
    """Expired: fetch now; serve it only if no resolver answers."""
    EXPIRED = "expired"
    """Too old to serve at all."""


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """TTL handling of the HTTPDNS cache.

    Attributes:
        min_ttl: TTLs below this are raised to it (seconds, >= 0; default 1).
        max_ttl: TTLs above this are lowered to it (>= min_ttl; default 3600).
        refresh_ahead: share of the TTL after which a background refresh starts
            (0 < x <= 1; default 0.75).
        max_stale: seconds past expiry an answer is still served when no resolver
            answers (>= 0; default 300).
        fallback_ttl: TTL of an answer from the system resolver, which tells none
            (>= min_ttl; default 10): short, so HTTPDNS is asked again soon.
    """

    min_ttl: float = 1.0
    max_ttl: float = 3600.0
    refresh_ahead: float = 0.75
    max_stale: float = 300.0
    fallback_ttl: float = 10.0

    def __post_init__(self) -> None:
        if self.min_ttl < 0 or self.max_ttl < self.min_ttl:
            raise ValueError("need 0 <= min_ttl <= max_ttl")
        if not 0.0 < self.refresh_ahead <= 1.0:
            raise ValueError("refresh_ahead must be in (0, 1]")
        if self.max_stale < 0:
            raise ValueError("max_stale must be >= 0")
        if self.fallback_ttl < self.min_ttl:
            raise ValueError("fallback_ttl must be >= min_ttl")

    def clamp(self, ttl: float) -> float:
        """The TTL the cache uses for an answer that said `ttl`."""
        if math.isnan(ttl):
            return self.min_ttl
        return min(self.max_ttl, max(self.min_ttl, ttl))


@dataclass(frozen=True, slots=True)
class Answer:
    """One cached resolution of a name.

    Attributes:
        host: the name.
        addresses: IP addresses (or `ip:port` / `[v6]:port` for static overrides),
            in the resolver's order.
        fetched: when it was fetched (monotonic seconds).
        ttl: the TTL after `CachePolicy.clamp`.
        source: "httpdns", "system" or "static".
    """

    host: str
    addresses: tuple[str, ...]
    fetched: float
    ttl: float
    source: str

    def freshness(self, now: float, policy: CachePolicy) -> Freshness:
        """What this answer is good for at `now` (see the module docstring)."""
        age = now - self.fetched
        if age < self.ttl * policy.refresh_ahead:
            return Freshness.FRESH
        if age < self.ttl:
            return Freshness.REFRESH
        if age < self.ttl + policy.max_stale:
            return Freshness.STALE
        return Freshness.EXPIRED


@dataclass(frozen=True, slots=True)
class RankPolicy:
    """How `AddressBook.rank` orders addresses.

    Attributes:
        penalty: seconds a failed address (no success since) goes last (>= 0; 10).
        half_life: half-life of the decayed success and failure counts (> 0; 30 s).
        rate_step: failure rates are compared in steps of this size (> 0; 0.1).
        max_addresses: addresses remembered; the least recently used are forgotten.
    """

    penalty: float = 10.0
    half_life: float = 30.0
    rate_step: float = 0.1
    max_addresses: int = 1024

    def __post_init__(self) -> None:
        if self.penalty < 0 or self.half_life <= 0 or self.rate_step <= 0:
            raise ValueError("need penalty >= 0, half_life > 0, rate_step > 0")
        if self.max_addresses < 1:
            raise ValueError("max_addresses must be >= 1")


class _Record:
    __slots__ = ("failures", "last_failure", "last_ok", "last_success", "stamp", "successes")

    def __init__(self, now: float) -> None:
        self.successes = 0.0
        self.failures = 0.0
        self.stamp = now
        self.last_success: float | None = None
        self.last_failure: float | None = None
        self.last_ok = True

    def decay(self, now: float, half_life: float) -> None:
        if now > self.stamp:
            factor = 0.5 ** ((now - self.stamp) / half_life)
            self.successes *= factor
            self.failures *= factor
            self.stamp = now


class AddressBook:
    """Outcome history per address, and the ranking it gives (module docstring).

    Args:
        policy: the ranking policy.
    """

    def __init__(self, policy: RankPolicy | None = None) -> None:
        self.policy = policy or RankPolicy()
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def record(self, address: str, ok: bool, now: float) -> None:
        """Remember that a request to `address` succeeded (`ok`) or failed at `now`."""
        rec = self._records.get(address)
        if rec is None:
            rec = self._records[address] = _Record(now)
            while len(self._records) > self.policy.max_addresses:
                self._records.popitem(last=False)
        else:
            self._records.move_to_end(address)
        rec.decay(now, self.policy.half_life)
        rec.last_ok = ok
        if ok:
            rec.successes += 1.0
            rec.last_success = now
        else:
            rec.failures += 1.0
            rec.last_failure = now

    def failure_rate(self, address: str, now: float) -> float:
        """Decayed failures / decayed outcomes (0.0 for an unknown address)."""
        rec = self._records.get(address)
        if rec is None:
            return 0.0
        rec.decay(now, self.policy.half_life)
        total = rec.successes + rec.failures
        return rec.failures / total if total > 0 else 0.0

    def rank(self, addresses: Sequence[str], now: float) -> list[str]:
        """`addresses` best first (module docstring); duplicates are dropped.

        Args:
            addresses: in the resolver's order.
            now: monotonic seconds (>= the times recorded).

        Returns:
            A permutation of the distinct addresses.
        """
        p = self.policy
        keyed = []
        for index, address in enumerate(dict.fromkeys(addresses)):
            rec = self._records.get(address)
            if rec is None:
                keyed.append(((0, 0, math.inf, 0.0, index), address))
                continue
            rec.decay(now, p.half_life)
            failed_recently = (
                not rec.last_ok
                and rec.last_failure is not None
                and now - rec.last_failure < p.penalty
            )
            total = rec.successes + rec.failures
            rate = rec.failures / total if total > 0 else 0.0
            step = math.floor(rate / p.rate_step + 1e-9)
            recency = -rec.last_success if rec.last_success is not None else math.inf
            keyed.append(((int(failed_recently), step, recency, -rec.successes, index), address))
        keyed.sort(key=lambda kv: kv[0])
        return [a for _, a in keyed]
