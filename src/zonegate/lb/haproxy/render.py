"""haproxy.cfg from the topology (pure): `render_config(snapshot, zone, paths)`.

One config per zone LB, written under the LB's state directory (never /etc). The
names follow `model.py`: a frontend `fe_<listener>` per listener of the zone, a
backend `be_<pool>` per pool the zone serves (its routes' pools and their backups),
one server per backend named by the backend's id, and in the backend of a routed pool
that has a backup, one spill server `spill:<backup>:<id>` per backend of the backup
(weight 0 here: the spill plan gives them weight at runtime). A pool reached only as
a backup gets no spill servers: a spilled request never spills a second hop. A pool
with active checks also gets one unchecked panic twin `panic:<id>` per backend, in
maintenance (`disabled`) until the spill plan says panic.

What maps to what (docs/lb.md "Engines" has the table for users):

- routes -> `use_backend` rules in the builtin router's order: exact hosts (longest
  path prefix first), then `*.suffix` hosts (longest suffix first), then host-less
  routes; no match -> `be__no_route`, which answers 404;
- `capacity` with a backup -> `use_backend be_<backup>` when `be_conn` reaches it,
  before the pool's own rule;
- balance -> roundrobin (round_robin with equal weights, weighted), random,
  leastconn, random(2) (least_load), `hash <expr>` + `hash-type consistent` +
  `hash-balance-factor` (hash);
- health.active -> `check` with inter/rise/fall, `timeout check`, `option httpchk`
  + `http-check` send/expect; slow_start -> `slowstart`; health.passive ->
  `observe layer7|layer4 error-limit N on-error mark-down`; spill servers `track` the
  backup pool's servers, so one check decides for both;
- version header -> `http-after-response set-header` from the version map, so
  HAProxy's own 404/502/503/504 carry it and `set map` changes it without a reload;
- timeouts, limits, forwarding headers and short `text/plain` error bodies as the
  built-in proxy writes them;
- what the built-in parser refuses and HAProxy's would forward -> `http-request deny`
  rules first in each http frontend, with the built-in status and words (_refusals).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath

from zonegate.lb.haproxy.capabilities import zone_pools
from zonegate.lb.haproxy.model import (
    VERSION_KEY,
    VERSION_MAP,
    WEIGHT_MAX,
    backend_name,
    frontend_name,
    panic_server_name,
    spill_server_name,
)
from zonegate.lb.http1 import REASONS
from zonegate.topology.schema import Backend, Listener, Pool, Route
from zonegate.topology.snapshot import Snapshot
from zonegate.topology.types import HostPort, StatusRange

NO_ROUTE_BACKEND = "be__no_route"
"""Answers 404 (no pool name can produce it: names never start with '_')."""

VIA = "1.1 zonegate"
"""The Via entry the built-in proxy adds (lb/worker.py)."""

SOCKET_PATH_MAX = 97
"""Longest unix socket path HAProxy binds: sun_path is 108 bytes with the NUL, and
HAProxy keeps 10 for the temporary name it binds first (`<path>.<pid>.tmp`)."""

_SAFE_PATH = re.compile(r"[A-Za-z0-9_./@+-]+")
_MAXREWRITE = 1024  # HAProxy's tune.maxrewrite default for 16 KiB buffers and up
_ERRORS = {
    400: "bad request",
    404: "no route for this host and path",
    408: "request header timeout",
    500: "internal error",
    502: "upstream connection failed",
    503: "no backend available",
    504: "upstream timeout",
}


SERVER_STATE_EMPTY = "1\n"
"""A server-state file with no server (its format version line): what the shell
writes when the file is missing, as HAProxy warns about a missing or empty one."""


@dataclass(frozen=True, slots=True)
class HaproxyPaths:
    """Where one LB's HAProxy keeps its files, all inside `state_dir`.

    Before `haproxy -c` and every start or reload the shell writes, besides the
    config: the version map (`version_map_text`), the server-state file when it is
    missing (`SERVER_STATE_EMPTY`), and the TLS bundles (`tls_bundles`).
    """

    state_dir: PurePath
    stats_socket: PurePath
    master_socket: PurePath
    server_state_file: PurePath
    version_map: PurePath

    def __post_init__(self) -> None:
        for field in ("state_dir", "stats_socket", "master_socket", "server_state_file"):
            value = str(getattr(self, field))
            if not _SAFE_PATH.fullmatch(value):
                raise ValueError(
                    f"{field} {value!r}: use letters, digits and _ . / @ + - only "
                    "(the path is written into haproxy.cfg)"
                )
        if not _SAFE_PATH.fullmatch(str(self.version_map)):
            raise ValueError(f"version_map {str(self.version_map)!r}: unsafe characters")
        for field in ("stats_socket", "master_socket"):
            size = len(str(getattr(self, field)).encode())
            if size > SOCKET_PATH_MAX:
                raise ValueError(
                    f"{field} is {size} bytes long, a unix socket path takes at most "
                    f"{SOCKET_PATH_MAX}: choose a shorter state directory"
                )

    @classmethod
    def in_dir(cls, state_dir: str | PurePath) -> HaproxyPaths:
        """The standard names inside `state_dir` (haproxy.sock, master.sock,
        server-state, version.map)."""
        d = PurePath(state_dir)
        return cls(d, d / "haproxy.sock", d / "master.sock", d / "server-state", d / VERSION_MAP)

    @property
    def config_file(self) -> PurePath:
        return self.state_dir / "haproxy.cfg"

    @property
    def pid_file(self) -> PurePath:
        return self.state_dir / "haproxy.pid"

    def tls_bundle(self, listener: str) -> PurePath:
        """The PEM file (certificate chain then key) HAProxy loads for a TLS listener;
        the shell writes it from the listener's `tls.certificate` and `tls.key`."""
        return self.state_dir / "tls" / f"{listener}.pem"


