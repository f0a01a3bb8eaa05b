"""Cross-reference checks on a schema-valid topology (the second validation pass).

The schema pass (`topology.schema`) checks each value on its own; this pass checks
what only the whole file can tell: names resolve (a pool's zone, a route's pool, a
backup pool), backup pools form no forbidden cycle, backends and listener binds are
unique, tcp listeners have one plain route, split ranges tile `[0, sharding)`, and
the `dns` section holds together (see "DNS names" below and `validate`).

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

DNS names. A name written in `dns.domains.D` (a record or GSLB name, a CNAME, NS, MX
or SOA target) is read by `qualify`: '@' is the domain itself, a name ending with '.'
is absolute, a name that already ends with the domain is taken as written (so
'www.example.test' in example.test is not www.example.test.example.test), and any
other name is relative to the domain. A CNAME to another domain must therefore end
with '.', as in a zone file.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from zonegate.lb.haproxy.capabilities import engine_problems
from zonegate.topology.schema import (
    DnsDomain,
    GslbRecord,
    Listener,
    Pool,
    SplitMap,
    StaticRecord,
    Topology,
    VrrpInstance,
    VrrpTrack,
)
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


_OWNER_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def qualify(name: str, origin: str) -> str:
    """The fully qualified form of a name written in domain `origin`.

    '@' is the origin; a name ending with '.' is absolute; a name equal to the origin
    or ending with '.' + origin is taken as written; any other name is relative to
    the origin. The result is lower case, without the trailing dot.

    Args:
        name: The name as written in the topology file.
        origin: The domain it is written in ('.' or '' for the root).

    Returns:
        e.g. `qualify("www", "example.test") == "www.example.test"`,
        `qualify("@", "example.test.") == "example.test"`,
        `qualify("api.other.test.", "example.test") == "api.other.test"`.
    """
    o = origin.lower().rstrip(".")
    n = name.lower()
    if n == "@":
        return o
    if n.endswith("."):
        return n[:-1]
    if not o or n == o or n.endswith("." + o):
        return n
    return f"{n}.{o}"


def _is_owner_name(name: str) -> bool:
    """A record owner name: like a host name, but labels may hold '_' (_dmarc,
    _acme-challenge) and the first label may be '*' (a wildcard)."""
    text = name[:-1] if name.endswith(".") else name
    if not text or len(text) > 253:
        return False
    labels = text.split(".")
    if labels[0] == "*":
        labels = labels[1:]
        if not labels:
            return True
    return all(_OWNER_LABEL.fullmatch(label) for label in labels)


def _is_relative_host(name: str) -> bool:
    """Labels of a host name, with no rule on the last one (a relative 'v1' or '1')."""
    text = name[:-1] if name.endswith(".") else name
    return bool(text) and all(_LABEL.fullmatch(label) for label in text.split("."))


def _inside(name: str, domain: str) -> bool:
    return name == domain or name.endswith("." + domain)


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
        self.vips()
        _VrrpChecker(self).run()
        _DnsChecker(self).run()
        # What the zone's LB engine cannot honour (lb/haproxy/capabilities.py).
        self.problems.extend(engine_problems(self.topo))
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

    def vips(self) -> None:
        for zone_name, zone in self.topo.zones.items():
            seen: dict[str, int] = {}
            for i, text in enumerate(zone.vips):
                at: Path = ("zones", zone_name, "vips", i)
                try:
                    ip = ipaddress.ip_address(text)
                except ValueError:
                    self.add(at, f"invalid address '{text}': expected an IPv4 or IPv6 address")
                    continue
                first = seen.setdefault(str(ip), i)
                if first != i:
                    self.add(at, f"duplicate vip {ip} (also vips[{first}])")


# --- vrrp ---------------------------------------------------------------------------

MAX_LEASE_TTL = 10.0
"""The control plane's longest lease (control.lease.MAX_TTL)."""


