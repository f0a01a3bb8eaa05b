"""`zonegate httpdns`: the GSLB's decisions over HTTP, with the real client IP.

Theory of operation
-------------------
One process serves HTTP/1.1 (keep-alive, pipelining) on `dns.httpdns_listen` (or
`--listen`), built on an asyncio Protocol and httptools: a request is parsed, decided
and answered inside `data_received`, with no task per request. Decisions come from the
same pure policy chain as `zonegate dns` (`dns.policy.decide`) over the same zone
health (`dns.zonehealth.ZoneProber`); the process probes every zone once before it
listens, so no answer is given before health is known.

    GET /d?host=a.example.test[,b.example.test]&type=A|AAAA[&device_id=ID][&ip=ADDR]
          [&account=NAME&expiry=UNIX&sig=HEX]

    200 {"client_ip": "192.0.2.7", "client_ip_source": "socket",
         "answers": [{"host": "a.example.test", "type": "A", "ips": ["10.0.0.1"],
                      "ttl": 30, "zone": "changping", "zones": ["changping"]}]}

Per request, in order:

1. Parameters. `host`: 1 to MAX_HOSTS DNS names, comma separated. `type`: A
   (default) or AAAA. `device_id`: at most MAX_DEVICE_ID characters. Unknown
   parameters are ignored (newer SDKs may send more); a parameter given twice, a
   bad value or non-UTF-8 percent-encoding is 400 with {"error": reason}.
2. Client IP (`client_ip_source` says which was used):
   - "socket": the TCP peer's address, when the peer is not in `dns.trusted_proxies`;
   - "ip": the `ip` parameter, only when the peer is a trusted proxy (an untrusted
     peer's `ip` is ignored and a warning in the answer says so);
   - "x-forwarded-for": when the peer is trusted and sent X-Forwarded-For (several
     headers are joined), the last hop that is not a trusted proxy, walking from the
     right; when every hop is trusted, the leftmost; an entry that is not an IP
     address stops the walk and the hop to its right (or the peer) is used.
3. Rate limit (`dns.rate_limit` requests per second per client IP, a token bucket
   with a burst of one second's worth): over it, 429 with Retry-After (seconds).
4. Signature (see `httpdns.sign`): required when `dns.require_signature`, checked
   whenever `sig` is present. Missing or malformed parameters, an unknown account, an
   expired request, an expiry more than `dns.signature_max_validity` (default 1 h)
   ahead or a bad signature: 403 with {"error": reason}.
5. Answers, one per host:
   - With `device_id` and a split map for the host (`split[host]`), the device's
     zone is `balance.shard.zone_for(device_id, split)` (the hash every SDK uses) and
     the name resolved is that zone's `domain` (api-cp.example.test); the answer
     carries "split": {"zone", "domain", "shard"}. Without a device_id or split map
     the host itself is resolved.
   - The name goes through `dns.policy.decide` (CNAMEs to other GSLB names are
     followed, up to MAX_CNAME_CHAIN); a name that is not a GSLB name is looked up in
     the static A/AAAA records of `dns.domains`. "zone" is the first zone answered
     ("zones" lists them all); "reason" is present when the answer is a fallback
     (every candidate zone is down) or empty.
   - An unknown name gets "ips": [] and "reason": "unknown name".

Other endpoints: `/healthz` (200 "ok"), `/metrics` (Prometheus: requests by status,
decisions by zone, rate-limited and refused requests, zone health) and `/status`
(JSON: config version, zone states, counters). SIGHUP reloads the topology file and
keeps the last good one when the new one is invalid; SIGTERM/SIGINT stop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import json
import logging
import math
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast
from urllib.parse import parse_qsl

import httptools
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from zonegate.balance.shard import shard_of, zone_for
from zonegate.control.follow import NO_CONTROL, ControlOptions, start_following
from zonegate.control.model import DesiredState
from zonegate.dns.model import ClientInfo, Decision, ZoneState
from zonegate.dns.policy import GslbTable, SelectionState, compile_gslb, decide
from zonegate.dns.zoneadmin import overlay_admin
from zonegate.dns.zonehealth import ZoneHealthCollector, ZoneProber
from zonegate.errors import ConfigErrors, bug
from zonegate.httpdns.sign import verify
from zonegate.topology.load import load_topology
from zonegate.topology.schema import SplitMap
from zonegate.topology.snapshot import Snapshot
from zonegate.topology.types import HostPort, parse_hostport
from zonegate.topology.validate import is_dns_name

log = logging.getLogger("zonegate.httpdns")

__all__ = [
    "MAX_CNAME_CHAIN",
    "MAX_HOSTS",
    "HttpdnsApp",
    "RateLimiter",
    "client_address",
    "run_httpdns",
]

MAX_HOSTS = 16
"""Hosts one request may ask for."""
MAX_DEVICE_ID = 256
"""Longest DeviceID, in characters."""
MAX_CNAME_CHAIN = 8
"""CNAMEs followed from one host before giving up."""
MAX_URL = 4096
MAX_HEADER_BYTES = 16 * 1024
MAX_BODY = 64 * 1024
MAX_CONNECTIONS = 10_000
HEADER_TIMEOUT = 10.0
"""Seconds to receive a whole request head (slowloris defence)."""
IDLE_TIMEOUT = 60.0
"""Seconds a keep-alive connection may stay idle."""
RATE_LIMIT_CLIENTS = 100_000
"""Client buckets kept before idle (full) ones are swept."""

_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}
_JSON = b"application/json"
_TEXT = b"text/plain; charset=utf-8"
_PROM = b"text/plain; version=0.0.4; charset=utf-8"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


# --- pure helpers (no I/O; kept here because only this server uses them) -----------


class RateLimiter:
    """Token buckets per key: `rate` tokens per second, at most `burst` stored.

    Pure: `allow` takes `now`. Memory is bounded: past `max_keys` buckets, the full
    ones (idle long enough to have refilled) are dropped, and if that is not enough,
    the oldest half.
    """

    __slots__ = ("_buckets", "burst", "max_keys", "rate")

    def __init__(self, rate: float, burst: float | None = None, max_keys: int = RATE_LIMIT_CLIENTS):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, rate))
        self.max_keys = max_keys
        self._buckets: dict[str, list[float]] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: str, now: float) -> float:
        """Take one token for `key`.

        Returns:
            0.0 when allowed, else the seconds until a token is available.
        """
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.max_keys:
                self._sweep(now)
            self._buckets[key] = [self.burst - 1.0, now]
            return 0.0
        tokens = min(self.burst, b[0] + (now - b[1]) * self.rate)
        b[1] = now
        if tokens >= 1.0:
            b[0] = tokens - 1.0
            return 0.0
        b[0] = tokens
        return (1.0 - tokens) / self.rate

    def _sweep(self, now: float) -> None:
        full = [
            k
            for k, (t, last) in self._buckets.items()
            if t + (now - last) * self.rate >= self.burst
        ]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self.max_keys:
            for k in list(self._buckets)[: len(self._buckets) // 2]:
                del self._buckets[k]


@functools.lru_cache(maxsize=4096)
def _parse_ip(text: str) -> Address | None:
    """An address in canonical form (IPv4-mapped IPv6 as IPv4, zone id dropped)."""
    try:
        ip = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: Address, proxies: tuple[Network, ...]) -> bool:
    return any(ip.version == net.version and ip in net for net in proxies)


def client_address(
    peer: str,
    proxies: tuple[Network, ...],
    forwarded: str | None,
    ip_param: str | None,
) -> tuple[str, str, str | None]:
    """The client IP a request is answered for (rules in the module docstring).

    Args:
        peer: the TCP peer's address.
        proxies: `dns.trusted_proxies`, parsed.
        forwarded: the X-Forwarded-For value(s), joined with commas, or None.
        ip_param: the `ip` query parameter, or None.

    Returns:
        (client ip, source: "socket" | "ip" | "x-forwarded-for", warning or None).

    Raises:
        ValueError: a trusted peer sent an `ip` parameter that is not an IP address.
    """
    peer_ip = _parse_ip(peer)
    if peer_ip is None or not _trusted(peer_ip, proxies):
        shown = str(peer_ip) if peer_ip is not None else peer
        warning = None
        if ip_param is not None:
            warning = f"ip parameter ignored: peer {shown} is not a trusted proxy"
        return shown, "socket", warning
    if ip_param is not None:
        ip = _parse_ip(ip_param)
        if ip is None:
            raise ValueError(f"ip: {ip_param!r} is not an IP address")
        return str(ip), "ip", None
    if forwarded:
        hop: Address = peer_ip
        for entry in reversed(forwarded.split(",")):
            ip = _parse_ip(entry)
            if ip is None:
                break
            hop = ip
            if not _trusted(ip, proxies):
                break
        return str(hop), "x-forwarded-for", None
    return str(peer_ip), "socket", None


def _qualify(name: str, origin: str) -> str:
    if name == "@":
        return origin
    if name.endswith("."):
        return name[:-1].lower()
    return f"{name}.{origin}".lower() if origin else name.lower()


def _static_records(snapshot: Snapshot) -> dict[tuple[str, str], tuple[tuple[str, ...], int]]:
    """(name, 'A' | 'AAAA') -> (addresses, ttl) from the static records of dns.domains."""
    out: dict[tuple[str, str], tuple[list[str], int]] = {}
    for domain_key, domain in snapshot.topology.dns.domains.items():
        origin = domain_key.lower().rstrip(".")
        for key, records in domain.records.items():
            name = _qualify(key, origin)
            for rec in records:
                if rec.type not in ("A", "AAAA"):
                    continue
                ttl = int(rec.ttl if rec.ttl is not None else domain.ttl)
                ips, old_ttl = out.setdefault((name, rec.type), ([], ttl))
                ips.append(rec.value)
                out[(name, rec.type)] = (ips, min(old_ttl, ttl))
    return {k: (tuple(v[0]), v[1]) for k, v in out.items()}


class BadRequest(Exception):
    """A /d request this server refuses; `status` is 400 or 403."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    """What one config version compiles to for this server."""

    snapshot: Snapshot
    table: GslbTable
    splits: Mapping[str, SplitMap]
    static: Mapping[tuple[str, str], tuple[tuple[str, ...], int]]
    proxies: tuple[Network, ...]
    accounts: Mapping[str, bytes]
    require_signature: bool
    signature_max_validity: float
    rate_limit: int

    @classmethod
    def build(cls, snapshot: Snapshot) -> Config:
        topo = snapshot.topology
        dns = topo.dns
        return cls(
            snapshot=snapshot,
            table=compile_gslb(topo),
            splits={k.lower().rstrip("."): v for k, v in topo.split.items()},
            static=_static_records(snapshot),
            proxies=tuple(ipaddress.ip_network(p, strict=False) for p in dns.trusted_proxies),
            accounts={n: a.secret.encode() for n, a in dns.accounts.items()},
            require_signature=dns.require_signature,
            signature_max_validity=dns.signature_max_validity,
            rate_limit=dns.rate_limit,
        )


# --- the application --------------------------------------------------------------


Response = tuple[int, bytes, bytes, tuple[tuple[bytes, bytes], ...]]
"""(status, content type, body, extra headers)."""


class HttpdnsApp:
    """Request handling over a config and a zone prober (synchronous, no I/O).

    Args:
        snapshot: the config in force.
        prober: the zone health prober (its first round already run).
        wall: Unix time, for signature expiry.
        mono: monotonic time, for the rate limiter.
        rng: randomness of weighted picks.
    """

    def __init__(
        self,
        snapshot: Snapshot,
        prober: ZoneProber,
        *,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.prober = prober
        self.wall = wall
        self.mono = mono
        self.rng = rng or random.Random()
        self.selection = SelectionState()
        self.config = Config.build(snapshot)
        self.control: DesiredState | None = None
        """The control plane version followed (`--control`); None: the file alone."""
        self.splits: Mapping[str, SplitMap] = self.config.splits
        """Split maps in force: the control plane's when following one, else the file's."""
        self.limiter: RateLimiter | None = None
        self._set_limiter()
        self.responses: dict[int, int] = {}
        self.decisions: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self.reloads = {"ok": 0, "refused": 0}
        self.listen = ""
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_AppCollector(self))
        self.registry.register(ZoneHealthCollector(prober))

    def _set_limiter(self) -> None:
        rate = self.config.rate_limit
        if rate <= 0:
            self.limiter = None
        elif self.limiter is None or self.limiter.rate != rate:
            self.limiter = RateLimiter(rate)

    def swap(self, snapshot: Snapshot) -> None:
        """Use a new config version (already validated)."""
        self.config = Config.build(snapshot)
        self._set_limiter()
        self._set_splits()

    def apply_control(self, state: DesiredState) -> None:
        """Follow a control plane version: its split maps and zone admin states."""
        self.control = state
        self._set_splits()

    def _set_splits(self) -> None:
        if self.control is None:
            self.splits = self.config.splits
        else:
            self.splits = {k.lower().rstrip("."): v for k, v in self.control.split.items()}

    def zone_states(self) -> Mapping[str, ZoneState]:
        """Probed zone health, with zones the control plane drained or disabled down."""
        states = self.prober.states()
        if self.control is None:
            return states
        return overlay_admin(states, self.control.zones, self.control.version)

    @property
    def version(self) -> int:
        """The version answers are stamped with: the control plane's when following."""
        return self.control.version if self.control is not None else self.config.snapshot.version

    # -- dispatch

    def handle(
        self, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]], peer: str
    ) -> Response:
        """Answer one request: (status, content type, body, extra headers)."""
        try:
            parsed = httptools.parse_url(url)
        except httptools.HttpParserInvalidURLError:
            return self._error(400, "malformed request target")
        path = parsed.path
        if method not in (b"GET", b"HEAD"):
            return self._error(405, "use GET", ((b"Allow", b"GET, HEAD"),))
        if path == b"/d":
            return self._resolve(parsed.query or b"", headers, peer)
        if path == b"/healthz":
            return self._count(200, _TEXT, b"ok\n")
        if path == b"/metrics":
            return self._count(200, _PROM, generate_latest(self.registry))
        if path == b"/status":
            return self._count(200, _JSON, self._status())
        return self._error(404, "not found: try /d?host=NAME, /status, /metrics, /healthz")

    def _count(
        self,
        status: int,
        ctype: bytes,
        body: bytes,
        extra: tuple[tuple[bytes, bytes], ...] = (),
    ) -> Response:
        self.responses[status] = self.responses.get(status, 0) + 1
        return status, ctype, body, extra

    def _error(
        self, status: int, reason: str, extra: tuple[tuple[bytes, bytes], ...] = ()
    ) -> Response:
        body = json.dumps({"error": reason}).encode() + b"\n"
        return self._count(status, _JSON, body, extra)

    def _refuse(self, kind: str) -> None:
        self.refused[kind] = self.refused.get(kind, 0) + 1

    # -- /d

    def _resolve(self, query: bytes, headers: list[tuple[bytes, bytes]], peer: str) -> Response:
        cfg = self.config
        try:
            params = _params(query)
            hosts_text = params.get("host")
            if not hosts_text:
                raise BadRequest("host: missing")
            hosts = [h.strip().lower().rstrip(".") for h in hosts_text.split(",")]
            if len(hosts) > MAX_HOSTS:
                raise BadRequest(f"host: at most {MAX_HOSTS} names")
            for h in hosts:
                if not is_dns_name(h):
                    raise BadRequest(f"host: {h!r} is not a DNS name")
            qtype = params.get("type", "A").upper()
            if qtype not in ("A", "AAAA"):
                raise BadRequest("type: must be A or AAAA")
            device_id = params.get("device_id")
            if device_id is not None and not 0 < len(device_id) <= MAX_DEVICE_ID:
                raise BadRequest(f"device_id: 1 to {MAX_DEVICE_ID} characters")
            forwarded = _forwarded(headers) if cfg.proxies else None
            client_ip, source, warning = client_address(
                peer, cfg.proxies, forwarded, params.get("ip")
            )
        except BadRequest as e:
            self._refuse("bad_request")
            return self._error(e.status, e.reason)
        except ValueError as e:
            self._refuse("bad_request")
            return self._error(400, str(e))

        limiter = self.limiter
        if limiter is not None:
            wait = limiter.allow(client_ip, self.mono())
            if wait > 0:
                self._refuse("rate_limited")
                retry = str(max(1, math.ceil(wait))).encode()
                return self._error(429, "rate limit exceeded", ((b"Retry-After", retry),))

        reason = self._check_signature(params, hosts_text)
        if reason is not None:
            self._refuse(f"signature: {reason}")
            return self._error(403, reason)

        client = ClientInfo(ip=client_ip, device_id=device_id)
        health = self.zone_states()
        answers = [self._answer(h, qtype, client, health) for h in hosts]
        doc: dict[str, Any] = {
            "client_ip": client_ip,
            "client_ip_source": source,
            "answers": answers,
        }
        if warning is not None:
            doc["warnings"] = [warning]
        version = str(self.version).encode()
        return self._count(
            200,
            _JSON,
            json.dumps(doc, separators=(",", ":")).encode(),
            ((b"X-Zonegate-Version", version),),
        )

    def _check_signature(self, params: Mapping[str, str], host: str) -> str | None:
        cfg = self.config
        sig = params.get("sig")
        if sig is None:
            if cfg.require_signature:
                return "signature required: account, expiry and sig parameters"
            return None
        account = params.get("account")
        expiry_text = params.get("expiry")
        if account is None or expiry_text is None:
            return "signed request needs account and expiry"
        if not (expiry_text.isascii() and expiry_text.isdigit()) or len(expiry_text) > 12:
            return "expiry: must be Unix seconds"
        return verify(
            cfg.accounts,
            host,
            int(expiry_text),
            account,
            sig,
            self.wall(),
            cfg.signature_max_validity,
        )

    def _answer(
        self, host: str, qtype: str, client: ClientInfo, health: Mapping[str, ZoneState]
    ) -> dict[str, Any]:
        cfg = self.config
        out: dict[str, Any] = {"host": host, "type": qtype}
        name = host
        if client.device_id is not None:
            split = self.splits.get(host)
            if split is not None:
                found = zone_for(client.device_id, split)
                if found is not None:
                    zone_name, zone = found
                    name = zone.domain.lower().rstrip(".")
                    out["split"] = {
                        "zone": zone_name,
                        "domain": name,
                        "shard": shard_of(client.device_id, split.sharding),
                    }
        chain: list[str] = []
        decision: Decision | None = None
        for _ in range(MAX_CNAME_CHAIN + 1):
            decision = decide(name, qtype, client, cfg.table, health, self.selection, self.rng)
            if decision is None or decision.cname is None:
                break
            name = decision.cname.lower().rstrip(".")
            if name in chain or len(chain) >= MAX_CNAME_CHAIN:
                out.update(
                    ips=[], ttl=0, zone=None, zones=[], reason="CNAME loop or chain too long"
                )
                out["cname"] = chain
                self._decided("none")
                return out
            chain.append(name)
        if chain:
            out["cname"] = chain
        if decision is None:
            static = cfg.static.get((name, qtype))
            if static is None:
                out.update(ips=[], ttl=0, zone=None, zones=[], reason="unknown name")
                self._decided("none")
                return out
            ips, ttl = static
            out.update(ips=list(ips), ttl=ttl, zone=None, zones=[])
            self._decided("static")
            return out
        zones = list(decision.zones)
        out.update(
            ips=list(decision.addresses),
            ttl=decision.ttl,
            zone=zones[0] if zones else None,
            zones=zones,
        )
        if decision.fallback:
            out["reason"] = "fallback: no candidate zone is up"
            self._decided("fallback")
        elif not decision.addresses:
            out["reason"] = decision.steps[-1].why if decision.steps else "no address"
            self._decided("none")
        else:
            self._decided(zones[0] if zones else "none")
        return out

    def _decided(self, zone: str) -> None:
        self.decisions[zone] = self.decisions.get(zone, 0) + 1

    # -- /status

    def _status(self) -> bytes:
        cfg = self.config
        states = self.zone_states()
        doc = {
            "version": self.version,
            "file_version": cfg.snapshot.version,
            "source": cfg.snapshot.source,
            "listen": self.listen,
            "zones": {n: dataclasses.asdict(s) for n, s in states.items()},
            "zones_without_health_check": self.prober.unchecked,
            "responses": {str(k): v for k, v in sorted(self.responses.items())},
            "decisions": dict(sorted(self.decisions.items())),
            "refused": dict(sorted(self.refused.items())),
            "reloads": self.reloads,
            "rate_limit": cfg.rate_limit,
            "require_signature": cfg.require_signature,
        }
        return json.dumps(doc, indent=2).encode() + b"\n"