def version_map_text(version: int) -> str:
    """The content of the version map file for config version `version`."""
    return f"{VERSION_KEY} {version}\n"


def tls_bundles(snapshot: Snapshot, zone: str, paths: HaproxyPaths) -> dict[PurePath, list[str]]:
    """The PEM files the shell writes before starting HAProxy: bundle -> the files to
    concatenate into it (certificate, then key), for each TLS listener of the zone.

    A relative `tls.certificate` or `tls.key` is relative to the topology file's
    directory (when the snapshot came from a file, not from the control plane)."""
    source = snapshot.source
    base = None if "://" in source else PurePath(source).parent

    def where(path: str) -> str:
        return path if base is None or PurePath(path).is_absolute() else str(base / path)

    out: dict[PurePath, list[str]] = {}
    for name, listener in snapshot.topology.listeners.items():
        if listener.zone == zone and listener.tls is not None:
            out[paths.tls_bundle(name)] = [where(listener.tls.certificate), where(listener.tls.key)]
    return out


def rendered_pools(snapshot: Snapshot, zone: str) -> list[str]:
    """The pools that get a backend `be_<pool>` in the zone's config, sorted."""
    return sorted(zone_pools(snapshot.topology, zone))


def spill_pools(snapshot: Snapshot, zone: str) -> dict[str, str]:
    """Routed pool -> its backup pool, for every routed pool of the zone that has a
    backup: the pools whose backend holds spill servers."""
    topo = snapshot.topology
    out: dict[str, str] = {}
    for listener in topo.listeners.values():
        if listener.zone != zone:
            continue
        for route in listener.routes:
            pool = topo.pools.get(route.pool)
            if pool is not None and pool.backup is not None and pool.backup in topo.pools:
                out[route.pool] = pool.backup
    return dict(sorted(out.items()))