def vrrp_vips(topo: Topology, instance: VrrpInstance) -> list[ipaddress.IPv4Interface]:
    """The VIPs a VRRP instance holds: its `vips`, else its zone's IPv4 vips as /32.

    Entries that do not parse are skipped (`validate` reports them).
    """
    out: list[ipaddress.IPv4Interface] = []
    if instance.vips:
        for text in instance.vips:
            try:
                out.append(ipaddress.IPv4Interface(text))
            except ValueError:
                continue
        return out
    zone = topo.zones.get(instance.zone)
    for text in zone.vips if zone is not None else []:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        if isinstance(ip, ipaddress.IPv4Address):
            out.append(ipaddress.IPv4Interface(ip))
    return out


class _VrrpChecker:
    """The `vrrp` section: zones, VIPs, intervals, (interface, vrid) ownership, tracks."""

    def __init__(self, checker: _Checker) -> None:
        self.c = checker
        self.topo = checker.topo

    def run(self) -> None:
        groups: dict[tuple[str, int], tuple[str, str]] = {}
        """(interface, vrid) -> (zone, first instance)."""
        vip_sets: dict[tuple[str, int], tuple[frozenset[str], str]] = {}
        for name, inst in self.topo.vrrp.instances.items():
            here: Path = ("vrrp", "instances", name)
            self.c.zone_ref((*here, "zone"), inst.zone)
            key = (inst.interface, inst.vrid)
            first = groups.setdefault(key, (inst.zone, name))
            if first[0] != inst.zone:
                self.c.add(
                    (*here, "vrid"),
                    f"vrid {inst.vrid} on {inst.interface} is already used by instance "
                    f"'{first[1]}' of zone '{first[0]}': each zone's virtual router needs "
                    "its own vrid on a link",
                )
            self.interval((*here, "advert_interval"), inst.advert_interval)
            vips = self.vips(here, name, inst)
            if vips is not None:
                seen = vip_sets.setdefault((inst.zone, inst.vrid), (vips, name))
                if seen[0] != vips and first[0] == inst.zone:
                    self.c.add(
                        (*here, "vips"),
                        f"VIPs differ from those of instance '{seen[1]}' of the same "
                        "virtual router (every node must announce the same addresses)",
                    )
            for field in ("unicast_peers",):
                for i, text in enumerate(getattr(inst, field)):
                    self.ipv4((*here, field, i), text)
            if inst.source is not None:
                self.ipv4((*here, "source"), inst.source)
            for i, track in enumerate(inst.track):
                self.track((*here, "track", i), inst, track)
            if inst.quorum is not None and inst.quorum.lease_ttl > MAX_LEASE_TTL:
                self.c.add(
                    (*here, "quorum", "lease_ttl"),
                    f"lease_ttl must be at most {format_duration(MAX_LEASE_TTL)}, "
                    f"got {format_duration(inst.quorum.lease_ttl)}",
                )

    def ipv4(self, path: Path, text: str) -> None:
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            self.c.add(path, f"invalid address '{text}': expected an IPv4 address")

    def interval(self, path: Path, seconds: float) -> None:
        cs = round(seconds * 100)
        if not 1 <= cs <= 4095 or abs(cs - seconds * 100) > 1e-6:
            self.c.add(
                path,
                f"advert_interval must be whole centiseconds from 10ms to 40.95s "
                f"(RFC 5798), got {format_duration(seconds)}",
            )

    def vips(self, here: Path, name: str, inst: VrrpInstance) -> frozenset[str] | None:
        if not inst.vips:
            found = vrrp_vips(self.topo, inst)
            if not found and inst.zone in self.topo.zones:
                self.c.add(
                    (*here, "zone"),
                    f"zone '{inst.zone}' has no IPv4 vip: set vrrp.instances.{name}.vips",
                )
                return None
            return frozenset(str(v.ip) for v in found)
        good: set[str] = set()
        for i, text in enumerate(inst.vips):
            at: Path = (*here, "vips", i)
            try:
                vip = ipaddress.IPv4Interface(text)
            except ValueError:
                try:
                    ipaddress.ip_interface(text)
                    why = "VRRP here is IPv4 only"
                except ValueError:
                    why = "expected an address with an optional /prefix"
                self.c.add(at, f"invalid VIP '{text}': {why}, e.g. 10.9.0.100/24")
                continue
            if str(vip.ip) in good:
                self.c.add(at, f"duplicate VIP {vip.ip}")
            good.add(str(vip.ip))
        if len(inst.vips) > 255:
            self.c.add((*here, "vips"), "at most 255 VIPs per virtual router")
        return frozenset(good)

    def track(self, path: Path, inst: VrrpInstance, track: VrrpTrack) -> None:
        needs = {"lb": "address", "interface": "name", "command": "command"}
        for key in ("address", "name", "command"):
            value = getattr(track, key)
            if value is not None and needs[track.type] != key:
                self.c.add((*path, key), f"'{key}' is not used by a check of type {track.type}")
        if track.type == "interface" and track.name is None:
            self.c.add(path, "a check of type interface needs 'name'")
        if track.type == "command" and track.command is None:
            self.c.add(path, "a check of type command needs 'command'")
        if track.type == "lb" and track.address is None:
            zone = self.topo.zones.get(inst.zone)
            if zone is not None and zone.lb_admin is None:
                self.c.add(
                    path,
                    f"a check of type lb needs 'address' (zone '{inst.zone}' has no lb_admin)",
                )


