"""What each LB engine honours, for `zonegate check` (pure).

A zone's `lb_engine` (builtin or haproxy) decides which settings its `zonegate lb` can
honour. A setting the engine cannot honour at all is an error, named at its
file:line; a setting it honours differently is a warning, so nothing is ever dropped
silently. `engine_problems` feeds `topology.validate` (errors), `engine_warnings`
feeds `topology.check.config_warnings`.

Errors:

- builtin: `listeners.*.tls` (the built-in proxy has no TLS);
- haproxy: `listeners.*.timeouts.total` (HAProxy has no cap on a whole exchange);
  a pool reached from both an http and a tcp listener of the zone (an HAProxy backend
  has one mode); `hash_key` other than client_ip on a pool of a tcp listener (HAProxy
  sees no header, cookie or query there), or whose name is not letters, digits, '_',
  '.', '-' (it is written into a sample expression); `version_header` that is not a
  field name; an IPv6 backend without a `name` (its id, `[::1]:80`, cannot name an
  HAProxy server);
  `tls.alpn` on a tcp listener (ALPN selects an HTTP version).

Warnings (haproxy): passive ejection is HAProxy's `observe ... on-error mark-down`,
so `base_ejection`, `max_ejection` and `max_ejected_percent` are not applied (a server
marked down comes back by its active check), and without an active check there is no
passive ejection at all; `limits.request_line_bytes` has no separate limit in HAProxy
(the line counts in the head buffer).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from zonegate.topology.schema import Listener, Pool, Topology

Path = tuple[str | int, ...]
Problem = tuple[Path, str]

ENGINES = ("builtin", "haproxy")

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# A name written inside an HAProxy sample expression, `req.cook(NAME)`, unquoted.
_SAMPLE_ARG = re.compile(r"[A-Za-z0-9_.-]+")


def zone_engine(topo: Topology, zone: str, override: str | None = None) -> str:
    """The engine of a zone's LB: `override` (from `zonegate lb --engine`), else the
    zone's `lb_engine`, else builtin."""
    if override is not None:
        if override not in ENGINES:
            raise ValueError(f"unknown engine {override!r}: expected builtin or haproxy")
        return override
    z = topo.zones.get(zone)
    return z.lb_engine if z is not None else "builtin"


def zone_pools(topo: Topology, zone: str) -> dict[str, set[str]]:
    """Pools the zone's LB serves (routes of its listeners, and their backups), each
    with the protocols (http, tcp) of the listeners that reach it."""
    used: dict[str, set[str]] = {}
    for listener in topo.listeners.values():
        if listener.zone != zone:
            continue
        for route in listener.routes:
            for name in (route.pool, _backup(topo, route.pool)):
                if name is not None and name in topo.pools:
                    used.setdefault(name, set()).add(listener.protocol)
    return used


def _backup(topo: Topology, pool: str) -> str | None:
    p = topo.pools.get(pool)
    return p.backup if p is not None else None


def _listeners(topo: Topology, engine: str) -> Iterator[tuple[str, Listener]]:
    for name, listener in topo.listeners.items():
        # A listener of an unknown zone is reported by topology.validate, only there.
        if listener.zone in topo.zones and zone_engine(topo, listener.zone) == engine:
            yield name, listener


def _haproxy_pools(topo: Topology) -> Iterator[tuple[str, Pool, str, set[str]]]:
    """(pool name, pool, zone, protocols) for every pool a haproxy zone serves."""
    for zone, z in topo.zones.items():
        if z.lb_engine != "haproxy":
            continue
        for name, protocols in zone_pools(topo, zone).items():
            yield name, topo.pools[name], zone, protocols