def base_weight(pool: Pool, backend: Backend) -> int:
    """A backend's HAProxy weight at full health (0..WEIGHT_MAX).

    Configured weights (0..10000) are scaled so the pool's largest is WEIGHT_MAX; a
    positive weight never rounds to 0. round_robin ignores weights (as the built-in
    picker does): every backend with a positive weight gets WEIGHT_MAX.
    """
    if backend.weight <= 0:
        return 0
    if pool.balance == "round_robin":
        return WEIGHT_MAX
    top = max(b.weight for b in pool.backends)
    return max(1, round(backend.weight * WEIGHT_MAX / top))


def render_config(
    snapshot: Snapshot, zone: str, paths: HaproxyPaths, *, threads: int | None = None
) -> str:
    """The complete haproxy.cfg of one zone's LB.

    Args:
        snapshot: The topology and its version (the version map's default value).
        zone: The zone whose listeners HAProxy serves.
        paths: The LB's state directory and the files in it.
        threads: `nbthread`; None lets HAProxy use every CPU it may run on.

    Returns:
        The config text. `zonegate check` has refused what the engine cannot honour
        (`capabilities.engine_problems`); this function renders what it is given.

    Raises:
        ValueError: `zone` is not a zone of the topology, or threads < 1.
    """
    topo = snapshot.topology
    if zone not in topo.zones:
        raise ValueError(f"unknown zone {zone!r} (zones: {', '.join(sorted(topo.zones))})")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    listeners = {n: lst for n, lst in topo.listeners.items() if lst.zone == zone}
    protocols = zone_pools(topo, zone)
    spills = spill_pools(snapshot, zone)
    out = _Out()
    out.line(f"# haproxy.cfg of zone {zone}, rendered by zonegate from {snapshot.source}")
    out.line(f"# (config version {snapshot.version}). Do not edit: zonegate rewrites it.")
    _global(out, listeners, paths, threads)
    _defaults(out)
    for name, listener in listeners.items():
        _frontend(out, name, listener, snapshot, paths)
    # An Upgrade tunnel closes after client_idle of silence, as in the built-in proxy;
    # `timeout tunnel` is per backend, so it takes the longest of the http listeners.
    tunnel = max(
        (lst.timeouts.client_idle for lst in listeners.values() if lst.protocol == "http"),
        default=60.0,
    )
    for pool_name in sorted(protocols):
        mode = "tcp" if protocols[pool_name] == {"tcp"} else "http"
        _backend(out, snapshot, pool_name, mode, spills.get(pool_name), tunnel)
    if any(lst.protocol == "http" for lst in listeners.values()):
        out.section(f"backend {NO_ROUTE_BACKEND}")
        out.line("mode http", 1)
        out.line(f"http-request return status 404 {_error_payload(404)}", 1)
    return out.text()


class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, text: str, indent: int = 0) -> None:
        self.lines.append("    " * indent + text)

    def section(self, head: str) -> None:
        self.lines.append("")
        self.lines.append(head)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def quote(text: str) -> str:
    """`text` as one double-quoted word of haproxy.cfg (no variable expansion)."""
    out = []
    for ch in text:
        if ch in '"\\$':
            out.append("\\" + ch)
        elif ch == "#" or " " <= ch <= "~":
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
    return '"' + "".join(out) + '"'


def _addr(hp: HostPort) -> str:
    return f"ipv6@{hp.host}:{hp.port}" if ":" in hp.host else f"{hp.host}:{hp.port}"


def _error_payload(status: int, message: str | None = None) -> str:
    reason = REASONS.get(status, b"Error").decode()
    body = f"{status} {reason}: {message or _ERRORS[status]}\n"
    return f'content-type "text/plain; charset=utf-8" string {quote(body)}'