# --- dns ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Owner:
    """What one fully qualified name holds, across every domain."""

    path: Path
    """Where it is first defined."""
    types: set[str]
    gslb: bool


class _DnsChecker:
    """The `dns` section: names, references, prefixes, glue, CNAME rules."""

    def __init__(self, checker: _Checker) -> None:
        self.c = checker
        self.dns = checker.topo.dns
        self.zones = checker.topo.zones
        self.origins: dict[str, str] = {}
        """Domain key -> its name qualified (valid domains only)."""
        self.owners: dict[str, _Owner] = {}
        self.cnames: dict[str, tuple[str, Path]] = {}
        """Owner -> (target, path of the target)."""

    def add(self, path: Path, msg: str) -> None:
        self.c.add(path, msg)

    def run(self) -> None:
        self.regions()
        self.networks(("dns", "trusted_proxies"), self.dns.trusted_proxies)
        seen: dict[str, str] = {}
        for key in self.dns.domains:
            here: Path = ("dns", "domains", key)
            if not is_dns_name(key):
                self.add(here, f"invalid domain '{key}': expected a DNS name")
                continue
            origin = qualify(key, ".")
            if origin in seen:
                self.add(here, f"domain {origin} is defined twice (also '{seen[origin]}')")
                continue
            seen[origin] = key
            self.origins[key] = origin
        for key, origin in self.origins.items():
            self.records(key, origin, self.dns.domains[key])
        for key, origin in self.origins.items():
            self.gslb(key, origin, self.dns.domains[key])
        for key, origin in self.origins.items():
            self.domain_names(key, origin, self.dns.domains[key])
        self.cname_cycles()

    # regions

    def regions(self) -> None:
        dns = self.dns
        prefixes: dict[str, str] = {}
        countries: dict[str, str] = {}
        for name, region in dns.regions.items():
            here: Path = ("dns", "regions", name)
            for i, net in self.networks((*here, "prefixes"), region.prefixes):
                first = prefixes.setdefault(str(net), name)
                if first != name:
                    self.add((*here, "prefixes", i), f"prefix {net} is also in region '{first}'")
            for i, country in enumerate(region.countries):
                first = countries.setdefault(country, name)
                if first != name:
                    self.add(
                        (*here, "countries", i), f"country {country} is also in region '{first}'"
                    )
            for i, zone in enumerate(region.zones):
                self.c.zone_ref((*here, "zones", i), zone)
        known = {*dns.regions, *(z.region for z in self.zones.values() if z.region is not None)}
        if dns.default_region is not None and dns.default_region not in known:
            self.add(
                ("dns", "default_region"),
                _unknown("region", dns.default_region, "dns.regions and zone regions", known),
            )

    def networks(
        self, here: Path, texts: list[str]
    ) -> list[tuple[int, ipaddress.IPv4Network | ipaddress.IPv6Network]]:
        out: list[tuple[int, ipaddress.IPv4Network | ipaddress.IPv6Network]] = []
        seen: dict[str, int] = {}
        for i, text in enumerate(texts):
            try:
                net = ipaddress.ip_network(text)
            except ValueError:
                try:
                    loose = ipaddress.ip_network(text, strict=False)
                except ValueError:
                    self.add(
                        (*here, i),
                        f"invalid prefix '{text}': expected a network such as 10.1.0.0/16 "
                        "or 2001:db8::/32",
                    )
                else:
                    self.add(
                        (*here, i),
                        f"invalid prefix '{text}': host bits set (the network is {loose})",
                    )
                continue
            first = seen.setdefault(str(net), i)
            if first != i:
                self.add((*here, i), f"duplicate prefix {net} (also [{first}])")
                continue
            out.append((i, net))
        return out

    # names

    def place(self, fqdn: str, origin: str, here: Path, what: str) -> bool:
        """Check a qualified owner name belongs to `origin`; report and return False if not."""
        if len(fqdn) > 253:
            self.add(here, f"{what} '{fqdn}' is longer than 253 characters")
            return False
        if not _inside(fqdn, origin):
            self.add(here, f"{what} '{fqdn}' is not inside domain {origin}")
            return False
        closest = max(
            (o for o in self.origins.values() if _inside(fqdn, o)), key=len, default=origin
        )
        if closest != origin:
            self.add(
                here,
                f"{what} '{fqdn}' is inside domain {closest}, which is configured "
                "separately: define it there",
            )
            return False
        return True

    def target(self, here: Path, text: str, origin: str, what: str) -> str | None:
        if text != "@" and not _is_relative_host(text):
            self.add(here, f"invalid {what} '{text}': expected a DNS name")
            return None
        fqdn = qualify(text, origin)
        if not is_dns_name(fqdn):
            self.add(here, f"invalid {what} '{text}': '{fqdn}' is not a DNS name")
            return None
        return fqdn

    def records(self, key: str, origin: str, domain: DnsDomain) -> None:
        for name, rrs in domain.records.items():
            here: Path = ("dns", "domains", key, "records", name)
            if name != "@" and not _is_owner_name(name):
                self.add(
                    here,
                    f"invalid record name '{name}': expected a DNS name, '@' for the domain "
                    "or a name ending with '.' for an absolute one",
                )
                continue
            fqdn = qualify(name, origin)
            if not self.place(fqdn, origin, here, "record name"):
                continue
            owner = self.owners.get(fqdn)
            if owner is not None:
                self.add(here, f"name '{fqdn}' is defined twice (also {_render(owner.path)})")
                continue
            types: set[str] = {rr.type for rr in rrs}
            self.owners[fqdn] = _Owner(here, types, gslb=False)
            cnames = [i for i, rr in enumerate(rrs) if rr.type == "CNAME"]
            if len(cnames) > 1:
                self.add(here, f"'{fqdn}' has {len(cnames)} CNAME records: at most one")
            if cnames and len(rrs) > len(cnames):
                self.add(
                    here,
                    f"'{fqdn}' has a CNAME and other records: a CNAME must be alone "
                    "(RFC 1034 §3.6.2)",
                )
            if cnames and fqdn == origin:
                self.add(here, f"the domain apex {origin} cannot be a CNAME (it holds SOA and NS)")
            for i, rr in enumerate(rrs):
                self.record_value((*here, i, "value"), rr, origin, fqdn)

    def record_value(self, here: Path, rr: StaticRecord, origin: str, owner: str) -> None:
        value = rr.value
        if rr.type in ("A", "AAAA"):
            version = 4 if rr.type == "A" else 6
            try:
                ip = ipaddress.ip_address(value)
            except ValueError:
                ip = None
            if ip is None or ip.version != version:
                self.add(
                    here, f"invalid {rr.type} value '{value}': expected an IPv{version} address"
                )
        elif rr.type in ("CNAME", "NS"):
            fqdn = self.target(here, value, origin, f"{rr.type} target")
            if fqdn is not None and rr.type == "CNAME":
                self.cnames[owner] = (fqdn, here)
        elif rr.type == "MX":
            parts = value.split()
            ok = len(parts) == 2 and parts[0].isdigit() and int(parts[0]) <= 65535
            if not ok:
                self.add(
                    here,
                    f"invalid MX value '{value}': expected 'PREFERENCE NAME' such as "
                    "'10 mail.example.test.' (preference 0-65535)",
                )
            else:
                self.target(here, parts[1], origin, "MX exchange")

    def gslb(self, key: str, origin: str, domain: DnsDomain) -> None:
        with_vips = [name for name, zone in self.zones.items() if zone.vips]
        for name, rec in domain.gslb.items():
            here: Path = ("dns", "domains", key, "gslb", name)
            if name != "@" and not _is_relative_host(name):
                self.add(
                    here,
                    f"invalid GSLB name '{name}': expected a host name, '@' for the domain "
                    "or a name ending with '.' for an absolute one",
                )
                continue
            fqdn = qualify(name, origin)
            if not self.place(fqdn, origin, here, "GSLB name"):
                continue
            owner = self.owners.get(fqdn)
            if owner is not None and not owner.gslb:
                self.add(
                    here,
                    f"'{fqdn}' is both a static record ({_render(owner.path)}) and a GSLB name",
                )
                continue
            if owner is not None:
                self.add(here, f"GSLB name '{fqdn}' is defined twice (also {_render(owner.path)})")
                continue
            self.owners[fqdn] = _Owner(here, {"A", "AAAA"}, gslb=True)
            self.gslb_record(here, fqdn, origin, rec, with_vips)

    def gslb_record(
        self, here: Path, fqdn: str, origin: str, rec: GslbRecord, with_vips: list[str]
    ) -> None:
        if rec.cname is not None:
            target = self.target((*here, "cname"), rec.cname, origin, "cname")
            if target is not None:
                self.cnames[fqdn] = (target, (*here, "cname"))
                if fqdn == origin:
                    self.add(
                        (*here, "cname"),
                        f"the domain apex {origin} cannot be a CNAME (it holds SOA and NS)",
                    )
        seen: dict[str, int] = {}
        for i, zone in enumerate(rec.zones):
            at: Path = (*here, "zones", i)
            first = seen.setdefault(zone, i)
            if first != i:
                self.add(at, f"duplicate zone '{zone}' (also zones[{first}])")
            elif zone not in self.c.zone_names:
                self.c.zone_ref(at, zone)
            elif zone in self.zones and not self.zones[zone].vips and rec.cname is None:
                self.add(at, f"zone {zone} has no vips (zones.{zone}.vips)")
        if not rec.zones and not with_vips and rec.cname is None:
            self.add(here, "no zone has vips: a GSLB name needs candidate zones with vips")
        for i, zone in enumerate(rec.admin_order):
            self.c.zone_ref((*here, "admin_order", i), zone)
        if rec.fallback == "addresses" and not rec.fallback_addresses:
            self.add((*here, "fallback"), "fallback 'addresses' needs fallback_addresses")
        for i, text in enumerate(rec.fallback_addresses):
            if not _is_ip(text):
                self.add(
                    (*here, "fallback_addresses", i),
                    f"invalid address '{text}': expected an IPv4 or IPv6 address",
                )
        candidates = rec.zones or with_vips
        vips = {
            str(ipaddress.ip_address(v))
            for z in candidates
            if z in self.zones
            for v in self.zones[z].vips
            if _is_ip(v)
        }
        for text in rec.ip_weights:
            at = (*here, "ip_weights", text)
            if not _is_ip(text):
                self.add(at, f"invalid address '{text}': expected an IPv4 or IPv6 address")
            elif str(ipaddress.ip_address(text)) not in vips:
                self.add(at, f"address {text} is not a vip of this name's zones")
        self.sessions_known(here, rec, candidates)

    def sessions_known(self, here: Path, rec: GslbRecord, candidates: list[str]) -> None:
        """`available_sessions` ranks by the sessions the zones' LBs report in /status:
        a candidate probed otherwise (tcp, http) would always look empty."""
        for key in ("preferred", "alternate"):
            methods = getattr(rec, key)
            if "available_sessions" not in methods or rec.cname is not None:
                continue
            at: Path = (*here, key, methods.index("available_sessions"))
            for zone in candidates:
                z = self.zones.get(zone)
                if z is not None and z.health.type != "lb_status":
                    self.add(
                        at,
                        f"available_sessions needs the sessions zone {zone} reports in its "
                        f"LB's /status, but zones.{zone}.health.type is {z.health.type}: "
                        "use lb_status, or another method",
                    )

    def domain_names(self, key: str, origin: str, domain: DnsDomain) -> None:
        here: Path = ("dns", "domains", key)
        for i, ns in enumerate(domain.ns):
            fqdn = self.target((*here, "ns", i), ns, origin, "name server")
            if fqdn is None:
                continue
            holder = max(
                (o for o in self.origins.values() if _inside(fqdn, o)), key=len, default=None
            )
            if holder is None:
                continue
            owner = self.owners.get(fqdn)
            if owner is None or not owner.types & {"A", "AAAA"}:
                self.add(
                    (*here, "ns", i),
                    f"name server {fqdn} is inside {holder} but has no A or AAAA record "
                    f"(glue): add records.{_relative(fqdn, holder)} of type A",
                )
        if domain.soa.mname is not None:
            self.target((*here, "soa", "mname"), domain.soa.mname, origin, "mname")
        self.target((*here, "soa", "rname"), domain.soa.rname, origin, "rname")

    def cname_cycles(self) -> None:
        done: set[str] = set()
        for start in self.cnames:
            trail: list[str] = []
            node: str | None = start
            while node is not None and node in self.cnames and node not in done:
                if node in trail:
                    ring = trail[trail.index(node) :]
                    text = " -> ".join([*ring, ring[0]])
                    self.add(self.cnames[ring[0]][1], f"CNAME loop: {text}")
                    break
                trail.append(node)
                node = self.cnames[node][0]
            done.update(trail)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _relative(fqdn: str, origin: str) -> str:
    return "@" if fqdn == origin else fqdn[: -len(origin) - 1]


def _render(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out += f".{part}" if out else part
        else:
            out += f'["{part}"]'
    return out


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

    The `dns` section and zone VIPs: VIPs are IP addresses, unique within a zone;
    region prefixes and trusted_proxies are networks without host bits, no prefix or
    country in two regions; region zones, GSLB zones and admin_order name defined
    zones; default_region is a region (of dns.regions or a zone's `region`); domain,
    record, GSLB, CNAME/NS/MX/SOA names are DNS names, and record and GSLB names lie
    inside their domain (not in a more specific configured domain); a name is not
    defined twice, is not both static and GSLB, and a CNAME stands alone, not at the
    apex, in no loop; A/AAAA/MX values parse; fallback 'addresses' has
    fallback_addresses; GSLB candidate zones have vips; ip_weights name candidate
    VIPs; a name server inside a configured domain has an A or AAAA record (glue).

    Engines: a setting the zone's `lb_engine` cannot honour (TLS on builtin; on
    haproxy see `zonegate.lb.haproxy.capabilities`).

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


__all__ = [
    "Path",
    "Problem",
    "is_dns_name",
    "qualify",
    "split_ranges_problems",
    "validate",
    "vrrp_vips",
]
