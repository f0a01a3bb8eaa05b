"""The GSLB policy chain: which zone VIPs one client gets for one name (pure).

Theory of operation
-------------------

`compile_gslb(topology)` turns the `dns` section into a `GslbTable` once per config
version: every GSLB name fully qualified and lower-cased, its candidate zones and
their VIPs split by family, its methods resolved to functions, the region map built
for longest-prefix lookups. `decide()` then runs per query on that table, the zone
states of the instant (`ZoneState`, from the zone prober) and the per-name counters
of `SelectionState`; it opens nothing, reads no clock and takes its randomness from
the `random.Random` it is given, so every decision can be replayed in a test.

The chain, for one name, one type (A or AAAA) and one client::

      candidates (GslbRecord.zones, default: every zone with VIPs)
          |
      [health]  drop zones that are not up (unknown = down) or have no VIP of the
          |     asked family
          |
          +-- none left --> [fallback]  all | addresses | none     (decision.fallback)
          |
      [preferred]  methods in order, each keeps or orders what it is given;
          |        a method that leaves nothing ends the list
          +-- none left --> [alternate]  methods in order, on the health-kept zones
          |                     |
          |                     +-- none left --> [last-resort]  every healthy zone
          v                     v
      [answer]  the first `answers` addresses of the ordered zones (ip_weight may
                have ordered each zone's addresses); TTL; ECS scope

What each method does with the zones it is given (in order) is in `_METHODS` below
and docs/dns.md "GSLB policy". The rules a reader most needs:

- `topology` keeps the given zones that serve the client's region, in the region's
  order. The region comes from the longest prefix that contains the client network
  (the ECS subnet if sent, else the address), else the country hook (MaxMind) mapped
  through `Region.countries`, else `Dns.default_region`. When the client has no
  region, or none of the region's zones is among those given, the method *fails*: it
  leaves nothing, so the chain goes on with `alternate`. It never falls back to "all
  zones" by itself; `alternate` is where that choice is written.
- Health alone decides `fallback`: while one zone of the asked family is up, only up
  zones are answered. When `preferred` and `alternate` both leave nothing (say
  `capacity` dropped every zone), the healthy zones are answered in candidate order
  (`last-resort`), never a down one.
- TTL: `record.ttl`, or `min(ttl, changing_ttl)` while any candidate zone is
  `changing` and for every fallback answer, so resolvers come back soon after a
  zone's state moves.
- ECS (RFC 7871 §7.2.1): with a client subnet, the scope is `ecs_scope` (IPv4
  subnet) or `ecs_scope_v6` (IPv6 subnet); a CNAME answer is the same for every
  client, so its scope is 0. Without a client subnet, `scope_prefix` is None.

`SelectionState` is the only mutable state: the counters of `round_robin` and
`least_selected`, keyed by (name, zones given to the method), so clients of
different regions (who are given different zones) each rotate evenly. The caller
owns it (one per process or per worker) and must not share it between threads.

Every step appends a `Step(stage, kept, why)` to the decision; `explain()` renders
them for `zonegate dns explain` and the admin endpoint.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from zonegate.dns.model import ClientInfo, Decision, IPNetwork, Step, ZoneState
from zonegate.topology.schema import GslbRecord, Region, Topology, Zone
from zonegate.topology.validate import qualify

CountryOf = Callable[[str], "str | None"]
"""Address text -> ISO country code (e.g. 'CN') or None. May raise ValueError for an
address it cannot look up (treated as None)."""

_SELECTION_KEYS_MAX = 4096
"""Counter sets SelectionState keeps before it starts over (bounds its memory)."""

# --- regions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Located:
    """Where a client network falls: its region and how it was found."""

    region: str | None
    how: str
    """'prefix 1.2.0.0/16', 'country CN', 'default region', or why none matched."""


_Probe = tuple[tuple[int, int, dict[int, tuple[str, str]]], ...]
"""(prefix length, shift, leading bits -> (region, prefix text)), longest first."""


def _probe_order(by_length: Mapping[int, dict[int, tuple[str, str]]], bits: int) -> _Probe:
    return tuple((n, bits - n, by_length[n]) for n in sorted(by_length, reverse=True))


class RegionMap:
    """Client network -> region by longest prefix match, then country, then default.

    Built once per config; lookups are a few dict probes. For each family, one dict
    per prefix length maps the network's leading bits (as an int) to its region;
    a lookup probes the lengths from longest to shortest, skipping lengths longer
    than the client network (a prefix matches a client network it contains: a /24
    ECS subnet does not match a /28 prefix inside it).

    A prefix listed by two regions goes to the first in file order (validate
    reports it). Prefixes with host bits set are taken as their network (validate
    reports them too); unparsable ones are skipped.
    """

    __slots__ = ("_countries", "_v4", "_v6", "_zones", "country_of", "default_region")

    def __init__(
        self,
        regions: Mapping[str, Region] | None = None,
        *,
        zones: Mapping[str, Zone] | None = None,
        default_region: str | None = None,
        country_of: CountryOf | None = None,
    ) -> None:
        """Build the map.

        Args:
            regions: `Dns.regions`, in file order.
            zones: `Topology.zones`, for regions that list no zones of their own.
            default_region: The region of clients nothing else places.
            country_of: Optional address -> country hook (the shell passes a MaxMind
                lookup), consulted when no prefix matches.
        """
        regions = regions or {}
        zones = zones or {}
        self.default_region = default_region
        self.country_of = country_of
        # family -> prefix length -> leading bits -> (region, prefix text)
        tables: dict[int, dict[int, dict[int, tuple[str, str]]]] = {4: {}, 6: {}}
        self._countries: dict[str, str] = {}
        for name, region in regions.items():
            for text in region.prefixes:
                try:
                    net = ipaddress.ip_network(text, strict=False)
                except ValueError:
                    continue
                bits = int(net.network_address) >> (net.max_prefixlen - net.prefixlen)
                by_bits = tables[net.version].setdefault(net.prefixlen, {})
                by_bits.setdefault(bits, (name, str(net)))
            for country in region.countries:
                self._countries.setdefault(country.upper(), name)
        self._v4 = _probe_order(tables[4], 32)
        self._v6 = _probe_order(tables[6], 128)
        served: dict[str, list[str]] = {}
        for zone_name, zone in zones.items():
            if zone.region is not None:
                served.setdefault(zone.region, []).append(zone_name)
        self._zones: dict[str, tuple[str, ...]] = {
            name: tuple(served.get(name, ())) for name in served
        }
        for name, region in regions.items():
            self._zones[name] = tuple(region.zones) if region.zones else tuple(served.get(name, ()))

    def lookup(self, network: IPNetwork) -> str | None:
        """The region of a client network (an address is a /32 or /128), or None."""
        return self.locate(network).region

    def locate(self, network: IPNetwork) -> Located:
        """The region of a client network, and how it was found (for `explain`)."""
        version = network.version
        value = int(network.network_address)
        plen = network.prefixlen
        if version == 6 and plen >= 96 and value >> 32 == 0xFFFF:
            version, value, plen = 4, value & 0xFFFFFFFF, plen - 96  # IPv4-mapped
        return self._locate(version, value, plen, str(network.network_address))

    def _locate(self, version: int, value: int, plen: int, address: str) -> Located:
        for length, shift, table in self._v4 if version == 4 else self._v6:
            if length <= plen:
                hit = table.get(value >> shift)
                if hit is not None:
                    return Located(hit[0], f"prefix {hit[1]}")
        if self.country_of is not None:
            try:
                country = self.country_of(address)
            except ValueError:
                country = None
            if country is not None:
                region = self._countries.get(country.upper())
                if region is not None:
                    return Located(region, f"country {country}")
                if self.default_region is not None:
                    return Located(
                        self.default_region, f"country {country} is in no region: default region"
                    )
                return Located(None, f"no prefix matches and country {country} is in no region")
        if self.default_region is not None:
            return Located(self.default_region, "no prefix matches: default region")
        return Located(None, "no prefix matches and there is no default_region")

    def region_of(self, version: int, value: int, plen: int) -> str | None:
        """The region of a client network given as numbers: IP version (4 or 6), the
        network address as an int and the prefix length (32 / 128 for an address).

        The same answer as `lookup` (IPv4-mapped IPv6 is looked up as IPv4), without
        building `ipaddress` objects: the DNS hot path calls it per query.
        """
        if version == 6 and plen >= 96 and value >> 32 == 0xFFFF:
            version, value, plen = 4, value & 0xFFFFFFFF, plen - 96
        for length, shift, table in self._v4 if version == 4 else self._v6:
            if length <= plen:
                hit = table.get(value >> shift)
                if hit is not None:
                    return hit[0]
        if self.country_of is None:
            return self.default_region
        if version == 4:
            address = str(ipaddress.IPv4Address(value))
        else:
            address = str(ipaddress.IPv6Address(value))
        return self._locate(version, value, -1, address).region  # -1: no prefix probe

    def zones_for(self, region: str) -> tuple[str, ...]:
        """The zones serving a region, best first: `Region.zones`, else the zones whose
        `Zone.region` is this region (file order); () for an unknown region."""
        return self._zones.get(region, ())


# --- the compiled table -------------------------------------------------------------


Method = Callable[[list[str], "_Ctx"], tuple[list[str], str]]


@dataclass(frozen=True, slots=True)
class GslbEntry:
    """One GSLB name, compiled: everything `decide` needs without parsing."""

    name: str
    """Fully qualified, lower case, no trailing dot: 'api.example.test'."""
    domain: str
    record: GslbRecord
    candidates: tuple[str, ...]
    vips4: Mapping[str, tuple[str, ...]]
    """Zone -> its IPv4 VIPs (zones without one are absent)."""
    vips6: Mapping[str, tuple[str, ...]]
    preferred: tuple[tuple[str, Method], ...]
    """(stage name, method) pairs: ('preferred:topology', ...)."""
    alternate: tuple[tuple[str, Method], ...]
    fallback4: tuple[tuple[str, ...], tuple[str, ...]]
    """(zones, addresses) answered as fallback to an A query."""
    fallback6: tuple[tuple[str, ...], tuple[str, ...]]
    cname: str | None
    """Fully qualified CNAME target, or None."""
    ttl: int
    changing_ttl: int
    """min(ttl, changing_ttl), used while a candidate zone is changing."""
    scope4: int
    scope6: int
    answers: int
    weights: Mapping[str, int]
    """Zone -> site weight (Zone.weight)."""
    capacity: Mapping[str, int]
    """Zone -> configured capacity (Zone.capacity), where set."""
    threshold: float
    ip_weights: Mapping[str, int]
    admin_rank: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class GslbTable:
    """Every GSLB name of a topology, compiled; immutable, shared by all queries."""

    names: Mapping[str, GslbEntry]
    regions: RegionMap

    def get(self, name: str) -> GslbEntry | None:
        """The entry of a name, in any case, with or without the trailing dot."""
        entry = self.names.get(name)
        if entry is None:
            entry = self.names.get(name.lower().rstrip("."))
        return entry


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _split_family(addresses: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    v4: list[str] = []
    v6: list[str] = []
    for text in addresses:
        ip = _ip(text)
        if ip is None:
            continue  # validate reports it
        out = v4 if ip.version == 4 else v6
        canonical = str(ip)
        if canonical not in out:
            out.append(canonical)
    return tuple(v4), tuple(v6)


def _flatten(zones: Sequence[str], vips: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    out: list[str] = []
    for zone in zones:
        for address in vips.get(zone, ()):
            if address not in out:
                out.append(address)
    return tuple(out)


def compile_gslb(topo: Topology, *, country_of: CountryOf | None = None) -> GslbTable:
    """Compile the GSLB names of a (validated) topology for `decide`.

    Names in `DnsDomain.gslb` are relative to the domain ('@' is the domain itself, a
    name ending with '.' is absolute; see `topology.validate.qualify`). Candidate
    zones default to every zone with VIPs, in file order; unknown zones and
    unparsable addresses, which validate reports, are skipped here.

    Args:
        topo: A topology that passed validation.
        country_of: Optional address -> country hook for the topology method (the
            shell passes `dns.maxmind.open_country_lookup(dns.geoip_db)`).

    Returns:
        The table. A name defined twice (two domains) keeps its first definition.
    """
    dns = topo.dns
    regions = RegionMap(
        dns.regions, zones=topo.zones, default_region=dns.default_region, country_of=country_of
    )
    zone_vips = {name: _split_family(zone.vips) for name, zone in topo.zones.items()}
    weights = {name: zone.weight for name, zone in topo.zones.items()}
    capacity = {n: z.capacity for n, z in topo.zones.items() if z.capacity is not None}
    with_vips = tuple(name for name, (v4, v6) in zone_vips.items() if v4 or v6)
    names: dict[str, GslbEntry] = {}
    for domain_key, domain in dns.domains.items():
        origin = qualify(domain_key, ".")
        for key, record in domain.gslb.items():
            fqdn = qualify(key, origin)
            if fqdn in names:
                continue
            candidates = tuple(
                dict.fromkeys(z for z in record.zones if z in topo.zones)
                if record.zones
                else with_vips
            )
            vips4 = {z: zone_vips[z][0] for z in candidates if zone_vips[z][0]}
            vips6 = {z: zone_vips[z][1] for z in candidates if zone_vips[z][1]}
            fb4, fb6 = _split_family(record.fallback_addresses)
            if record.fallback == "all":
                fallback4 = (tuple(vips4), _flatten(candidates, vips4))
                fallback6 = (tuple(vips6), _flatten(candidates, vips6))
            elif record.fallback == "addresses":
                fallback4, fallback6 = ((), fb4), ((), fb6)
            else:
                fallback4, fallback6 = ((), ()), ((), ())
            ip_weights: dict[str, int] = {}
            for text, weight in record.ip_weights.items():
                ip = _ip(text)
                if ip is not None:
                    ip_weights[str(ip)] = weight
            ttl = int(record.ttl)
            names[fqdn] = GslbEntry(
                name=fqdn,
                domain=origin,
                record=record,
                candidates=candidates,
                vips4=vips4,
                vips6=vips6,
                preferred=tuple((f"preferred:{m}", _METHODS[m]) for m in record.preferred),
                alternate=tuple((f"alternate:{m}", _METHODS[m]) for m in record.alternate),
                fallback4=fallback4,
                fallback6=fallback6,
                cname=qualify(record.cname, origin) if record.cname is not None else None,
                ttl=ttl,
                changing_ttl=min(ttl, int(record.changing_ttl)),
                scope4=record.ecs_scope,
                scope6=record.ecs_scope_v6,
                answers=record.answers,
                weights=weights,
                capacity=capacity,
                threshold=record.capacity_threshold,
                ip_weights=ip_weights,
                admin_rank={z: i for i, z in enumerate(record.admin_order)},
            )
    return GslbTable(names=names, regions=regions)


# --- selection state ----------------------------------------------------------------


@dataclass(slots=True)
class SelectionState:
    """The counters `round_robin` and `least_selected` need: the only mutable state.

    Plain data, owned by the caller (one per DNS/HTTPDNS process or worker; not
    thread-safe). Keys are (name, zones given to the method) so that clients who are
    given different zones (other regions, other health) each rotate evenly instead of
    stealing each other's turns. When more than `max_keys` counter sets exist (names
    dropped by a reload, many health combinations), a set is started over.
    """

    rotations: dict[tuple[str, tuple[str, ...]], int] = field(default_factory=dict)
    """round_robin: decisions so far per key."""
    selected: dict[tuple[str, tuple[str, ...]], dict[str, int]] = field(default_factory=dict)
    """least_selected: answers per zone so far per key."""
    max_keys: int = _SELECTION_KEYS_MAX


# --- methods ------------------------------------------------------------------------


class _Ctx:
    """Per-decision scratch: inputs, the lazily located region, address orders."""

    __slots__ = (
        "client",
        "entry",
        "health",
        "located",
        "orders",
        "rng",
        "selected",
        "state",
        "table",
        "vips",
    )

    def __init__(
        self,
        entry: GslbEntry,
        vips: Mapping[str, tuple[str, ...]],
        client: ClientInfo,
        table: GslbTable,
        health: Mapping[str, ZoneState],
        state: SelectionState,
        rng: random.Random,
    ) -> None:
        self.entry = entry
        self.vips = vips
        self.client = client
        self.table = table
        self.health = health
        self.state = state
        self.rng = rng
        self.located: tuple[str, Located] | None = None
        self.orders: dict[str, tuple[str, ...]] | None = None
        self.selected: dict[str, int] | None = None

    def locate(self) -> tuple[str, Located]:
        """(client network as text, where it falls), computed once per decision."""
        if self.located is None:
            self.located = _locate_client(self.client, self.table.regions)
        return self.located


def _locate_client(client: ClientInfo, regions: RegionMap) -> tuple[str, Located]:
    subnet = client.subnet
    if subnet is not None:
        return str(subnet), regions.locate(subnet)
    ip = _ip(client.ip)
    if ip is None:
        return repr(client.ip), Located(None, "the client address is not an IP address")
    version, value, plen = ip.version, int(ip), ip.max_prefixlen
    if version == 6 and value >> 32 == 0xFFFF:
        version, value, plen = 4, value & 0xFFFFFFFF, 32  # IPv4-mapped
    return client.ip, regions._locate(version, value, plen, client.ip)


def _names(zones: Iterable[str]) -> str:
    text = ", ".join(zones)
    return text or "none"


def _topology(zones: list[str], ctx: _Ctx) -> tuple[list[str], str]:
    who, where = ctx.locate()
    if where.region is None:
        return [], f"client {who}: {where.how}: no region, topology fails"
    preferred = ctx.table.regions.zones_for(where.region)
    given = set(zones)
    kept = [z for z in preferred if z in given]
    head = f"client {who} -> region {where.region} ({where.how}) -> zones {_names(preferred)}"
    if not kept:
        return [], f"{head}: none of them is left, topology fails"
    return kept, head


def _weighted_order(
    items: Sequence[str], weight_of: Callable[[str], int], rng: random.Random
) -> tuple[list[str], list[str]]:
    """Weighted random order without replacement (Efraimidis-Spirakis: sort by
    u ** (1 / w)); the first item is item i with probability w_i / sum(w).
    Returns (ordered positive-weight items, zero-weight items dropped)."""
    keyed: list[tuple[float, int, str]] = []
    dropped: list[str] = []
    rand = rng.random
    for i, item in enumerate(items):
        w = weight_of(item)
        if w <= 0:
            dropped.append(item)
        else:
            keyed.append((-(rand() ** (1.0 / w)), i, item))
    keyed.sort()
    return [k[2] for k in keyed], dropped


def _weight(zones: list[str], ctx: _Ctx) -> tuple[list[str], str]:
    weights = ctx.entry.weights
    if len(zones) == 1 and weights.get(zones[0], 0) > 0:
        return zones, f"one zone: {zones[0]} (weight {weights[zones[0]]})"
    kept, dropped = _weighted_order(zones, lambda z: weights.get(z, 0), ctx.rng)
    why = "weights " + ", ".join(f"{z} {weights.get(z, 0)}" for z in zones)
    if dropped:
        why += f"; dropped {_names(dropped)} (weight 0)"
    if not kept:
        return [], why + ": no zone with a positive weight, weight fails"
    return kept, f"{why} -> drew {_names(kept)}"


def _ip_weight(zones: list[str], ctx: _Ctx) -> tuple[list[str], str]:
    ip_weights = ctx.entry.ip_weights

    def weight_of(address: str) -> int:
        return ip_weights.get(address, 1)

    orders: dict[str, tuple[str, ...]] = {}
    kept: list[str] = []
    parts: list[str] = []
    for zone in zones:
        addresses = ctx.vips.get(zone, ())
        if len(addresses) == 1 and weight_of(addresses[0]) > 0:
            ordered: Sequence[str] = addresses
        else:
            ordered, _ = _weighted_order(addresses, weight_of, ctx.rng)
        if ordered:
            orders[zone] = tuple(ordered)
            kept.append(zone)
            parts.append(f"{zone} " + ", ".join(f"{a} ({weight_of(a)})" for a in ordered))
        else:
            parts.append(f"{zone} dropped: every address has weight 0")
    ctx.orders = orders
    return kept, "address order: " + "; ".join(parts)


def _capacity(zones: list[str], ctx: _Ctx) -> tuple[list[str], str]:
    limit = ctx.entry.threshold
    configured = ctx.entry.capacity
    kept: list[str] = []
    parts: list[str] = []
    for zone in zones:
        st = ctx.health.get(zone)
        sessions = st.sessions if st is not None else 0
        cap = configured.get(zone)
        if cap is None and st is not None:
            cap = st.capacity
        if not cap:
            kept.append(zone)
            parts.append(f"{zone} capacity unknown, kept")
            continue
        load = sessions / cap
        if load > limit:
            parts.append(f"{zone} dropped: {sessions}/{cap} sessions ({load:.0%}) > {limit:.0%}")
        else:
            kept.append(zone)
            parts.append(f"{zone} {sessions}/{cap} sessions ({load:.0%})")
    why = "; ".join(parts)
    return kept, why if kept else why + ": every zone is over the threshold, capacity fails"


def _available_sessions(zones: list[str], ctx: _Ctx) -> tuple[list[str], str]:
    """F5's "available sessions": the most free sessions (capacity - sessions) first.

    Capacity is `zones.Z.capacity`, else what the zone's LB reports; a zone whose
    capacity is unknown follows the ranked ones. Ties keep the order given (a stable
    sort), so a method before this one breaks them. Never fails.
    """
    configured = ctx.entry.capacity
    free: dict[str, int | None] = {}
    parts: dict[str, str] = {}
    for zone in zones:
        st = ctx.health.get(zone)
        sessions = st.sessions if st is not None else 0
        cap = configured.get(zone)
        if cap is None and st is not None:
            cap = st.capacity
        if cap is None:
            free[zone] = None
            parts[zone] = f"{zone} capacity unknown"
        else:
            free[zone] = cap - sessions
            parts[zone] = f"{zone} {cap - sessions} ({cap}-{sessions})"
    kept = sorted(zones, key=lambda z: _free_key(free[z]))
    listed = ", ".join(parts[z] for z in kept)
    return kept, f"free sessions {listed}: most first"


def _free_key(free: int | None) -> tuple[bool, int]:
    """Sort key of `_available_sessions`: known capacity first, then the most free."""
    return (free is None, -(free or 0))


def _active_servers(zones: list[str], ctx: _Ctx) -> tuple[list[str], str]:
    counts = {z: _healthy(ctx.health.get(z)) for z in zones}
    best = max(counts.values(), default=0)
    kept = [z for z in zones if counts[z] == best]
    listed = ", ".join(f"{z} {n}" for z, n in counts.items())
    return kept, f"healthy backends {listed}: keep the most ({best})"


def _healthy(st: ZoneState | None) -> int:
    return st.healthy if st is not None else 0


def _rtt(zones: list[str], ctx: _Ctx) -> tuple[list[str], str]:
    rtts = {z: _rtt_of(ctx.health.get(z)) for z in zones}
    kept = sorted(zones, key=lambda z: (rtts[z] is None, rtts[z] or 0.0))
    listed = ", ".join(f"{z} {_ms(rtts[z])}" for z in kept)
    return kept, f"rtt {listed}: lowest first"


def _rtt_of(st: ZoneState | None) -> float | None:
    return st.rtt if st is not None else None


def _ms(rtt: float | None) -> str:
    return "unmeasured" if rtt is None else f"{rtt * 1000:.1f}ms"


def _admin(zones: list[str], ctx: _Ctx) -> tuple[list[str], str]:
    rank = ctx.entry.admin_rank
    unlisted = len(rank)
    kept = sorted(zones, key=lambda z: rank.get(z, unlisted))
    order = _names(ctx.entry.record.admin_order)
    return kept, f"admin_order {order} (unlisted zones after, in order)"


def _selection_key(ctx: _Ctx, zones: list[str]) -> tuple[str, tuple[str, ...]]:
    return ctx.entry.name, tuple(zones)


def _least_selected(zones: list[str], ctx: _Ctx) -> tuple[list[str], str]:
    state = ctx.state
    key = _selection_key(ctx, zones)
    counts = state.selected.get(key)
    if counts is None:
        if len(state.selected) >= state.max_keys:
            state.selected.clear()
        counts = state.selected[key] = {}
    kept = sorted(zones, key=lambda z: counts.get(z, 0))
    ctx.selected = counts
    listed = ", ".join(f"{z} {counts.get(z, 0)}" for z in zones)
    return kept, f"answered so far {listed}: least first"


def _round_robin(zones: list[str], ctx: _Ctx) -> tuple[list[str], str]:
    state = ctx.state
    key = _selection_key(ctx, zones)
    turn = state.rotations.get(key)
    if turn is None:
        if len(state.rotations) >= state.max_keys:
            state.rotations.clear()
        turn = 0
    state.rotations[key] = turn + 1
    start = turn % len(zones)
    kept = zones[start:] + zones[:start]
    return kept, f"turn {turn + 1} over {len(zones)} zones: {kept[0]} first"


def _all(zones: list[str], ctx: _Ctx) -> tuple[list[str], str]:
    return list(zones), "keep every zone, in order"


_METHODS: dict[str, Method] = {
    "topology": _topology,
    "weight": _weight,
    "ip_weight": _ip_weight,
    "capacity": _capacity,
    "available_sessions": _available_sessions,
    "active_servers": _active_servers,
    "rtt": _rtt,
    "admin": _admin,
    "least_selected": _least_selected,
    "round_robin": _round_robin,
    "all": _all,
}
"""Method name (GslbMethod) -> function(zones given, ctx) -> (zones kept, why)."""

METHODS: tuple[str, ...] = tuple(_METHODS)


# --- decide -------------------------------------------------------------------------


def _run(
    methods: tuple[tuple[str, Method], ...],
    zones: list[str],
    ctx: _Ctx,
    steps: list[Step],
) -> list[str]:
    for stage, method in methods:
        zones, why = method(zones, ctx)
        steps.append(Step(stage, tuple(zones), why))
        if not zones:
            break
    return zones


def _zone_verdict(zone: str, st: ZoneState | None) -> str:
    """'cp up: 3/3 backends healthy', each fact once.

    The prober's reason starts with the state ('up: 3/3 backends healthy') and an
    admin overlay appends its own ('...; admin: drain, control version 7'): the
    state word is said once, and the backend count only when the reason lacks it.
    """
    if st is None:
        return f"{zone} down: no health state yet"
    details: list[str] = []
    if st.total:
        details.append(f"{st.healthy}/{st.total} backends healthy")
    for part in st.reason.split("; ") if st.reason else ():
        for word in ("up: ", "down: "):
            part = part.removeprefix(word)
        if part in ("up", "down") or not part:
            continue
        if part.startswith(f"{st.healthy}/{st.total} backends healthy") and details:
            details[0] = part  # the prober's own words, e.g. with ", below 50%"
        elif part not in details:
            details.append(part)
    text = f"{zone} {'up' if st.up else 'down'}"
    if details:
        text += f": {details[0]}"
    if len(details) > 1:
        text += f" ({'; '.join(details[1:])})"
    if st.changing:
        text += ", changing"
    return text


def decide(
    name: str,
    qtype: str,
    client: ClientInfo,
    table: GslbTable,
    health: Mapping[str, ZoneState],
    state: SelectionState,
    rng: random.Random,
) -> Decision | None:
    """Decide the answer for one GSLB name, one query type and one client.

    Args:
        name: The queried name, any case, with or without the trailing dot.
        qtype: 'A' or 'AAAA' run the chain; a record with `cname` answers the CNAME
            for any type; any other type gets an empty answer (NODATA) with a step
            saying why.
        client: Who asks (address, ECS subnet, DeviceID).
        table: From `compile_gslb`.
        health: Zone name -> its state now; a zone missing here counts as down.
        state: round_robin / least_selected counters; updated in place.
        rng: The randomness of weighted picks (seed it to replay a decision).

    Returns:
        The decision with its steps, or None when `name` is not a GSLB name. Never
        raises for a well-formed table, whatever the client.
    """
    entry = table.get(name)
    if entry is None:
        return None
    subnet = client.subnet
    if entry.cname is not None:
        why = f"{entry.name} is a CNAME to {entry.cname}: the next level decides"
        return Decision(
            name=entry.name,
            qtype=qtype,
            cname=entry.cname,
            ttl=entry.ttl,
            scope_prefix=None if subnet is None else 0,
            steps=(Step("cname", (), why),),
            client=client,
        )
    scope = None if subnet is None else (entry.scope4 if subnet.version == 4 else entry.scope6)
    if qtype == "A":
        vips, fallback = entry.vips4, entry.fallback4
        family = "IPv4"
    elif qtype == "AAAA":
        vips, fallback = entry.vips6, entry.fallback6
        family = "IPv6"
    else:
        why = f"{entry.name} is a GSLB name: it has A and AAAA answers only, no {qtype}"
        return Decision(
            name=entry.name,
            qtype=qtype,
            ttl=entry.ttl,
            scope_prefix=scope,
            steps=(Step("type", (), why),),
            client=client,
        )

    # 1. health
    kept: list[str] = []
    verdicts: list[str] = []
    changing: list[str] = []
    for zone in entry.candidates:
        st = health.get(zone)
        if st is not None and st.changing:
            changing.append(zone)
        if zone not in vips:
            verdicts.append(f"{zone} has no {family} VIP")
        elif st is not None and st.up:
            kept.append(zone)
            verdicts.append(_zone_verdict(zone, st))
        else:
            verdicts.append(_zone_verdict(zone, st))
    steps = [Step("health", tuple(kept), "; ".join(verdicts) or "no candidate zones")]
    ttl = entry.changing_ttl if changing else entry.ttl

    if not vips:
        steps.append(Step("answer", (), f"no candidate zone has an {family} VIP: empty answer"))
        return Decision(
            name=entry.name,
            qtype=qtype,
            ttl=ttl,
            scope_prefix=scope,
            steps=tuple(steps),
            client=client,
        )

    if not kept:
        zones, fallback_addresses = fallback
        mode = entry.record.fallback
        if mode == "all":
            why = f"no candidate zone is up: fallback all, every candidate's {family} VIPs"
        elif mode == "addresses":
            why = f"no candidate zone is up: fallback addresses ({family})"
        else:
            why = "no candidate zone is up: fallback none, empty answer"
        steps.append(Step("fallback", zones, why))
        ttl = entry.changing_ttl
        why = _answer_why(fallback_addresses, ttl, scope, changing, True)
        steps.append(Step("answer", zones, why))
        return Decision(
            name=entry.name,
            qtype=qtype,
            addresses=fallback_addresses,
            ttl=ttl,
            zones=zones,
            scope_prefix=scope,
            steps=tuple(steps),
            fallback=True,
            client=client,
        )

    # 2. preferred, alternate, last resort
    ctx = _Ctx(entry, vips, client, table, health, state, rng)
    chosen = _run(entry.preferred, kept, ctx, steps)
    if not chosen:
        ctx.orders = None
        ctx.selected = None
        if entry.alternate:
            chosen = _run(entry.alternate, kept, ctx, steps)
        else:
            steps.append(Step("alternate", (), "no alternate methods"))
        if not chosen:
            ctx.orders = None
            chosen = kept
            steps.append(
                Step(
                    "last-resort",
                    tuple(kept),
                    "preferred and alternate left no zone: every healthy zone, in order",
                )
            )

    # 3. answer
    answer, zones_used = _take(chosen, ctx.orders, vips, entry.answers, ctx.selected)
    steps.append(Step("answer", zones_used, _answer_why(answer, ttl, scope, changing, False)))
    return Decision(
        name=entry.name,
        qtype=qtype,
        addresses=answer,
        ttl=ttl,
        zones=zones_used,
        scope_prefix=scope,
        steps=tuple(steps),
        client=client,
    )


def _take(
    chosen: Sequence[str],
    orders: Mapping[str, tuple[str, ...]] | None,
    vips: Mapping[str, tuple[str, ...]],
    limit: int,
    selected: dict[str, int] | None,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The answer step: the first `limit` distinct addresses of the chosen zones, in
    order (`orders` from ip_weight where set), and the zones they came from; counts
    them for least_selected when it ran (`selected`)."""
    addresses: list[str] = []
    used: list[str] = []
    for zone in chosen:
        took = False
        for address in orders[zone] if orders is not None and zone in orders else vips[zone]:
            if address not in addresses:
                addresses.append(address)
                took = True
                if len(addresses) >= limit:
                    break
        if took:
            used.append(zone)
        if len(addresses) >= limit:
            break
    if selected is not None:
        for zone in used:
            selected[zone] = selected.get(zone, 0) + 1
    return tuple(addresses), tuple(used)