# RFC 3986 §3.2.2 IPv6address (with its IPv4 tail): the set ipaddress.IPv6Address takes
# in the built-in engine's IP-literal check (lb/http1.py _normalize_host).
_H16 = "[0-9A-Fa-f]{1,4}"
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_LS32 = rf"(?:{_H16}:{_H16}|{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET})"
_IPV6 = (
    "(?:"
    + "|".join(
        [
            rf"(?:{_H16}:){{6}}{_LS32}",
            rf"::(?:{_H16}:){{5}}{_LS32}",
            rf"(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}",
            rf"(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}{_LS32}",
            rf"(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}{_LS32}",
            rf"(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
            rf"(?:(?:{_H16}:){{0,4}}{_H16})?::{_LS32}",
            rf"(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}",
            rf"(?:(?:{_H16}:){{0,6}}{_H16})?::",
        ]
    )
    + ")"
)
_REG_NAME = "(?:[A-Za-z0-9._~!$&'()*+;=-]|%[0-9A-Fa-f]{2})"
HOST_REGEX = rf"^(?:\[{_IPV6}\]|{_REG_NAME}*)(?::[0-9]*)?$"
"""uri-host [":" port] (RFC 9112 §3.2): the Host values lb/http1.py accepts."""

_ABSOLUTE_FORM = "^[A-Za-z][A-Za-z0-9+.-]*:"  # a scheme, as lb/http1.py _SCHEME
_CONTROL_IN_FIELD = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"  # req.hdrs: CR LF end lines
_AUTHORITY = "url,field(3,/),field(1,?)"  # HAProxy itself refuses '#' in a target


def _refusals(out: _Out) -> None:
    """Deny what the built-in engine's parser refuses and HAProxy would forward.

    Samples see the request as the client sent it: `req.fhdr` is the whole field
    (`req.hdr` splits at commas), `url` the target. The checks run in lb/http1.py
    check_request's order, with its status and words. The Host field, or the
    authority of an absolute-form target (which replaces it), must be a valid host.
    What HAProxy's parser normalizes before any rule runs (obs-fold, bare LF,
    Content-Length beside Transfer-Encoding) is out of reach: docs/lb.md "Engines".
    """
    out.line(f"acl zg_absolute_form url -m reg {quote(_ABSOLUTE_FORM)}", 1)
    out.line('acl zg_http_scheme url -m reg -i "^https?:"', 1)
    rules = [
        # HTTP/2 (TLS with ALPN h2) is HAProxy's own protocol: only HTTP/1 is checked.
        (505, "HTTP version not supported", "{ fc_http_major 1 } !{ req.ver -m beg 1. }"),
        # HAProxy takes control bytes in field values; llhttp refuses all but HTAB.
        (
            400,
            "malformed request: Invalid header value char",
            f"{{ req.hdrs -m reg {quote(_CONTROL_IN_FIELD)} }}",
        ),
        (405, "CONNECT is not supported", "METH_CONNECT"),
        (
            400,
            "Transfer-Encoding in an HTTP/1.0 request",
            "{ req.ver 1.0 } { req.fhdr_cnt(transfer-encoding) gt 0 }",
        ),
        (400, "unsupported scheme in the request target", "zg_absolute_form !zg_http_scheme"),
        (400, "userinfo in the request target", 'zg_http_scheme { url -m reg "^[^:]*://[^/?]*@" }'),
        (
            400,
            "no authority in an absolute-form request target",
            'zg_http_scheme !{ url -m reg "^[^:]*://[^/?]" }',
        ),
        (
            400,
            "missing Host field",
            "{ fc_http_major 1 } !{ req.ver 1.0 } !{ req.fhdr_cnt(host) gt 0 } !zg_absolute_form",
        ),
        (
            400,
            "request target must be an absolute path",
            "!zg_absolute_form !{ url -m beg / } !{ url -m str * }"
            " || !zg_absolute_form !{ url -m beg / } !METH_OPTIONS",
        ),
    ]
    for status, message, cond in rules:
        out.line(_deny(status, message, cond), 1)
    out.line(f"http-request set-var(txn.zg_host) {_AUTHORITY} if zg_http_scheme", 1)
    out.line("http-request set-var(txn.zg_host) req.fhdr(host) if !zg_absolute_form", 1)
    cond = f"{{ var(txn.zg_host) -m found }} !{{ var(txn.zg_host) -m reg {quote(HOST_REGEX)} }}"
    out.line(_deny(400, "invalid Host", cond), 1)