def _params(query: bytes) -> dict[str, str]:
    try:
        text = query.decode("ascii")
        pairs = parse_qsl(
            text, keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=32
        )
    except UnicodeDecodeError:
        raise BadRequest("parameters must be ASCII, percent-encoded UTF-8") from None
    except ValueError as e:  # too many fields
        raise BadRequest(str(e)) from None
    out: dict[str, str] = {}
    for k, v in pairs:
        if k in out:
            raise BadRequest(f"{k}: given twice")
        out[k] = v
    return out


def _forwarded(headers: list[tuple[bytes, bytes]]) -> str | None:
    values = [v for k, v in headers if len(k) == 15 and k.lower() == b"x-forwarded-for"]
    if not values:
        return None
    return b",".join(values).decode("latin-1")


class _AppCollector:
    def __init__(self, app: HttpdnsApp) -> None:
        self.app = app

    def collect(self) -> Iterator[Any]:
        app = self.app
        responses = CounterMetricFamily(
            "zonegate_httpdns_responses", "HTTP responses by status", labels=["status"]
        )
        for status, n in sorted(app.responses.items()):
            responses.add_metric([str(status)], n)
        decisions = CounterMetricFamily(
            "zonegate_httpdns_decisions",
            "Host answers by first zone (fallback, static, none for the others)",
            labels=["zone"],
        )
        for zone, n in sorted(app.decisions.items()):
            decisions.add_metric([zone], n)
        refused = CounterMetricFamily(
            "zonegate_httpdns_refused", "Requests refused, by reason", labels=["reason"]
        )
        for reason, n in sorted(app.refused.items()):
            refused.add_metric([reason], n)
        reloads = CounterMetricFamily(
            "zonegate_httpdns_reloads", "Config reloads by outcome", labels=["outcome"]
        )
        for outcome, n in app.reloads.items():
            reloads.add_metric([outcome], n)
        version = GaugeMetricFamily("zonegate_config_version", "Version of the topology in force")
        version.add_metric([], app.config.snapshot.version)
        clients = GaugeMetricFamily(
            "zonegate_httpdns_rate_limit_clients", "Client IPs with a rate-limit bucket"
        )
        clients.add_metric([], len(app.limiter) if app.limiter is not None else 0)
        yield from (responses, decisions, refused, reloads, version, clients)