def engine_problems(topo: Topology) -> list[Problem]:
    """Settings a zone's engine cannot honour (errors; see the module docstring).

    Args:
        topo: A schema-valid topology (names may still be unresolved: those are
            reported by `topology.validate`, and skipped here).

    Returns:
        `(path, message)` pairs, in topology order.
    """
    out: list[Problem] = []
    for name, listener in _listeners(topo, "builtin"):
        if listener.tls is not None:
            out.append(
                (
                    ("listeners", name, "tls"),
                    f"TLS needs the haproxy engine: zone '{listener.zone}' uses builtin "
                    f"(set zones.{listener.zone}.lb_engine: haproxy)",
                )
            )
    for name, listener in _listeners(topo, "haproxy"):
        here: Path = ("listeners", name)
        if listener.timeouts.total is not None:
            out.append(
                (
                    (*here, "timeouts", "total"),
                    "the haproxy engine has no cap on a whole exchange: remove "
                    "timeouts.total, or use lb_engine: builtin",
                )
            )
        header = listener.version_header
        if header is not None and not _TOKEN.fullmatch(header):
            out.append(
                ((*here, "version_header"), f"invalid header name {header!r}: expected a token")
            )
        tls = listener.tls
        if tls is not None and listener.protocol == "tcp" and "alpn" in tls.model_fields_set:
            out.append(
                ((*here, "tls", "alpn"), "alpn applies to http listeners, not to protocol: tcp")
            )
    for name, pool, zone, protocols in _haproxy_pools(topo):
        for i, backend in enumerate(pool.backends):
            if backend.name is None and ":" in backend.address.host:
                out.append(
                    (
                        ("pools", name, "backends", i, "address"),
                        f"the haproxy engine names a server by its backend's id, and "
                        f"{backend.id} cannot be an HAProxy server name: give it a name",
                    )
                )
        if len(protocols) > 1:
            out.append(
                (
                    ("pools", name),
                    f"pool '{name}' is reached from both http and tcp listeners of zone "
                    f"'{zone}': an HAProxy backend has one mode (use two pools)",
                )
            )
        elif pool.balance == "hash" and not _SAMPLE_ARG.fullmatch(pool.hash_key.name or "x"):
            out.append(
                (
                    ("pools", name, "hash_key"),
                    f"the haproxy engine takes hash key names of letters, digits, '_', '.' "
                    f"and '-' only, not {pool.hash_key.name!r}",
                )
            )
        elif protocols == {"tcp"} and pool.balance == "hash" and pool.hash_key.kind != "client_ip":
            out.append(
                (
                    ("pools", name, "hash_key"),
                    f"pool '{name}' serves a tcp listener of zone '{zone}': the haproxy "
                    f"engine can hash only client_ip there, not {pool.hash_key}",
                )
            )
    return out


def engine_warnings(topo: Topology) -> list[Problem]:
    """Settings the zone's engine honours differently (warnings; see the module docstring).

    Args:
        topo: A validated topology.

    Returns:
        `(path, message)` pairs, in topology order; each message starts with
        "haproxy engine:".
    """
    out: list[Problem] = []
    seen: set[str] = set()
    for name, pool, _zone, _protocols in _haproxy_pools(topo):
        if name in seen:
            continue
        seen.add(name)
        if pool.balance == "least_conn" and pool.health.slow_start > 0:
            out.append(
                (
                    ("pools", name, "health", "slow_start"),
                    "haproxy engine: leastconn ramps a slow-starting server only while the "
                    "pool is busy; in an idle pool it takes its full share at once",
                )
            )
        passive = pool.health.passive
        here: Path = ("pools", name, "health", "passive")
        if passive.consecutive_failures == 0:
            continue
        if pool.health.active is None:
            out.append(
                (
                    (*here, "consecutive_failures"),
                    "haproxy engine: no passive ejection without an active check (a server "
                    "HAProxy marks down comes back only by its check); set health.active",
                )
            )
            continue
        for key in ("base_ejection", "max_ejection", "max_ejected_percent"):
            if key in passive.model_fields_set:
                out.append(
                    (
                        (*here, key),
                        f"haproxy engine: {key} is not applied: after consecutive_failures "
                        "errors HAProxy marks the server down until its active check "
                        "passes rise times",
                    )
                )
    for name, listener in _listeners(topo, "haproxy"):
        if listener.protocol == "http" and "request_line_bytes" in listener.limits.model_fields_set:
            out.append(
                (
                    ("listeners", name, "limits", "request_line_bytes"),
                    "haproxy engine: no separate request-line limit; the line counts in "
                    "the head buffer sized from header_bytes + request_line_bytes",
                )
            )
    return out


__all__ = ["ENGINES", "engine_problems", "engine_warnings", "zone_engine", "zone_pools"]