def _deny(status: int, message: str, cond: str) -> str:
    # As the built-in engine, close after the answer: without `Connection: close`
    # HAProxy would keep the connection and serve a request pipelined behind it.
    return (
        f"http-request deny status {status} {_error_payload(status, message)}"
        f" hdr Connection close if {cond}"
    )


def _global(
    out: _Out, listeners: dict[str, Listener], paths: HaproxyPaths, threads: int | None
) -> None:
    out.line("global")
    out.line(f"stats socket {paths.stats_socket} mode 600 level admin expose-fd listeners", 1)
    out.line(f"server-state-file {paths.server_state_file}", 1)
    # No global maxconn: HAProxy derives it from the fd limit (ulimit -n), which a
    # pure renderer cannot read; each frontend has its listener's max_connections.
    http = [lst.limits for lst in listeners.values() if lst.protocol == "http"]
    # The request line and the header block share HAProxy's buffer, which keeps
    # maxrewrite bytes free for the fields HAProxy adds.
    head = max((lim.header_bytes + lim.request_line_bytes for lim in http), default=0)
    bufsize = max(16384, -(-(head + _MAXREWRITE) // 1024) * 1024)
    out.line(f"tune.bufsize {bufsize}", 1)
    # Fields are limited by bytes, as in the built-in proxy, not by count (default 101).
    maxhdr = max(101, min(32767, max((lim.header_bytes // 4 for lim in http), default=101)))
    out.line(f"tune.http.maxhdr {maxhdr}", 1)
    if threads is not None:
        out.line(f"nbthread {threads}", 1)


def _defaults(out: _Out) -> None:
    out.section("defaults")
    out.line("mode http", 1)
    out.line("load-server-state-from-file global", 1)
    out.line("timeout connect 1s", 1)
    out.line("timeout client 60s", 1)
    out.line("timeout server 30s", 1)
    for status in (400, 408, 500, 502, 503, 504):
        out.line(f"http-error status {status} {_error_payload(status)}", 1)


def _frontend(
    out: _Out, name: str, listener: Listener, snapshot: Snapshot, paths: HaproxyPaths
) -> None:
    out.section(f"frontend {frontend_name(name)}")
    bind = f"bind {_addr(listener.bind)}"
    if ":" in listener.bind.host:
        bind += " v6only"  # as the built-in engine: '[::]:80' does not take IPv4
    if listener.tls is not None:
        bind += f" ssl crt {paths.tls_bundle(name)}"
        if listener.protocol == "http":
            bind += f" alpn {','.join(listener.tls.alpn)}"
    if listener.protocol == "tcp":
        out.line("mode tcp", 1)
        out.line(bind, 1)
        out.line(f"maxconn {listener.limits.max_connections}", 1)
        out.line(f"timeout client {_ms(listener.timeouts.client_idle)}", 1)
        for cond, backend in _rules(snapshot, listener.routes, tcp=True):
            out.line(f"use_backend {backend}{cond}", 1)
        return
    out.line("mode http", 1)
    out.line(bind, 1)
    out.line(f"maxconn {listener.limits.max_connections}", 1)
    # At a reload the old worker answers the next request of each idle keep-alive
    # connection (with `Connection: close`) instead of closing it under a client that
    # may be sending one: a reload under load fails no request.
    out.line("option idle-close-on-response", 1)
    out.line(f"timeout client {_ms(listener.timeouts.client_idle)}", 1)
    out.line(f"timeout http-request {_ms(listener.timeouts.header)}", 1)
    out.line(f"timeout http-keep-alive {_ms(listener.timeouts.client_idle)}", 1)
    _refusals(out)
    if listener.forwarded_headers:
        out.line("option forwardfor", 1)
        proto = "https" if listener.tls is not None else "http"
        out.line(f"http-request set-header X-Forwarded-Proto {proto}", 1)
        out.line(f"http-request add-header Via {quote(VIA)}", 1)
    if listener.version_header is not None:
        value = f"%[str({VERSION_KEY}),map({paths.version_map},{snapshot.version})]"
        header = quote(listener.version_header)
        out.line(f"http-after-response set-header {header} {quote(value)}", 1)
    if any(route.host is not None for route in listener.routes):
        # The Host field, or an absolute-form target's authority (which replaces it,
        # RFC 9112 §3.2.2), checked by _refusals.
        out.line("http-request set-var(txn.host) var(txn.zg_host),field(1,:),lower", 1)
    for cond, backend in _rules(snapshot, listener.routes, tcp=False):
        out.line(f"use_backend {backend}{cond}", 1)
    out.line(f"default_backend {NO_ROUTE_BACKEND}", 1)


def _route_order(routes: list[Route]) -> list[Route]:
    """Routes in the order the built-in router tries them (lb/router.py RouteTable)."""

    def key(r: Route) -> tuple[int, int, int]:
        if r.host is None:
            return (2, 0, -len(r.path_prefix))
        if r.host.startswith("*."):
            return (1, -len(r.host), -len(r.path_prefix))
        return (0, 0, -len(r.path_prefix))

    return sorted(routes, key=key)


def _rules(snapshot: Snapshot, routes: list[Route], *, tcp: bool) -> list[tuple[str, str]]:
    """(condition, backend) pairs for `use_backend`, first match wins."""
    pools = snapshot.topology.pools
    out: list[tuple[str, str]] = []
    for route in routes if tcp else _route_order(routes):
        cond = ""
        if route.host is not None:
            host = route.host.lower().rstrip(".")
            if host.startswith("*."):
                suffix = host[1:]
                cond += f" {{ var(txn.host) -m end {quote(suffix)} {quote(suffix + '.')} }}"
            else:
                cond += f" {{ var(txn.host) -m str {quote(host)} {quote(host + '.')} }}"
        if route.path_prefix != "/":
            cond += f" {{ path_beg {quote(route.path_prefix)} }}"
        pool = pools.get(route.pool)
        if pool is not None and pool.capacity is not None and pool.backup in pools:
            full = f" {{ be_conn({backend_name(route.pool)}) ge {pool.capacity} }}"
            out.append(((" if" + cond + full), backend_name(pool.backup or "")))
        out.append(((" if" + cond) if cond else "", backend_name(route.pool)))
    return out


_IDEMPOTENT = "GET HEAD OPTIONS TRACE PUT DELETE"  # RFC 9110 §9.2.2, as lb/proxy.py

_BALANCE = {
    "round_robin": "roundrobin",
    "weighted": "roundrobin",
    "random": "random",
    "least_conn": "leastconn",
    "least_load": "random(2)",
}


def _hash_expr(pool: Pool) -> str:
    key = pool.hash_key
    if key.kind == "header":
        return f"req.hdr({key.name})"
    if key.kind == "cookie":
        return f"req.cook({key.name})"
    if key.kind == "query":
        return f"url_param({key.name})"
    return "src"


def status_regex(codes: StatusRange) -> str:
    """An anchored regex matching exactly the status codes of `codes`."""
    parts: list[str] = []
    code = codes.low
    while code <= codes.high:
        if code % 100 == 0 and code + 99 <= codes.high:
            parts.append(f"{code // 100}[0-9][0-9]")
            code += 100
        elif code % 10 == 0 and code + 9 <= codes.high:
            parts.append(f"{code // 10}[0-9]")
            code += 10
        else:
            parts.append(str(code))
            code += 1
    return "^(" + "|".join(parts) + ")$"


def _backend(
    out: _Out, snapshot: Snapshot, name: str, mode: str, backup: str | None, tunnel: float
) -> None:
    pools = snapshot.topology.pools
    pool = pools[name]
    out.section(f"backend {backend_name(name)}")
    out.line(f"mode {mode}", 1)
    if pool.balance == "hash":
        out.line(f"balance hash {_hash_expr(pool)}", 1)
        out.line("hash-type consistent", 1)
        out.line(f"hash-balance-factor {max(101, round(pool.hash_balance_factor * 100))}", 1)
    else:
        out.line(f"balance {_BALANCE[pool.balance]}", 1)
    out.line(f"timeout connect {_ms(pool.timeouts.connect)}", 1)
    out.line(f"timeout server {_ms(pool.timeouts.read)}", 1)
    if mode == "http":
        out.line(f"timeout tunnel {_ms(tunnel)}", 1)
    out.line(f"retries {pool.retries}", 1)
    if pool.retries:
        out.line("option redispatch 1", 1)
        if mode == "http":
            # As the built-in proxy: a request the backend may have started executing
            # (connection closed before any answer) is retried only if idempotent.
            out.line("retry-on conn-failure empty-response", 1)
            out.line(f"http-request disable-l7-retry unless {{ method {_IDEMPOTENT} }}", 1)
    active = pool.health.active
    if active is not None:
        out.line(f"timeout check {_ms(active.timeout)}", 1)
        if active.type == "http":
            out.line("option httpchk", 1)
            send = f"http-check send meth GET uri {quote(active.path)}"
            if active.host is not None:
                send += f" ver HTTP/1.1 hdr Host {quote(active.host)}"
            out.line(send, 1)
            out.line(f"http-check expect rstatus {quote(status_regex(active.expect_status))}", 1)
            if active.expect_body is not None:
                out.line(f"http-check expect string {quote(active.expect_body)}", 1)
    for backend in pool.backends:
        out.line(_server(pool, backend, mode), 1)
    if active is not None:
        # Panic twins (model.py): unchecked, in maintenance until the pool panics.
        for backend in pool.backends:
            out.line(
                f"server {panic_server_name(backend.id)} {_addr(backend.address)}"
                f" weight {base_weight(pool, backend)} disabled" + _pool_options(pool, mode),
                1,
            )
    if backup is not None:
        backup_pool = pools[backup]
        for backend in backup_pool.backends:
            line = (
                f"server {spill_server_name(backup, backend.id)} {_addr(backend.address)} weight 0"
            )
            if backup_pool.health.active is not None:
                line += f" track {backend_name(backup)}/{backend.id}"
            out.line(line + _pool_options(backup_pool, mode), 1)


def _server(pool: Pool, backend: Backend, mode: str) -> str:
    weight = 0 if backend.state == "drain" else base_weight(pool, backend)
    line = f"server {backend.id} {_addr(backend.address)} weight {weight}"
    if backend.state == "disabled":
        line += " disabled"
    health = pool.health
    active = health.active
    if active is not None:
        line += f" check inter {_ms(active.interval)} rise {active.rise} fall {active.fall}"
        passive = health.passive
        if passive.consecutive_failures > 0:
            layer = "layer7" if passive.consecutive_5xx and mode == "http" else "layer4"
            line += (
                f" observe {layer} error-limit {passive.consecutive_failures} on-error mark-down"
            )
    if health.slow_start > 0:
        line += f" slowstart {_ms(health.slow_start)}"
    return line + _pool_options(pool, mode)


def _pool_options(pool: Pool, mode: str) -> str:
    if mode != "http":
        return ""
    return f" pool-max-conn {pool.keepalive} pool-purge-delay {_ms(pool.keepalive_timeout)}"


__all__ = [
    "HOST_REGEX",
    "NO_ROUTE_BACKEND",
    "SERVER_STATE_EMPTY",
    "HaproxyPaths",
    "base_weight",
    "quote",
    "render_config",
    "rendered_pools",
    "spill_pools",
    "status_regex",
    "tls_bundles",
    "version_map_text",
]
