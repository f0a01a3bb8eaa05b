"""Cross-reference checks on a schema-valid topology (the second validation pass).

The schema pass (`topology.schema`) checks each value on its own; this pass checks
what only the whole file can tell: names resolve (a pool's zone, a route's pool, a
backup pool), backup pools form no forbidden cycle, backends and listener binds are
unique, tcp listeners have one plain route, and split ranges tile `[0, sharding)`.

Pure: no file I/O, no logging. Each problem is `(path, message)`, where `path` is the
key path into the topology (`("pools", "web-cp", "zone")`); the loader turns it into
`file:line:col: pools.web-cp.zone: message`.

Backup cycles. At runtime a request spills at most one hop: a pool's backup serves
with its own backends and never forwards to its own backup. A cycle is therefore
harmless to the data plane, but most cycles are mistakes. The rule:

- a pool that is its own backup is an error;
- two pools in *different* zones backing each other up (a -> b -> a) is allowed: it
  is the standard active-active pattern, each zone the other's backup;
- any other cycle (three pools or more, or two pools in the same zone) is an error
  that names the cycle: "backup cycle: a -> b -> c -> a".
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from zonegate.topology.schema import Listener, Pool, SplitMap, Topology
from zonegate.topology.types import HostPort, format_duration

PathPart = str | int
Path = tuple[PathPart, ...]
Problem = tuple[Path, str]

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_MAX_NAMES_LISTED = 10


def is_dns_name(name: str) -> bool:
    """Whether `name` is a DNS host name: LDH labels of 1-63 characters, 253 in all.

    Accepts one trailing dot. Rejects an empty name, underscores, labels that start or
    end with '-', and an all-numeric last label (so '10.0.0.1' is not a host name).
    """
    text = name[:-1] if name.endswith(".") else name
    if not text or len(text) > 253:
        return False
    labels = text.split(".")
    return all(_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit()


def _is_route_host(host: str) -> bool:
    if host.startswith("*."):
        return is_dns_name(host[2:])
    return is_dns_name(host)


def _names(names: Iterable[str]) -> str:
    listed = sorted(names)
    if not listed:
        return "none defined"
    if len(listed) > _MAX_NAMES_LISTED:
        return ", ".join(listed[:_MAX_NAMES_LISTED]) + f", … ({len(listed)} in all)"
    return ", ".join(listed)


def _unknown(kind: str, name: str, section: str, defined: Iterable[str]) -> str:
    return f"unknown {kind} '{name}' ({section}: {_names(defined)})"


# --- split ranges -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _RangeProblem:
    zone: str | None
    """The zone the problem belongs to; None for a gap."""
    field: str | None
    """'lower' or 'upper' when one bound is wrong."""
    msg: str


def _range_problems(sharding: int, ranges: Mapping[str, tuple[int, int]]) -> list[_RangeProblem]:
    problems: list[_RangeProblem] = []
    if sharding < 1:
        return [_RangeProblem(None, None, f"sharding must be ≥ 1, got {sharding}")]
    spans: list[tuple[int, int, str]] = []
    for zone, (lower, upper) in ranges.items():
        if lower < 0:
            problems.append(_RangeProblem(zone, "lower", f"lower {lower} is negative"))
        if upper > sharding:
            problems.append(
                _RangeProblem(zone, "upper", f"upper {upper} is above sharding {sharding}")
            )
        if lower > upper:
            problems.append(_RangeProblem(zone, "lower", f"lower {lower} is above upper {upper}"))
            continue
        # Clamp, so one out-of-bounds end does not also hide the overlaps it causes.
        lo, hi = max(lower, 0), min(upper, sharding)
        if lo < hi:
            spans.append((lo, hi, zone))
    spans.sort()
    for i, (_, hi_a, a) in enumerate(spans):
        for lo_b, hi_b, b in spans[i + 1 :]:
            if lo_b >= hi_a:
                break
            problems.append(
                _RangeProblem(b, None, f"zones {a} and {b} overlap on [{lo_b}, {min(hi_a, hi_b)})")
            )
    covered = 0
    for lo, hi, _ in spans:
        if lo > covered:
            problems.append(_RangeProblem(None, None, f"gap [{covered}, {lo}) not covered"))
        covered = max(covered, hi)
    if covered < sharding:
        problems.append(_RangeProblem(None, None, f"gap [{covered}, {sharding}) not covered"))
    return problems


def split_ranges_problems(sharding: int, ranges: Mapping[str, tuple[int, int]]) -> list[str]:
    """Check that a split map's ranges tile `[0, sharding)` exactly.

    A zone owns the device hashes `h` with `lower <= h < upper`. An empty range
    (`lower == upper`) is allowed and owns nothing (a zone taken out of the split);
    every other range must satisfy `0 <= lower < upper <= sharding`, no two ranges may
    overlap, and together they must cover every value from 0 to sharding - 1.

    Args:
        sharding: The modulus of the split map (number of buckets), ≥ 1.
        ranges: Zone name -> (lower, upper), half-open.

    Returns:
        One message per problem, empty if the ranges tile exactly: "zone 'a': lower
        60 is above upper 40", "zones a and b overlap on [40, 60)", "gap [40, 50) not
        covered".
    """
    return [
        f"zone '{p.zone}': {p.msg}" if p.zone is not None and p.field is not None else p.msg
        for p in _range_problems(sharding, ranges)
    ]


# --- the checks ---------------------------------------------------------------------


class _Checker:
    def __init__(self, topo: Topology, also_defined: Mapping[str, Collection[str]]) -> None:
        self.topo = topo
        self.problems: list[Problem] = []
        self.zone_names = {*topo.zones, *also_defined.get("zones", ())}
        self.pool_names = {*topo.pools, *also_defined.get("pools", ())}

    def add(self, path: Path, msg: str) -> None:
        self.problems.append((path, msg))

    def zone_ref(self, path: Path, zone: str) -> None:
        if zone not in self.zone_names:
            self.add(path, _unknown("zone", zone, "zones", self.zone_names))

    def run(self) -> list[Problem]:
        for name, pool in self.topo.pools.items():
            self.pool(name, pool)
        self.backup_cycles()
        for name, listener in self.topo.listeners.items():
            self.listener(name, listener)
        self.binds()
        for domain, split in self.topo.split.items():
            self.split(domain, split)
        return self.problems

    def pool(self, name: str, pool: Pool) -> None:
        here: Path = ("pools", name)
        self.zone_ref((*here, "zone"), pool.zone)
        if pool.backup is not None:
            if pool.backup == name:
                self.add((*here, "backup"), f"pool '{name}' is its own backup")
            elif pool.backup not in self.pool_names:
                self.add(
                    (*here, "backup"),
                    _unknown("backup pool", pool.backup, "pools", self.pool_names),
                )
        ids: dict[str, int] = {}
        addresses: dict[HostPort, int] = {}
        for i, backend in enumerate(pool.backends):
            at: Path = (*here, "backends", i)
            first = addresses.setdefault(backend.address, i)
            if first != i:
                self.add(
                    (*at, "address"),
                    f"duplicate backend address {backend.address} (also backends[{first}])",
                )
            first = ids.setdefault(backend.id, i)
            # A name cannot contain ':', so it never equals an address: two ids clash
            # when two names do, or two addresses (already reported just above).
            if first != i and backend.name is not None:
                self.add(
                    (*at, "name"), f"duplicate backend '{backend.id}' (also backends[{first}])"
                )
        passive = pool.health.passive
        if passive.base_ejection > passive.max_ejection:
            self.add(
                (*here, "health", "passive", "base_ejection"),
                f"base_ejection ({format_duration(passive.base_ejection)}) is longer than "
                f"max_ejection ({format_duration(passive.max_ejection)})",
            )

    def backup_cycles(self) -> None:
        pools = self.topo.pools
        order = {name: i for i, name in enumerate(pools)}
        done: set[str] = set()
        for start in pools:
            trail: list[str] = []
            on_trail: dict[str, int] = {}
            node: str | None = start
            while node is not None and node in pools and node not in done:
                if node in on_trail:
                    self.cycle(trail[on_trail[node] :], order)
                    break
                on_trail[node] = len(trail)
                trail.append(node)
                nxt = pools[node].backup
                node = nxt if nxt != node else None  # self backup is reported by pool()
            done.update(trail)

    def cycle(self, members: list[str], order: Mapping[str, int]) -> None:
        pools = self.topo.pools
        if len(members) == 2 and pools[members[0]].zone != pools[members[1]].zone:
            return  # mutual backup across two zones: the active-active pattern
        first = min(range(len(members)), key=lambda i: order[members[i]])
        ring = members[first:] + members[:first]
        text = " -> ".join([*ring, ring[0]])
        why = (
            "two pools in the same zone cannot back each other up"
            if len(ring) == 2
            else "only two pools in different zones may back each other up"
        )
        self.add(("pools", ring[0], "backup"), f"backup cycle: {text} ({why})")

    def listener(self, name: str, listener: Listener) -> None:
        here: Path = ("listeners", name)
        self.zone_ref((*here, "zone"), listener.zone)
        if listener.protocol == "tcp" and len(listener.routes) > 1:
            self.add(
                (*here, "routes"),
                f"a tcp listener takes exactly one route, got {len(listener.routes)}",
            )
        seen: dict[tuple[str | None, str], int] = {}
        for i, route in enumerate(listener.routes):
            at: Path = (*here, "routes", i)
            if route.pool not in self.pool_names:
                self.add((*at, "pool"), _unknown("pool", route.pool, "pools", self.pool_names))
            if listener.protocol == "tcp":
                if route.host is not None:
                    self.add((*at, "host"), "a tcp listener cannot route by host")
                if route.path_prefix != "/":
                    self.add((*at, "path_prefix"), "a tcp listener cannot route by path")
            host = route.host.lower().rstrip(".") if route.host is not None else None
            if route.host is not None and not _is_route_host(route.host):
                self.add(
                    (*at, "host"),
                    f"invalid host '{route.host}': expected a host name such as "
                    "'api.example.test' or a wildcard such as '*.example.test' "
                    "(omit host to match any host)",
                )
            first = seen.setdefault((host, route.path_prefix), i)
            # A tcp listener's extra routes are already one problem above.
            if first != i and listener.protocol == "http":
                which = f"host '{route.host}'" if route.host is not None else "any host"
                self.add(
                    at,
                    f"duplicate route for {which} and path_prefix '{route.path_prefix}' "
                    f"(also routes[{first}])",
                )

    def binds(self) -> None:
        # One `zonegate lb` serves one zone, so binds can only collide within a zone;
        # its admin endpoint (zones.<zone>.lb_admin) is bound by the same process.
        by_zone: dict[str, list[tuple[HostPort, str]]] = {}
        for zone_name, zone in self.topo.zones.items():
            if zone.lb_admin is not None:
                owner = f"the lb_admin of zone '{zone_name}'"
                by_zone.setdefault(zone_name, []).append((zone.lb_admin, owner))
        for name, listener in self.topo.listeners.items():
            taken = by_zone.setdefault(listener.zone, [])
            for addr, owner in taken:
                if addr == listener.bind:
                    msg = f"address {addr} is already bound by {owner}"
                elif _wildcard_overlap(listener.bind, addr):
                    msg = f"address {listener.bind} overlaps {addr} bound by {owner}"
                else:
                    continue
                self.add(("listeners", name, "bind"), msg)
                break
            taken.append((listener.bind, f"listener '{name}'"))

    def split(self, domain: str, split: SplitMap) -> None:
        here: Path = ("split", domain)
        if not is_dns_name(domain):
            self.add(here, f"invalid domain '{domain}': expected a DNS name")
        for zone_name, share in split.zones.items():
            at: Path = (*here, "zones", zone_name)
            self.zone_ref(at, zone_name)
            if not is_dns_name(share.domain):
                self.add((*at, "domain"), f"invalid domain '{share.domain}': expected a DNS name")
        ranges = {z: (s.lower, s.upper) for z, s in split.zones.items()}
        for p in _range_problems(split.sharding, ranges):
            if p.zone is None:
                self.add((*here, "zones"), p.msg)
            elif p.field is None:
                self.add((*here, "zones", p.zone), p.msg)
            else:
                self.add((*here, "zones", p.zone, p.field), p.msg)


def _wildcard_overlap(a: HostPort, b: HostPort) -> bool:
    """Whether one of two distinct binds on the same port is the other's wildcard."""
    if a.port != b.port:
        return False
    try:
        ip_a, ip_b = ipaddress.ip_address(a.host), ipaddress.ip_address(b.host)
    except ValueError:
        return False  # a host name: the pure pass cannot resolve it
    # Linux refuses a specific bind next to a listening wildcard bind of the same
    # family and port (asyncio sets IPV6_V6ONLY, so '::' does not cover IPv4).
    return ip_a.version == ip_b.version and (ip_a.is_unspecified or ip_b.is_unspecified)