# --- the HTTP/1.1 connection ------------------------------------------------------


class _Server:
    """Shared state of the connections: the app, open connections, the sweeper."""

    def __init__(self, app: HttpdnsApp) -> None:
        self.app = app
        self.connections: set[HttpdnsConnection] = set()
        self.now = time.monotonic()


class _Reject(Exception):
    """Raised in a parser callback to stop parsing; the status is on the connection."""


class HttpdnsConnection(asyncio.Protocol):
    """One client connection: httptools callbacks answer each request inline."""

    __slots__ = (
        "body_bytes",
        "closing",
        "deadline",
        "error",
        "header_bytes",
        "headers",
        "parser",
        "peer",
        "server",
        "transport",
        "url",
    )

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.body_bytes = 0
        self.peer = ""
        self.closing = False
        self.deadline = math.inf
        self.error: tuple[int, str] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        server = self.server
        server.connections.add(self)
        if len(server.connections) > MAX_CONNECTIONS:
            self.transport.abort()
            return
        self.deadline = server.now + IDLE_TIMEOUT

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)

    def pause_writing(self) -> None:
        # A client that pipelines and does not read: stop reading its requests until
        # it has taken our answers, so its backlog cannot grow without bound.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "upgrade not supported")
        except httptools.HttpParserCallbackError as e:
            status, reason = self.error or (400, f"malformed request: {e}")
            self._fail(status, reason)
        except httptools.HttpParserError as e:
            self._fail(400, f"malformed request: {e}")

    # parser callbacks

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.header_bytes = 0
        self.body_bytes = 0
        self.deadline = self.server.now + HEADER_TIMEOUT

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_URL:
            self.error = (414, "request target too long")
            raise _Reject

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > MAX_HEADER_BYTES:
            self.error = (431, "request header block too large")
            raise _Reject
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.deadline = self.server.now + IDLE_TIMEOUT

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > MAX_BODY:
            self.error = (413, "request body too large")
            raise _Reject

    def on_message_complete(self) -> None:
        transport = self.transport
        if transport is None or self.closing:
            return
        parser = self.parser
        method = parser.get_method()
        keep_alive = parser.should_keep_alive()
        app = self.server.app
        try:
            status, ctype, body, extra = app.handle(method, self.url, self.headers, self.peer)
        except Exception as exc:
            bug("httpdns request failed", exc)
            status, ctype, body, extra = app._error(500, "internal error")
        head = [
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            b"Cache-Control: no-store\r\n"
            % (status, _REASONS.get(status, b"Error"), ctype, len(body))
        ]
        for k, v in extra:
            head.append(b"%s: %s\r\n" % (k, v))
        if not keep_alive:
            head.append(b"Connection: close\r\n")
        head.append(b"\r\n")
        if method != b"HEAD":
            head.append(body)
        transport.write(b"".join(head))
        self.deadline = self.server.now + IDLE_TIMEOUT
        if not keep_alive:
            self.closing = True
            transport.close()

    def _fail(self, status: int, reason: str) -> None:
        transport = self.transport
        if transport is None:
            return
        app = self.server.app
        _, ctype, body, _ = app._error(status, reason)
        transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s"
            % (status, _REASONS.get(status, b"Error"), ctype, len(body), body)
        )
        self.closing = True
        transport.close()