def _answer_why(
    addresses: tuple[str, ...],
    ttl: int,
    scope: int | None,
    changing: list[str],
    fallback: bool,
) -> str:
    text = ", ".join(addresses) if addresses else "no address (NODATA)"
    text += f"; ttl {ttl}s"
    if fallback:
        text += " (changing_ttl: fallback answer)"
    elif changing:
        text += f" (changing_ttl: {_names(changing)} changing)"
    if scope is not None:
        text += f"; ECS scope /{scope}"
    return text


# --- planned decisions (the hot path) ----------------------------------------------
#
# A decision is a function of (name, type, the client's region, the zone states, the
# selection state, the random draws). Everything up to the first method that draws
# or counts (weight, ip_weight, least_selected, round_robin: `_STATEFUL`) depends on
# the first four only, so `plan` runs it once and `decide_planned` runs only the rest
# per query, with the same code and the same draws as `decide`: for the same inputs,
# rng state and selection state, both give the same answer and leave the same state
# (tests/dns/test_policy.py checks it on random configs). The caller keeps a plan
# for as long as its inputs hold: one per (name, type, region) and zone states,
# dropped when a zone state or the config changes.


class Outcome(NamedTuple):
    """What a decision answers, without the steps (`decide_planned`).

    A NamedTuple, not a frozen dataclass: one is built per query on the DNS hot path.
    """

    addresses: tuple[str, ...]
    zones: tuple[str, ...]
    ttl: int
    cname: str | None = None
    fallback: bool = False