def validate(
    topo: Topology, *, also_defined: Mapping[str, Collection[str]] | None = None
) -> list[Problem]:
    """Find every cross-reference problem in a topology that passed the schema.

    Checks: pools and listeners name a defined zone; routes name a defined pool; a
    backup pool exists, is not the pool itself, and forms no cycle except a mutual
    backup of two pools in different zones; backend names and addresses are unique
    within a pool; passive `base_ejection` is not longer than `max_ejection`; no two
    listeners of a zone (nor a listener and the zone's `lb_admin`) bind the same
    address; a tcp listener has one route with no host or path; route hosts are host
    names or '*.' wildcards; a listener has no duplicate (host, path_prefix) route;
    split maps name defined zones, use DNS names, and their ranges tile
    `[0, sharding)` (see `split_ranges_problems`).

    Routing a listener to a pool of another zone is allowed and not reported.

    Args:
        topo: A topology that passed the schema pass.
        also_defined: Names defined in the file whose entries failed the schema pass,
            by section ("zones", "pools"). References to them are not reported, so the
            loader can validate the valid rest of a broken file without noise.

    Returns:
        `(path, message)` pairs, e.g. `(("pools", "web-cp", "zone"), "unknown zone
        'foo' (zones: changping, yanqing)")`; empty when the topology is consistent.
    """
    return _Checker(topo, also_defined or {}).run()


__all__ = ["Path", "Problem", "is_dns_name", "split_ranges_problems", "validate"]