# --- process ----------------------------------------------------------------------


def _listen_address(text: str) -> HostPort:
    """parse_hostport, plus port 0 (any free port; the ready line says which)."""
    if text.endswith(":0"):
        found = parse_hostport(text[:-2] + ":1")
        return HostPort(found.host, 0)
    return parse_hostport(text)


def _setup_logging(level: str) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=getattr(logging, level.upper(), logging.INFO),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )


def run_httpdns(
    path: str,
    listen: str | None = None,
    *,
    log_level: str = "INFO",
    control: ControlOptions = NO_CONTROL,
) -> int:
    """Run `zonegate httpdns FILE [--listen HOST:PORT]` until SIGTERM/SIGINT.

    Args:
        path: the topology file.
        listen: HOST:PORT to serve on; default `dns.httpdns_listen`. Port 0 picks a
            free port (printed on the ready line).
        log_level: logging level when logging is not configured yet.
        control: the control plane to follow for split maps and zone admin states.

    Returns:
        The exit status: 0 after a clean stop, 1 for a bad topology, 2 for a bad or
        missing listen address.
    """
    import uvloop

    _setup_logging(log_level)
    try:
        snapshot = Snapshot(version=1, topology=load_topology(path), source=path)
    except ConfigErrors as e:
        print(e, file=sys.stderr)
        return 1
    try:
        if listen is not None:
            address = _listen_address(listen)
        elif snapshot.topology.dns.httpdns_listen is not None:
            address = snapshot.topology.dns.httpdns_listen
        else:
            print(
                f"zonegate httpdns: {path}: no dns.httpdns_listen; pass --listen HOST:PORT",
                file=sys.stderr,
            )
            return 2
    except ValueError as e:
        print(f"zonegate httpdns: --listen: {e}", file=sys.stderr)
        return 2
    return uvloop.run(_serve(path, snapshot, address, control))