_Chain = tuple[tuple[str, ...], tuple[Method, ...]]
"""(zones left by the deterministic head of a method list, the methods still to run)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """The part of one decision that does not change from query to query.

    For one name, type, client region and set of zone states: either the whole
    outcome (`fixed`, when no method that draws or counts is reached), or the zones
    the deterministic head of `preferred` and of `alternate` leave and the methods
    left to run per query (None: that list leaves no zone whatever happens).
    """

    entry: GslbEntry
    vips: Mapping[str, tuple[str, ...]]
    region: str | None
    health: Mapping[str, ZoneState]
    kept: tuple[str, ...]
    """The zones health kept (the last resort)."""
    ttl: int
    fixed: Outcome | None = None
    preferred: _Chain | None = None
    alternate: _Chain | None = None
    located: tuple[str, Located] = ("", Located(None, ""))
    """What `_Ctx.locate` returns for the topology method: the region, no text."""
    weighted: _Weighted | None = None
    """The commonest tail, precomputed: `preferred` ends with `weight` alone."""
    table: GslbTable | None = None
    """The compiled table, for methods left to run that read it (`topology` after a
    `weight`: the region's zones)."""


class _Weighted(NamedTuple):
    """A tail that is `weight` alone, on zones of which one at least weighs > 0.

    Then `weight` always leaves a zone, so `alternate` is never reached and the
    answer is the first `answers` addresses of the drawn order. The draws are
    `_weight`'s: none for a single zone, else one `rng.random()` per positive-weight
    zone, in order, and the zone with the largest u ** (1 / w) first.
    """

    single: bool
    """One zone given: no draw."""
    keyed: tuple[tuple[float, int, str], ...]
    """(1 / weight, position, zone) of the positive-weight zones, in order."""
    first: Mapping[str, Outcome] | None
    """With answers = 1: zone -> the outcome when it is drawn first."""


def needs_region(entry: GslbEntry) -> bool:
    """Whether decisions for `entry` depend on the client's region (topology)."""
    return any(m is _topology for _, m in entry.preferred + entry.alternate)


def plan(
    name: str,
    qtype: str,
    region: str | None,
    table: GslbTable,
    health: Mapping[str, ZoneState],
) -> Plan | None:
    """Precompute the decision for a name, a type and clients of one region.

    Args:
        name: The GSLB name (any case, with or without the trailing dot).
        qtype: The query type, as for `decide`.
        region: The client's region (`RegionMap.region_of`); ignored, and any value
            will do, when `needs_region(entry)` is false.
        table: From `compile_gslb`.
        health: The zone states the plan is valid for; the caller must drop the plan
            when they change.

    Returns:
        The plan, or None when `name` is not a GSLB name.
    """
    entry = table.get(name)
    if entry is None:
        return None
    if entry.cname is not None:
        fixed = Outcome((), (), entry.ttl, cname=entry.cname)
        return Plan(entry, {}, region, health, (), entry.ttl, fixed)
    if qtype == "A":
        vips, fallback = entry.vips4, entry.fallback4
    elif qtype == "AAAA":
        vips, fallback = entry.vips6, entry.fallback6
    else:
        return Plan(entry, {}, region, health, (), entry.ttl, Outcome((), (), entry.ttl))
    kept: list[str] = []
    changing = False
    for zone in entry.candidates:
        st = health.get(zone)
        if st is not None:
            changing = changing or st.changing
            if st.up and zone in vips:
                kept.append(zone)
    ttl = entry.changing_ttl if changing else entry.ttl
    if not vips:
        return Plan(entry, vips, region, health, (), ttl, Outcome((), (), ttl))
    if not kept:
        zones, addresses = fallback
        fixed = Outcome(addresses, zones, entry.changing_ttl, fallback=True)
        return Plan(entry, vips, region, health, (), entry.changing_ttl, fixed)
    located = ("", Located(region, ""))
    ctx = _Ctx(entry, vips, _NO_CLIENT, table, health, SelectionState(), random.Random(0))
    ctx.located = located
    preferred = _head(entry.preferred, kept, ctx)
    if preferred is not None and not preferred[1]:
        fixed = Outcome(*_take(preferred[0], None, vips, entry.answers, None), ttl)
        return Plan(entry, vips, region, health, tuple(kept), ttl, fixed)
    alternate = _head(entry.alternate, kept, ctx) if entry.alternate else None
    if preferred is None:
        if alternate is None:
            fixed = Outcome(*_take(kept, None, vips, entry.answers, None), ttl)
            return Plan(entry, vips, region, health, tuple(kept), ttl, fixed)
        if not alternate[1]:
            fixed = Outcome(*_take(alternate[0], None, vips, entry.answers, None), ttl)
            return Plan(entry, vips, region, health, tuple(kept), ttl, fixed)
    weighted = None
    if preferred is not None and preferred[1] == (_weight,):
        zones = preferred[0]
        keyed = tuple(
            (1.0 / entry.weights[z], i, z)
            for i, z in enumerate(zones)
            if entry.weights.get(z, 0) > 0
        )
        if keyed:
            first = None
            if entry.answers == 1:
                first = {z: Outcome((vips[z][0],), (z,), ttl) for _, _, z in keyed}
            weighted = _Weighted(len(zones) == 1, keyed, first)
    return Plan(
        entry,
        vips,
        region,
        health,
        tuple(kept),
        ttl,
        None,
        preferred,
        alternate,
        located,
        weighted,
        table,
    )


def _head(methods: tuple[tuple[str, Method], ...], zones: list[str], ctx: _Ctx) -> _Chain | None:
    """Run `methods` up to the first stateful one; None if they leave no zone."""
    for i, (_, method) in enumerate(methods):
        if method in _STATEFUL:
            return tuple(zones), tuple(m for _, m in methods[i:])
        zones, _why = method(zones, ctx)
        if not zones:
            return None
    return tuple(zones), ()


def decide_planned(p: Plan, state: SelectionState, rng: random.Random) -> Outcome:
    """The outcome of a planned decision: what `decide` answers for the same inputs.

    Runs the methods the plan left (the random and counting ones, and what follows
    them), updating `state` and drawing from `rng` exactly as `decide` would.
    """
    if p.fixed is not None:
        return p.fixed
    w = p.weighted
    if w is not None:
        if w.single:
            chosen = [w.keyed[0][2]]
        else:
            rand = rng.random
            if w.first is not None:
                # Only the first zone matters: the largest u ** (1 / w), the earliest
                # on a tie (as the sort below), with the same draws.
                best, top = -1.0, ""
                for inv, _i, z in w.keyed:
                    u = rand() ** inv
                    if u > best:
                        best, top = u, z
                return w.first[top]
            drawn = sorted([(-(rand() ** inv), i, z) for inv, i, z in w.keyed])
            chosen = [k[2] for k in drawn]
        if w.first is not None:
            return w.first[chosen[0]]
        addresses, zones = _take(chosen, None, p.vips, p.entry.answers, None)
        return Outcome(addresses, zones, p.ttl)
    entry = p.entry
    ctx = _Ctx(entry, p.vips, _NO_CLIENT, p.table or _NO_TABLE, p.health, state, rng)
    ctx.located = p.located
    chosen = _tail(p.preferred, ctx) if p.preferred is not None else []
    if not chosen:
        ctx.orders = None
        ctx.selected = None
        chosen = _tail(p.alternate, ctx) if p.alternate is not None else []
        if not chosen:
            ctx.orders = None
            chosen = list(p.kept)
    addresses, zones = _take(chosen, ctx.orders, p.vips, entry.answers, ctx.selected)
    return Outcome(addresses, zones, p.ttl)


def _tail(chain: _Chain, ctx: _Ctx) -> list[str]:
    zones = list(chain[0])
    for method in chain[1]:
        zones, _why = _FAST.get(method, method)(zones, ctx)
        if not zones:
            break
    return zones


def _weight_fast(zones: list[str], ctx: _Ctx) -> tuple[list[str], str]:
    """`_weight` without the explanation (the same draws)."""
    weights = ctx.entry.weights
    if len(zones) == 1 and weights.get(zones[0], 0) > 0:
        return zones, ""
    keyed: list[tuple[float, int, str]] = []
    rand = ctx.rng.random
    for i, zone in enumerate(zones):
        w = weights.get(zone, 0)
        if w > 0:
            keyed.append((-(rand() ** (1.0 / w)), i, zone))
    keyed.sort()
    return [k[2] for k in keyed], ""


def _round_robin_fast(zones: list[str], ctx: _Ctx) -> tuple[list[str], str]:
    """`_round_robin` without the explanation (the same turns)."""
    state = ctx.state
    key = (ctx.entry.name, tuple(zones))
    turn = state.rotations.get(key)
    if turn is None:
        if len(state.rotations) >= state.max_keys:
            state.rotations.clear()
        turn = 0
    state.rotations[key] = turn + 1
    start = turn % len(zones)
    return zones[start:] + zones[:start], ""


def _least_selected_fast(zones: list[str], ctx: _Ctx) -> tuple[list[str], str]:
    """`_least_selected` without the explanation (the same counters)."""
    state = ctx.state
    key = (ctx.entry.name, tuple(zones))
    counts = state.selected.get(key)
    if counts is None:
        if len(state.selected) >= state.max_keys:
            state.selected.clear()
        counts = state.selected[key] = {}
    ctx.selected = counts
    return sorted(zones, key=lambda z: counts.get(z, 0)), ""


_STATEFUL: frozenset[Method] = frozenset({_weight, _ip_weight, _least_selected, _round_robin})
"""Methods that draw from the rng or count in SelectionState: run per query."""
_FAST: dict[Method, Method] = {
    _weight: _weight_fast,
    _round_robin: _round_robin_fast,
    _least_selected: _least_selected_fast,
}
"""Stateful methods -> the same without building the `why` text (ip_weight: as is)."""
_NO_CLIENT = ClientInfo("")
_NO_TABLE = GslbTable(names={}, regions=RegionMap())
"""Stands in for the table of a plan made without one."""


# --- explain ------------------------------------------------------------------------


def explain(decision: Decision) -> str:
    """Render a decision step by step, for `zonegate dns explain` and /explain.

    Example::

        api.example.test A for 1.2.3.4 (ECS 1.2.3.0/24)
          1. health              -> changping, yanqing
             changping up: 3/3 backends healthy; yanqing up: 3/3 backends healthy
          2. preferred:topology  -> changping
             client 1.2.3.0/24 -> region north (prefix 1.2.0.0/16) -> zones changping
          3. preferred:weight    -> changping
             one zone: changping (weight 100)
          4. answer              -> changping
             127.0.0.11; ttl 30s; ECS scope /24
        answer: A 127.0.0.11 (changping), ttl 30s, ECS scope /24

    Args:
        decision: What `decide` returned.

    Returns:
        Multi-line text, no trailing newline.
    """
    head = f"{decision.name} {decision.qtype}"
    client = decision.client
    if client is not None:
        head += f" for {client.ip}"
        extras = []
        if client.subnet is not None:
            extras.append(f"ECS {client.subnet}")
        if client.device_id is not None:
            extras.append(f"device {client.device_id}")
        if extras:
            head += f" ({', '.join(extras)})"
    lines = [head]
    width = max((len(s.stage) for s in decision.steps), default=0)
    for i, s in enumerate(decision.steps, 1):
        lines.append(f"  {i}. {s.stage:<{width}}  -> {_names(s.kept)}")
        lines.append(f"     {s.why}")
    if decision.cname is not None:
        result = f"CNAME {decision.cname}"
    elif decision.addresses:
        result = f"{decision.qtype} {', '.join(decision.addresses)}"
        if decision.zones:
            result += f" ({', '.join(decision.zones)})"
    else:
        result = "no address (NODATA)"
    result += f", ttl {decision.ttl}s"
    if decision.scope_prefix is not None:
        result += f", ECS scope /{decision.scope_prefix}"
    if decision.fallback:
        result += ", FALLBACK: no candidate zone is up"
    lines.append(f"answer: {result}")
    return "\n".join(lines)


__all__ = [
    "METHODS",
    "CountryOf",
    "GslbEntry",
    "GslbTable",
    "Located",
    "Outcome",
    "Plan",
    "RegionMap",
    "SelectionState",
    "compile_gslb",
    "decide",
    "decide_planned",
    "explain",
    "needs_region",
    "plan",
]