async def _serve(path: str, snapshot: Snapshot, address: HostPort, control: ControlOptions) -> int:
    loop = asyncio.get_running_loop()

    # The prober logs flips itself; answers read `states()` on every request.
    prober = ZoneProber(snapshot.topology)
    for zone in prober.unchecked:
        log.warning("zone %s has no health check: always answered as up", zone)
    await prober.first_round()
    prober.start()
    app = HttpdnsApp(snapshot, prober)
    follower = await start_following(control, app.apply_control)
    server_state = _Server(app)
    try:
        server = await loop.create_server(
            lambda: HttpdnsConnection(server_state),
            address.host,
            address.port,
            reuse_address=True,
            backlog=1024,
        )
    except OSError as e:
        print(f"zonegate httpdns: cannot listen on {address}: {e}", file=sys.stderr)
        if follower is not None:
            await follower.stop()
        await prober.stop()
        return 2
    sock = server.sockets[0].getsockname()
    bound = HostPort(sock[0], sock[1])
    app.listen = str(bound)

    async def sweep() -> None:
        while True:
            await asyncio.sleep(1.0)
            now = server_state.now = time.monotonic()
            for conn in [c for c in server_state.connections if c.deadline < now]:
                if conn.transport is not None:
                    conn.transport.close()

    sweeper = loop.create_task(sweep())
    lock = asyncio.Lock()

    async def reload() -> None:
        async with lock:
            current = app.config.snapshot
            try:
                topo = await asyncio.to_thread(load_topology, path)
            except ConfigErrors as e:
                app.reloads["refused"] += 1
                log.error("reload refused, keeping version %d:\n%s", current.version, e)
                return
            except Exception as e:
                app.reloads["refused"] += 1
                log.error("reload failed, keeping version %d: %s", current.version, e)
                return
            new = Snapshot(version=current.version + 1, topology=topo, source=path)
            fresh = prober.update(topo)
            await prober.refresh(fresh)
            app.swap(new)
            app.reloads["ok"] += 1
            listen = topo.dns.httpdns_listen
            if listen is not None and listen != address and address.port != 0:
                log.warning("dns.httpdns_listen changed to %s: restart to move", listen)
            log.info("reloaded %s: version %d", path, new.version)

    stop = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    def on_hup() -> None:
        t = loop.create_task(reload())
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    states = ", ".join(f"{n} {'up' if s.up else 'down'}" for n, s in app.zone_states().items())
    print(
        f"zonegate httpdns ready: listening on {bound}, version {app.version}, zones {states}",
        flush=True,
    )
    await stop.wait()
    log.info("stopping")
    server.close()
    for conn in list(server_state.connections):
        if conn.transport is not None:
            conn.transport.close()
    sweeper.cancel()
    for t in list(tasks):
        t.cancel()
    await asyncio.gather(sweeper, *tasks, return_exceptions=True)
    if follower is not None:
        await follower.stop()
    await prober.stop()
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m zonegate.httpdns.api FILE [--listen HOST:PORT]` (same as the CLI)."""
    import argparse

    p = argparse.ArgumentParser(prog="zonegate httpdns", description=__doc__.split("\n")[0])
    p.add_argument("file", help="topology YAML file")
    p.add_argument("--listen", default=None, help="HOST:PORT (default: dns.httpdns_listen)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = p.parse_args(argv)
    return run_httpdns(args.file, args.listen, log_level=args.log_level)


if __name__ == "__main__":
    sys.exit(main())
