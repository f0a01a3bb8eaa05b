"""`zonegate dns`: the authoritative GSLB server over UDP and TCP (shell).

Theory of operation
-------------------
Start: load the topology, compile the zones (`dns.zonedata`) and the GSLB table
(`dns.policy`), probe every zone once (`ZoneProber.first_round`), and only then bind
UDP and TCP and print "zonegate dns ready: ...": no answer is given before zone
health is known.

Per query (`DnsService.respond`, the hot path, the same for UDP and TCP):

    bytes ─ codec.parse ─┬─ None ─────────────> drop (count)
                         ├─ DnsFormError ─────> FORMERR, header only
                         └─ Query ─ opcode/EDNS version/class checks (NOTIMP, BADVERS,
                                    REFUSED) ─ zones.names[qname_lower][qtype]
                                      ├─ Template ─> ID + head + question + body (+ OPT)
                                      ├─ GSLB ─────> plan (cached) + its per-query tail
                                      │              -> template (ECS echoed with scope)
                                      └─ None ─────> REFUSED (not our zone)
    UDP only: larger than the client's size (512 without EDNS, else its EDNS size up
    to ours, 1232) -> TC, question only (RFC 1035 §4.2.1, RFC 6891 §7); then RRL.

GSLB decisions are decided per query, exactly as `policy.decide` would, but not
from scratch: `policy.plan` precomputes, per (name, type, client region), the part
of the chain that depends only on those and on the zone states (health, topology,
capacity, ...), and `policy.decide_planned` runs the rest per query (the weighted
draws, round robin and least-selected turns). Plans are dropped whenever a zone
state changes (any field: up, sessions, rtt, changing) and at every reload. The
client's region is cached per resolver address / ECS subnet (a pure function of the
address and the config, dropped at reload).

UDP answers to static names are also kept by query bytes (`DnsService.answers`: the
message after its ID -> the response after its ID): the next identical query is
answered by `UdpResponder` with one dict lookup. Only answers that depend on nothing but
those bytes and the config are kept (the static fast path, RRL off); dropped at
reload.

Response rate limiting (`ResponseRateLimiter`, UDP only: TCP cannot be spoofed) is
BIND's design reduced to a token bucket per (client /24 or /56, answer), `dns.rrl`
responses per second with one second of burst; over the limit every
`dns.rrl_slip`-th response goes out truncated (a real client retries over TCP) and
the others are dropped, so a spoofed victim receives at most a trickle of small
packets (RFC 8906 explains why silence alone hurts real clients).

TCP (RFC 7766): 2-byte length framing, pipelined queries answered in order, at most
`dns.tcp_max_connections` connections (more are closed at once), closed after
`dns.tcp_idle` without a query; reading pauses while the peer does not read.

SIGHUP (or POST /reload on the admin endpoint) reloads the file: a file that does
not load or compile is refused and the last good data keeps serving.

Admin endpoint: GET /metrics (Prometheus), /status (JSON), /healthz,
/explain?name=&client=&subnet=&type=&device_id= (the decision, step by step), POST /reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import random
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import dns.flags
import dns.message
import dns.rdatatype
import httptools
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from zonegate import adminhttp
from zonegate.control.follow import NO_CONTROL, ControlFollower, ControlOptions, start_following
from zonegate.control.model import DesiredState
from zonegate.dns.codec import (
    ANY,
    AXFR,
    BADVERS,
    CLASS_IN,
    CNAME,
    ECS_FAMILY_IPV4,
    EDNS_UDP_SIZE,
    FORMERR,
    IXFR,
    MAX_TCP_MESSAGE,
    NOERROR,
    NOTIMP,
    NXDOMAIN,
    OPCODE_MASK,
    OPT_PLAIN,
    RCODE_NAMES,
    REFUSED,
    SERVFAIL,
    TYPE_CODES,
    TYPE_NAMES,
    A,
    DnsFormError,
    Ecs,
    Query,
    Rr,
    Template,
    addresses_template,
    build_template,
    error_response,
    formerr_response,
    opt_for,
    parse,
    render,
    text_to_wire,
    truncated_response,
)
from zonegate.dns.model import ClientInfo, ZoneState
from zonegate.dns.policy import (
    GslbTable,
    Plan,
    SelectionState,
    compile_gslb,
    decide,
    decide_planned,
    explain,
    needs_region,
    plan,
)
from zonegate.dns.zoneadmin import overlay_admin
from zonegate.dns.zonedata import (
    DEFAULT,
    MAX_CHAIN,
    Answer,
    CnameToGslb,
    GslbName,
    ZoneData,
    compile_zones,
)
from zonegate.dns.zonehealth import ZoneHealthCollector, ZoneProber
from zonegate.errors import ConfigError, ConfigErrors, bug
from zonegate.topology.load import load_topology
from zonegate.topology.schema import Topology

log = logging.getLogger("zonegate.dns")

DECISION_CACHE_MAX = 65536
"""GSLB plans, client regions, answer shapes and ECS options kept before each cache
starts over (bounds memory under random ECS subnets)."""
ANSWER_CACHE_MAX = 16384
"""UDP answers kept by query bytes (static names; more than the names: case and EDNS
variants) before the cache starts over."""
RRL_MAX_ENTRIES = 100_000
"""Rate-limit buckets kept before idle ones are pruned."""
TICK = 0.05
"""Seconds between updates of the coarse clock and the zone states the hot path reads."""
UDP_RCVBUF = 4 << 20
UDP_BATCH = 64  # datagrams answered per socket readiness before other callbacks run
"""Receive buffer asked for the UDP socket: absorbs bursts while a slow path runs."""

_Decided = tuple[tuple[str, ...], str | None, int, int | None]
"""One GSLB name decided: (addresses, CNAME target, TTL, ECS scope or None)."""

_QUESTION_ONLY = b"\x00\x01\x00\x00\x00\x00\x00\x00"
"""QDCOUNT 1, ANCOUNT, NSCOUNT and ARCOUNT 0 (RFC 1035 §4.1.1)."""
_QUESTION_OPT = b"\x00\x01\x00\x00\x00\x00\x00\x01"
_OPT_START = b"\x00\x00\x29"  # root owner, type OPT (RFC 6891 §6.1.2)

SEND, DROP, SLIP = 0, 1, 2
"""`ResponseRateLimiter.check` verdicts."""


# --- response rate limiting (sans-IO: `now` is passed in) ---------------------------


class ResponseRateLimiter:
    """Token buckets per (client network, answer), as BIND's RRL (simplified).

    Args:
        rate: Responses per second per key (the bucket holds one second's worth).
        slip: Over the limit, every `slip`-th response is SLIP (send truncated), the
            rest DROP; 0 never slips, 1 always slips.
        max_entries: Buckets kept; beyond, buckets idle for a second (so full again,
            equivalent to absent) are dropped, and if that is not enough, all.
    """

    __slots__ = ("buckets", "max_entries", "rate", "slip")

    def __init__(self, rate: int, slip: int, max_entries: int = RRL_MAX_ENTRIES) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.slip = slip
        self.max_entries = max_entries
        self.buckets: dict[Any, list[float]] = {}

    def check(self, key: Any, now: float) -> int:
        """Count one response for `key` at `now`: SEND, DROP or SLIP."""
        b = self.buckets.get(key)
        rate = self.rate
        if b is None:
            if len(self.buckets) >= self.max_entries:
                self._prune(now)
            self.buckets[key] = [rate - 1.0, now, 0.0]
            return SEND
        tokens = b[0] + (now - b[1]) * rate
        if tokens > rate:
            tokens = rate
        b[1] = now
        if tokens >= 1.0:
            b[0] = tokens - 1.0
            return SEND
        b[0] = tokens
        b[2] += 1
        if self.slip and b[2] % self.slip == 0:
            return SLIP
        return DROP

    def _prune(self, now: float) -> None:
        stale = [k for k, b in self.buckets.items() if now - b[1] >= 1.0]
        for k in stale:
            del self.buckets[k]
        if len(self.buckets) >= self.max_entries:
            self.buckets.clear()


def client_network(ip: str) -> str | bytes:
    """The RRL key part of a client: its /24 (IPv4) or /56 (IPv6)."""
    if ":" not in ip:
        return ip[: ip.rfind(".")]
    try:
        return socket.inet_pton(socket.AF_INET6, ip.partition("%")[0])[:7]
    except OSError:
        return ip


# --- compiled configuration ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Compiled:
    """Everything one config version serves with; swapped as a whole."""

    version: int
    topology: Topology
    zones: ZoneData
    gslb: GslbTable
    serial: int


def compile_file(path: str, version: int, serial: int) -> Compiled:
    """Load and compile a topology file.

    Raises:
        ConfigErrors | ConfigError: the file does not load or compile.
    """
    topo = load_topology(path)
    zones = compile_zones(topo, serial=serial, source=path)
    country_of = None
    if topo.dns.geoip_db is not None:
        from zonegate.dns.maxmind import open_country_lookup

        country_of = open_country_lookup(topo.dns.geoip_db)
    table = compile_gslb(topo, country_of=country_of)
    return Compiled(version, topo, zones, table, serial)


def _serial(previous: int = 0) -> int:
    """SOA serial: the load time in seconds, always above the previous one."""
    return max(int(time.time()), previous + 1) & 0xFFFFFFFF


# --- the service: bytes in, bytes out -----------------------------------------------


class DnsService:
    """Answers queries from the compiled data, the zone states and the policy.

    Shared by the UDP and TCP protocols. The shell keeps `now` (a coarse monotonic
    clock) and `health` (the zone states) current; `swap` installs a new config.
    Assigning `health` a mapping that differs from the current one drops the GSLB
    plans (they were computed for the old states).
    """

    def __init__(self, compiled: Compiled, health: Mapping[str, ZoneState]) -> None:
        self.compiled = compiled
        self.zones = compiled.zones
        self.names = compiled.zones.names
        self.table = compiled.gslb
        self._health: Mapping[str, ZoneState] = health
        self.state = SelectionState()
        self.rng = random.Random()
        self.now = 0.0
        self.answers: dict[bytes, tuple[bytes, int]] = {}
        """UDP query bytes after the ID -> (response bytes after the ID, `queries` key),
        for answers that depend on those bytes and the config only (static names)."""
        self._plans: dict[tuple[str, int, str | None], Plan] = {}
        self._regions: dict[Any, str | None] = {}
        self._needs_region: dict[str, bool] = {}
        self.rrl: ResponseRateLimiter | None = None
        self._packed: dict[str, bytes] = {}
        self._opts: dict[tuple[Any, int, bool], bytes] = {}
        self._shapes: dict[tuple[bytes, int, tuple[str, ...], int], Template] = {}
        # counters
        self.queries: dict[int, int] = {}
        """(rcode << 17 | qtype) -> responses; types above 255 count as 256, and 0x10000
        marks FORMERR (no question)."""
        self.dropped = 0
        self.truncated = 0
        self.rrl_dropped = 0
        self.rrl_slipped = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self.configure(compiled.topology)

    def configure(self, topo: Topology) -> None:
        dns_cfg = topo.dns
        if dns_cfg.rrl > 0:
            self.answers.clear()  # every UDP answer goes through the limiter now
        if dns_cfg.rrl <= 0:
            self.rrl = None
        elif self.rrl is None or self.rrl.rate != dns_cfg.rrl or self.rrl.slip != dns_cfg.rrl_slip:
            self.rrl = ResponseRateLimiter(dns_cfg.rrl, dns_cfg.rrl_slip)

    def swap(self, compiled: Compiled) -> None:
        """Serve a new config version (one reference at a time, between queries)."""
        self.compiled = compiled
        self.zones = compiled.zones
        self.names = compiled.zones.names
        self.table = compiled.gslb
        self.answers.clear()  # in place: `UdpResponder` binds its `get`
        self._plans = {}
        self._regions = {}
        self._needs_region = {}
        self._shapes = {}
        self.configure(compiled.topology)

    @property
    def health(self) -> Mapping[str, ZoneState]:
        """The zone states decisions use (zone -> state; a missing zone is down)."""
        return self._health

    @health.setter
    def health(self, health: Mapping[str, ZoneState]) -> None:
        if health is not self._health:
            if health != self._health:
                self._plans = {}
            self._health = health

    def health_changed(self, health: Mapping[str, ZoneState]) -> None:
        """A zone flipped: use `health` now and drop every plan."""
        self._health = health
        self._plans = {}

    # -- the hot path

    def respond(self, data: bytes, ip: str, udp: bool) -> bytes | None:
        """The response to one message from `ip`, or None to send nothing.

        Raises nothing for any input (a bug goes to the caller's boundary).
        """
        # Fast path, for the commonest queries: opcode QUERY, QR clear, one question,
        # class IN, a static name, and nothing else but perhaps a bare OPT record (EDNS 0,
        # no options). No parse: `names` holds well-formed wire names only, so a hit on
        # the bytes between the header and the type proves the question well formed and
        # the message complete (`parse` would accept it as is).
        if len(data) > 16 and not data[2] & 0xF8 and self.rrl is None:
            counts = data[4:12]
            if counts == _QUESTION_ONLY:
                qend = len(data)
                opt = b""
                limit = 512
                edns = 0
            elif (
                counts == _QUESTION_OPT
                and data[-11:-8] == _OPT_START
                and data[-6:-4] == b"\x00\x00"  # extended rcode 0, version 0
                and data[-2:] == b"\x00\x00"  # no options
            ):
                qend = len(data) - 11
                size = (data[-8] << 8) | data[-7]
                limit = 512 if size < 512 else (size if size < EDNS_UDP_SIZE else EDNS_UDP_SIZE)
                opt = OPT_PLAIN[data[-4] >> 7]
                edns = 4
            else:
                qend = 0
            if qend > 16 and data[qend - 2 : qend] == b"\x00\x01":
                node = self.names.get(data[12 : qend - 4].lower())
                if node is not None:
                    qtype = (data[qend - 4] << 8) | data[qend - 3]
                    t = node.get(qtype) or node[DEFAULT]
                    if qtype < IXFR:
                        static = isinstance(t, Template)
                        if not static:
                            # A GSLB name without ECS (no OPT options): decided on the
                            # resolver's address, no parse. Decided once: answered here
                            # whatever its size (over the limit: TC, as the slow path).
                            t, _ = self._gslb(data[12 : qend - 4].lower(), qtype, t, ip, None)
                        resp = (
                            data[:2]
                            + t.heads[edns | (data[2] & 1) | ((data[3] >> 3) & 2)]
                            + data[12:qend]
                            + t.body
                            + opt
                        )
                        # A static answer over the UDP limit goes the slow way (TC).
                        if not static or len(resp) <= limit or not udp:
                            key = t.rcode << 17 | qtype
                            self.queries[key] = self.queries.get(key, 0) + 1
                            if not udp:
                                if len(resp) > MAX_TCP_MESSAGE:
                                    return error_response(parse(data), SERVFAIL)  # type: ignore[arg-type]
                                return resp
                            if len(resp) > limit:
                                self.truncated += 1
                                return truncated_response(parse(data), resp)  # type: ignore[arg-type]
                            if static:
                                # Depends on these bytes and the config only (RRL off).
                                if len(self.answers) >= ANSWER_CACHE_MAX:
                                    self.answers.clear()
                                self.answers[data[2:]] = (resp[2:], key)
                            return resp
        try:
            q = parse(data)
        except DnsFormError as exc:
            key = FORMERR << 17 | 0x10000
            self.queries[key] = self.queries.get(key, 0) + 1
            resp = formerr_response(exc, data)
            if udp and self.rrl is not None:
                return self._limit(ip, b"", resp, None)
            return resp
        if q is None:
            self.dropped += 1
            return None
        qtype = q.qtype
        answered = False
        if q.flags & OPCODE_MASK:
            rcode = NOTIMP
        elif q.edns > 0:
            rcode = BADVERS  # RFC 6891 §6.1.3
        elif q.qclass != CLASS_IN:
            rcode = REFUSED  # CLASS ANY (255) too: we hold IN data only (docs/dns.md)
        elif qtype in (AXFR, IXFR):
            rcode = REFUSED  # no zone transfers
        else:
            node = self.names.get(q.qname_lower)
            found: Answer | None
            if node is not None:
                found = node.get(qtype) or node[DEFAULT]
            else:
                found = self.zones.miss(q.qname_lower, qtype)
            if found is None:
                rcode = REFUSED
            else:
                scope = 0
                if isinstance(found, Template):
                    t = found
                else:
                    t, scope = self._dynamic(q, found, ip)
                rcode = t.rcode
                answered = True
                if q.edns < 0:
                    resp = (
                        data[:2]
                        + t.heads[(data[2] & 1) | ((data[3] >> 3) & 2)]
                        + q.question
                        + t.body
                    )
                else:
                    resp = (
                        data[:2]
                        + t.heads[4 | (data[2] & 1) | ((data[3] >> 3) & 2)]
                        + q.question
                        + t.body
                        + (OPT_PLAIN[q.do] if q.ecs is None else self._ecs_opt(q, scope))
                    )
        if not answered:
            resp = error_response(q, rcode)
        key = rcode << 17 | (qtype if qtype < 256 else 256)  # bounded: random types
        self.queries[key] = self.queries.get(key, 0) + 1
        if udp:
            size = q.udp_size
            limit = 512 if q.edns < 0 else (size if size < EDNS_UDP_SIZE else EDNS_UDP_SIZE)
            if len(resp) > limit:
                resp = truncated_response(q, resp)
                self.truncated += 1
            if self.rrl is not None:
                # Answers count per name and type; negative answers and errors per
                # client network, so random names do not each get a fresh bucket.
                what = q.qname_lower + q.question[-4:-2] if rcode == NOERROR else b""
                return self._limit(ip, what, resp, q)
        elif len(resp) > MAX_TCP_MESSAGE:
            resp = error_response(q, SERVFAIL)
        return resp

    def _ecs_opt(self, q: Query, scope: int) -> bytes:
        """The OPT with the ECS echo, cached: resolvers repeat the same few subnets."""
        key = (q.ecs, scope, q.do)
        opt = self._opts.get(key)
        if opt is None:
            if len(self._opts) >= DECISION_CACHE_MAX:
                self._opts = {}
            opt = self._opts[key] = opt_for(q, scope)
        return opt

    def _limit(self, ip: str, what: bytes, resp: bytes, q: Query | None) -> bytes | None:
        assert self.rrl is not None
        verdict = self.rrl.check((client_network(ip), what), self.now)
        if verdict == SEND:
            return resp
        if verdict == SLIP:
            self.rrl_slipped += 1
            return truncated_response(q, resp) if q is not None else resp
        self.rrl_dropped += 1
        return None

    # -- GSLB

    def _dynamic(self, q: Query, marker: GslbName | CnameToGslb, ip: str) -> tuple[Template, int]:
        ecs = q.ecs
        if ecs is not None and ecs.source == 0:
            ecs = None  # RFC 7871 §7.2.1: source 0 asks for an untailored answer
        t, scope = self._gslb(q.qname_lower, q.qtype, marker, ip, ecs)
        return t, (scope if ecs is not None else 0)

    def _gslb(
        self,
        qname_lower: bytes,
        qtype: int,
        marker: GslbName | CnameToGslb,
        ip: str,
        ecs: Ecs | None,
    ) -> tuple[Template, int]:
        """A GSLB answer from planned decisions; the commonest case (addresses owned
        by the name, their template built before) without the general machinery."""
        qtype_text = TYPE_NAMES.get(qtype) or f"TYPE{qtype}"
        first: _Decided | None = None
        if type(marker) is GslbName:
            first = self._planned(marker.name, qtype, qtype_text, ip, ecs)
            if first is not None and first[1] is None and first[0]:
                t = self._shapes.get((qname_lower, qtype, first[0], first[2]))
                if t is not None:
                    return t, first[3] or 0

        def one(name: str) -> _Decided | None:
            return self._planned(name, qtype, qtype_text, ip, ecs)

        return self._answer(qname_lower, qtype, marker, one, first)

    def _planned(
        self, name: str, qtype: int, qtype_text: str, ip: str, ecs: Ecs | None
    ) -> _Decided | None:
        """One GSLB decision from its plan (computed on a miss) and the per-query tail."""
        needs = self._needs_region.get(name)
        if needs is None:
            entry = self.table.get(name)
            needs = self._needs_region[name] = entry is not None and needs_region(entry)
        region = self._region(ip, ecs) if needs else None
        key = (name, qtype, region)
        p = self._plans.get(key)
        if p is None:
            self.cache_misses += 1
            p = plan(name, qtype_text, region, self.table, self._health)
            if p is None:
                return None
            if len(self._plans) >= DECISION_CACHE_MAX:
                self._plans = {}
            self._plans[key] = p
        else:
            self.cache_hits += 1
        o = decide_planned(p, self.state, self.rng)
        if o.cname is not None:
            scope: int | None = 0
        elif ecs is None:
            scope = None
        else:
            scope = p.entry.scope4 if ecs.family == ECS_FAMILY_IPV4 else p.entry.scope6
        return o.addresses, o.cname, o.ttl, scope

    def _region(self, ip: str, ecs: Ecs | None) -> str | None:
        """The region of the client network (the ECS subnet, else the address), cached:
        a function of the address and the config only."""
        key: Any = ip if ecs is None else ecs
        try:
            return self._regions[key]
        except KeyError:
            pass
        regions = self.table.regions
        region: str | None = None
        if ecs is not None:
            width = 4 if ecs.family == ECS_FAMILY_IPV4 else 16
            value = int.from_bytes(ecs.address.ljust(width, b"\0"), "big")
            region = regions.region_of(4 if width == 4 else 6, value, ecs.source)
        else:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                pass  # not an address: no region (as policy.decide)
            else:
                region = regions.region_of(addr.version, int(addr), addr.max_prefixlen)
        if len(self._regions) >= DECISION_CACHE_MAX:
            self._regions = {}
        self._regions[key] = region
        return region

    def gslb_answer(
        self,
        qname_lower: bytes,
        qtype: int,
        marker: GslbName | CnameToGslb,
        client: ClientInfo,
        *,
        state: SelectionState | None = None,
        rng: random.Random | None = None,
        trace: list[str] | None = None,
    ) -> tuple[Template, int]:
        """Decide a GSLB answer with `policy.decide` (every step and its reasons) and
        build its template; also returns the ECS scope. The slow path, for `explain`
        (`trace` collects the texts) and tests; queries use the planned decisions.
        """
        qtype_text = TYPE_NAMES.get(qtype) or f"TYPE{qtype}"
        st = self.state if state is None else state
        draw = self.rng if rng is None else rng

        def one(name: str) -> _Decided | None:
            d = decide(name, qtype_text, client, self.table, self._health, st, draw)
            if d is None:
                return None
            if trace is not None:
                trace.append(explain(d))
            return d.addresses, d.cname, d.ttl, d.scope_prefix

        return self._answer(qname_lower, qtype, marker, one)

    def _answer(
        self,
        qname_lower: bytes,
        qtype: int,
        marker: GslbName | CnameToGslb,
        one: Callable[[str], _Decided | None],
        first: _Decided | None = None,
    ) -> tuple[Template, int]:
        """The template of a GSLB answer, deciding each GSLB name met with `one`
        (`first`: the first name's decision, already made).

        CNAMEs decided by the policy are followed inside our data (static records,
        other GSLB names), at most MAX_CHAIN steps.
        """
        qtype_text = TYPE_NAMES.get(qtype) or f"TYPE{qtype}"
        answer: list[Rr] = []
        authority: list[Rr] = []
        additional: list[Rr] = []
        rcode = NOERROR
        scope = 0
        if isinstance(marker, CnameToGslb):
            answer.extend(marker.chain)
            answer[0] = answer[0]._replace(owner=qname_lower)
            gslb = marker.target
            owner = gslb.wire
        else:
            gslb = marker
            owner = qname_lower
        for _ in range(MAX_CHAIN):
            d = first if first is not None else one(gslb.name)
            first = None
            if d is None:
                bug(f"dns: {gslb.name} is a GSLB name in the zone data but not in the table")
                return build_template(qname_lower, [], rcode=SERVFAIL), 0
            addresses, cname, ttl, scope_prefix = d
            if scope_prefix is not None and scope_prefix > scope:
                scope = scope_prefix
            if cname is None and not answer and addresses:
                # The common answer: addresses owned by the qname. Many clients get the
                # same few, so the template is shared by decision shape.
                shape = (qname_lower, qtype, addresses, ttl)
                t = self._shapes.get(shape)
                if t is None:
                    width = 4 if qtype == A else 16
                    packed = [p for p in map(self._pack, addresses) if len(p) == width]
                    if not packed:
                        authority.append(gslb.negative.soa)
                        break
                    if len(self._shapes) >= DECISION_CACHE_MAX:
                        self._shapes = {}
                    t = self._shapes[shape] = addresses_template(qname_lower, qtype, packed, ttl)
                return t, scope
            if cname is None:
                packed = [self._pack(a) for a in addresses]
                width = 4 if qtype_text == "A" else 16
                rrs = [Rr(owner, qtype, ttl, p) for p in packed if len(p) == width]
                answer.extend(rrs)
                if not rrs:
                    authority.append(gslb.negative.soa)  # NODATA (RFC 2308 §2.2)
                break
            target = text_to_wire(cname)
            answer.append(Rr(owner, CNAME, ttl, target, True))
            if qtype in (CNAME, ANY):
                break  # the CNAME alone, as a static CNAME answers (RFC 8482 §4.2)
            nxt: GslbName | None = None
            for _ in range(MAX_CHAIN):
                found = self.zones.chase(target, qtype)
                if found.kind == "cname":
                    answer.append(found.rrs[0])
                    target = found.rrs[0].rdata
                    continue
                if found.kind == "rrs":
                    answer.extend(found.rrs)
                elif found.kind in ("nodata", "nxdomain") and found.negative is not None:
                    authority.append(found.negative.soa)
                    if found.kind == "nxdomain":
                        rcode = NXDOMAIN  # RFC 6604 §3: the rcode of the last name
                elif found.kind == "gslb":
                    nxt = found.gslb
                elif found.kind == "referral":
                    authority.extend(found.rrs)  # RFC 1034 §4.3.2 step 3b
                    additional.extend(found.glue)
                break
            if nxt is None:
                break
            gslb = nxt
            owner = nxt.wire
        return build_template(qname_lower, answer, authority, additional, rcode=rcode), scope

    def _pack(self, address: str) -> bytes:
        packed = self._packed.get(address)
        if packed is None:
            if len(self._packed) > 100_000:
                self._packed.clear()
            packed = self._packed[address] = ipaddress.ip_address(address).packed
        return packed

    # -- explain

    def explain(
        self,
        name: str,
        client_text: str,
        qtype_text: str = "A",
        device_id: str | None = None,
        subnet_text: str | None = None,
    ) -> str:
        """How `name` is answered to `client_text` ('IP' or 'IP/PREFIX' for an ECS subnet).

        The policy runs on copies of the selection state, so explaining changes no
        round robin. Ends with the response as a resolver would see it.

        Args:
            name: The question name.
            client_text: The resolver's address ('IP/PREFIX': the ECS subnet too).
            qtype_text: The query type ('A', 'AAAA', 'MX', ... or a number).
            device_id: The DeviceID (HTTPDNS; shown only).
            subnet_text: The EDNS Client Subnet the resolver sends ('NET/PREFIX'), for a
                resolver address given apart ('IP'); host bits are cleared.

        Raises:
            ValueError: a bad name, type, client or subnet.
        """
        qtype = TYPE_CODES.get(qtype_text.upper())
        if qtype is None:
            if not qtype_text.isdigit():
                raise ValueError(f"unknown type {qtype_text!r}")
            qtype = int(qtype_text)
        wire = text_to_wire(name)
        ip, subnet = parse_client(client_text)
        if subnet_text is not None:
            if subnet is not None:
                raise ValueError("give the ECS subnet once: --client IP --subnet NET")
            subnet = ipaddress.ip_network(subnet_text, strict=False)
        client = ClientInfo(ip, subnet, device_id)
        qname = name.rstrip(".").lower() or "."
        answer = self.zones.lookup(wire, qtype)
        if answer is None:
            served = ", ".join(sorted(self.zones.domains)) or "none"
            return f"{qname} {qtype_text.upper()}: in none of our domains ({served}): REFUSED"
        lines = []
        scope = 0
        if isinstance(answer, Template):
            lines.append(f"{qname} {qtype_text.upper()}: static data")
            t = answer
        else:
            if isinstance(answer, CnameToGslb):
                lines.append(f"{qname} is a CNAME chain to the GSLB name {answer.target.name}")
            state = SelectionState(
                rotations=dict(self.state.rotations),
                selected={k: dict(v) for k, v in self.state.selected.items()},
            )
            trace: list[str] = []
            t, scope = self.gslb_answer(
                wire, qtype, answer, client, state=state, rng=random.Random(), trace=trace
            )
            lines.extend(trace)
            if subnet is None:
                scope = 0
        lines.append("response:")
        lines.append(_describe(qname, qtype, t, subnet, scope))
        return "\n".join(lines)


def _describe(qname: str, qtype: int, t: Template, subnet: Any, scope: int) -> str:
    """The template as a response to a plain query, in dig's text form."""
    q = dns.message.make_query(qname, dns.rdatatype.RdataType.make(qtype), use_edns=0)
    data = q.to_wire()
    parsed = parse(data)
    assert parsed is not None
    msg = dns.message.from_wire(render(data, parsed, t, scope))
    rcode = RCODE_NAMES.get(t.rcode, str(t.rcode))
    out = [f"  rcode {rcode}, flags {dns.flags.to_text(msg.flags)}"]
    for title, section in (("answer", msg.answer), ("authority", msg.authority)):
        for rrset in section:
            out.extend(f"  {title}: {line}" for line in rrset.to_text().splitlines())
    return "\n".join(out)


def parse_client(text: str) -> tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network | None]:
    """'IP' -> (ip, None); 'IP/PREFIX' -> (network address, the subnet, as ECS)."""
    if "/" in text:
        net = ipaddress.ip_network(text, strict=False)
        return str(net.network_address), net
    return str(ipaddress.ip_address(text)), None


# --- protocols ----------------------------------------------------------------------


class UdpResponder:
    """Answers the queries of one UDP socket from a reader callback on the event loop.

    A plain non-blocking socket, drained with `recvfrom`/`sendto` on each readiness
    (at most `UDP_BATCH` datagrams, then the loop runs its other callbacks): cheaper per
    datagram than an asyncio transport (bench/RESULTS.md, run 8). A query seen before
    whose answer depends on its bytes only (a static name) is answered from
    `DnsService.answers`: the query's ID, then the kept rest of the answer.
    """

    def __init__(
        self, svc: DnsService, sock: socket.socket, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.svc = svc
        self.sock = sock
        self.loop = loop
        self.send_errors = 0  # answers the kernel would not take (buffer full, ...)
        self.receive_errors = 0  # ICMP errors from earlier sends, reported on a receive
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        recvfrom = self.sock.recvfrom
        sendto = self.sock.sendto
        # Bound per call: `answers` and `queries` are only ever changed in place.
        cached = self.svc.answers.get
        queries = self.svc.queries
        for _ in range(UDP_BATCH):
            try:
                data, addr = recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.receive_errors += 1
                continue
            hit = cached(data[2:])
            if hit is not None:
                queries[hit[1]] += 1
                resp: bytes | None = data[:2] + hit[0]
            else:
                try:
                    resp = self.svc.respond(data, addr[0], True)
                except Exception as exc:
                    bug("dns: answering a UDP query failed", exc)
                    continue
                if resp is None:
                    continue
            try:
                sendto(resp, addr)
            except OSError:
                self.send_errors += 1

    def close(self) -> None:
        """Stop reading and close the socket."""
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()


class TcpLimits:
    """TCP connection accounting shared by the connections of one server."""

    def __init__(self, max_connections: int, idle: float) -> None:
        self.max_connections = max_connections
        self.idle = idle
        self.active = 0
        self.accepted = 0
        self.refused = 0
        self.idle_closed = 0


class _Tcp(asyncio.Protocol):
    """One TCP client: length-framed, pipelined queries (RFC 7766 §6.2.1.1, §8)."""

    def __init__(self, svc: DnsService, limits: TcpLimits, loop: asyncio.AbstractEventLoop):
        self.svc = svc
        self.limits = limits
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.ip = ""
        self.last = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        limits = self.limits
        if limits.active >= limits.max_connections:
            limits.refused += 1
            transport.close()
            return
        self.transport = transport  # type: ignore[assignment]
        limits.active += 1
        limits.accepted += 1
        self.counted = True
        peer = transport.get_extra_info("peername")
        self.ip = peer[0] if peer else ""
        self.last = self.loop.time()
        self.timer = self.loop.call_later(limits.idle, self._idle_check)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None:
            return
        self.last = self.loop.time()
        buf = self.buf
        buf += data
        out: list[bytes] = []
        while len(buf) >= 2:
            n = (buf[0] << 8) | buf[1]
            if len(buf) < 2 + n:
                break
            msg = bytes(buf[2 : 2 + n])
            del buf[: 2 + n]
            try:
                resp = self.svc.respond(msg, self.ip, False)
            except Exception as exc:
                bug("dns: answering a TCP query failed", exc)
                resp = None
            if resp is None:  # unparseable, or a response: not a DNS client
                if out:
                    transport.write(b"".join(out))
                transport.close()
                self.transport = None
                return
            out.append(struct.pack("!H", len(resp)) + resp)
        if out:
            transport.write(b"".join(out))

    def _idle_check(self) -> None:
        transport = self.transport
        if transport is None:
            return
        idle = self.loop.time() - self.last
        if idle >= self.limits.idle:
            self.limits.idle_closed += 1
            if transport.get_write_buffer_size():
                transport.abort()  # the peer does not read either
            else:
                transport.close()
            return
        self.timer = self.loop.call_later(self.limits.idle - idle, self._idle_check)

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.counted:
            self.limits.active -= 1
            self.counted = False
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None


# --- metrics and admin --------------------------------------------------------------


class _Collector:
    def __init__(self, server: DnsServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Any]:
        srv = self.server
        svc = srv.svc
        queries = CounterMetricFamily(
            "zonegate_dns_responses", "Responses by rcode and query type", labels=["rcode", "type"]
        )
        by_label: dict[tuple[str, str], int] = {}
        for key, n in svc.queries.items():
            rcode, qtype = key >> 17, key & 0x1FFFF
            qname = "none" if qtype == 0x10000 else TYPE_NAMES.get(qtype, "other")
            label = (RCODE_NAMES.get(rcode, str(rcode)), qname)
            by_label[label] = by_label.get(label, 0) + n
        for label, n in sorted(by_label.items()):
            queries.add_metric(list(label), n)
        rrl = CounterMetricFamily(
            "zonegate_dns_rrl", "Responses held back by rate limiting", labels=["action"]
        )
        rrl.add_metric(["drop"], svc.rrl_dropped)
        rrl.add_metric(["slip"], svc.rrl_slipped)
        truncated = CounterMetricFamily(
            "zonegate_dns_truncated", "UDP answers larger than the client takes (sent TC)"
        )
        truncated.add_metric([], svc.truncated)
        dropped = CounterMetricFamily(
            "zonegate_dns_dropped", "Messages dropped unanswered (no header, or a response)"
        )
        dropped.add_metric([], svc.dropped)
        cache = CounterMetricFamily(
            "zonegate_dns_decision_cache",
            "GSLB plan lookups (a miss computes the plan of a name, type and region)",
            labels=["result"],
        )
        cache.add_metric(["hit"], svc.cache_hits)
        cache.add_metric(["miss"], svc.cache_misses)
        tcp = GaugeMetricFamily("zonegate_dns_tcp_connections", "Open TCP connections")
        tcp.add_metric([], srv.tcp.active)
        tcp_events = CounterMetricFamily(
            "zonegate_dns_tcp_events", "TCP connections by outcome", labels=["event"]
        )
        tcp_events.add_metric(["accepted"], srv.tcp.accepted)
        tcp_events.add_metric(["refused_limit"], srv.tcp.refused)
        tcp_events.add_metric(["idle_closed"], srv.tcp.idle_closed)
        udp_errors = CounterMetricFamily(
            "zonegate_dns_udp_errors",
            "UDP socket errors: answers the kernel refused (send), ICMP errors (receive)",
            labels=["direction"],
        )
        udp_errors.add_metric(["send"], srv.udp.send_errors if srv.udp else 0)
        udp_errors.add_metric(["receive"], srv.udp.receive_errors if srv.udp else 0)
        reloads = CounterMetricFamily("zonegate_dns_reloads", "Reloads", labels=["result"])
        reloads.add_metric(["ok"], srv.reloads_ok)
        reloads.add_metric(["refused"], srv.reloads_failed)
        version = GaugeMetricFamily("zonegate_config_version", "Version of the topology in force")
        version.add_metric([], svc.compiled.version)
        yield from (
            queries,
            rrl,
            truncated,
            dropped,
            cache,
            tcp,
            tcp_events,
            udp_errors,
            reloads,
            version,
        )


class DnsServer:
    """The process: service, prober, sockets, admin endpoint, reload."""

    def __init__(self, path: str, compiled: Compiled) -> None:
        self.path = path
        self.svc = DnsService(compiled, {})
        self.prober: ZoneProber | None = None
        topo = compiled.topology
        self.tcp = TcpLimits(topo.dns.tcp_max_connections, topo.dns.tcp_idle)
        self.reloads_ok = 0
        self.reloads_failed = 0
        self.last_reload_error = ""
        self.listen = ""
        self.admin = ""
        self.udp: UdpResponder | None = None
        self.admin_states: Mapping[str, str] = {}
        """Zone admin states from the control plane (`--control`); empty: all enabled."""
        self.control_version = 0
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- health

    def zone_states(self) -> Mapping[str, ZoneState]:
        """What the policy decides on: probed health, with admin-disabled zones down."""
        probed = self.prober.states() if self.prober is not None else {}
        return overlay_admin(probed, self.admin_states, self.control_version)

    def on_zone_change(self, zone: str, old: ZoneState, new: ZoneState) -> None:
        if self.prober is not None:
            self.svc.health_changed(self.zone_states())

    def apply_control(self, state: DesiredState) -> None:
        """Follow a control plane version: its zone admin states (split maps are the
        SDK's and HTTPDNS's business; DNS names are per zone already)."""
        changed = dict(state.zones) != dict(self.admin_states)
        self.admin_states = state.zones
        self.control_version = state.version
        if changed:
            self.svc.health_changed(self.zone_states())

    def tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self.svc.now = loop.time()
        if self.prober is not None:
            self.svc.health = self.zone_states()
        loop.call_later(TICK, self.tick, loop)

    # -- reload

    async def reload(self) -> tuple[bool, str]:
        async with self._lock:
            current = self.svc.compiled
            try:
                compiled = await asyncio.to_thread(
                    compile_file, self.path, current.version + 1, _serial(current.serial)
                )
            except (ConfigErrors, ConfigError) as e:
                return self._refused(current, str(e))
            except Exception as e:  # a bug in a compiler must not take the data down
                log.exception("reload failed")
                return self._refused(current, f"internal error: {e!r}")
            if self.prober is not None:
                fresh = self.prober.update(compiled.topology)
                if fresh:
                    await self.prober.refresh(fresh)  # know new zones before serving them
            dns_cfg = compiled.topology.dns
            old_cfg = current.topology.dns
            if (dns_cfg.listen, dns_cfg.admin) != (old_cfg.listen, old_cfg.admin):
                log.warning("dns.listen or dns.admin changed: restart to move the sockets")
            self.tcp.max_connections = dns_cfg.tcp_max_connections
            self.tcp.idle = dns_cfg.tcp_idle
            self.svc.swap(compiled)
            if self.prober is not None:
                self.svc.health = self.zone_states()
            self.reloads_ok += 1
            msg = f"reloaded {self.path}: version {compiled.version}"
            log.info(msg)
            return True, msg

    def _refused(self, current: Compiled, why: str) -> tuple[bool, str]:
        self.reloads_failed += 1
        self.last_reload_error = why
        msg = f"reload refused, keeping version {current.version}:\n{why}"
        log.error(msg)
        return False, msg

    def spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # -- admin

    def status(self) -> dict[str, Any]:
        svc = self.svc
        states = self.prober.states() if self.prober is not None else {}
        return {
            "version": svc.compiled.version,
            "source": self.path,
            "listen": self.listen,
            "domains": sorted(svc.zones.domains),
            "gslb_names": sorted(svc.zones.gslb_names),
            "zones": {
                name: {
                    "up": st.up,
                    "known": st.known,
                    "changing": st.changing,
                    "healthy": st.healthy,
                    "total": st.total,
                    "sessions": st.sessions,
                    "capacity": st.capacity,
                    "rtt": st.rtt,
                    "reason": st.reason,
                    "admin": self.admin_states.get(name, "enabled"),
                }
                for name, st in states.items()
            },
            "control_version": self.control_version,
            "responses": sum(svc.queries.values()),
            "rrl": {
                "rate": svc.rrl.rate if svc.rrl else 0,
                "dropped": svc.rrl_dropped,
                "slipped": svc.rrl_slipped,
            },
            "zones_without_health_check": self.prober.unchecked if self.prober else [],
            "tcp": {"active": self.tcp.active, "max": self.tcp.max_connections},
            "reloads": {
                "ok": self.reloads_ok,
                "refused": self.reloads_failed,
                "last_error": self.last_reload_error,
            },
        }

    def metrics(self) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        if self.prober is not None:
            registry.register(ZoneHealthCollector(self.prober))
        return generate_latest(registry)

    async def handle_admin(self, method: str, url: bytes) -> tuple[int, str, bytes]:
        parsed = httptools.parse_url(url)
        path = parsed.path.decode()
        params = parse_qs(parsed.query.decode()) if parsed.query else {}
        if path == "/healthz" and method in ("GET", "HEAD"):
            return 200, "text/plain", b"ok\n"
        if path == "/metrics" and method == "GET":
            return 200, "text/plain; version=0.0.4; charset=utf-8", self.metrics()
        if path == "/status" and method == "GET":
            return 200, "application/json", json.dumps(self.status(), indent=2).encode() + b"\n"
        if path == "/explain" and method == "GET":
            name = params.get("name", [""])[0]
            client = params.get("client", ["127.0.0.1"])[0]
            qtype = params.get("type", ["A"])[0]
            device = params.get("device_id", [None])[0]
            subnet = params.get("subnet", [None])[0]
            if not name:
                return 400, "text/plain", b"explain needs ?name=NAME[&client=IP][&type=A]\n"
            try:
                text = self.svc.explain(name, client, qtype, device, subnet)
            except ValueError as e:
                return 400, "text/plain", f"bad request: {e}\n".encode()
            return 200, "text/plain; charset=utf-8", text.encode() + b"\n"
        if path == "/reload" and method == "POST":
            ok, msg = await self.reload()
            return (200 if ok else 422), "text/plain", (msg + "\n").encode()
        return 404, "text/plain", b"not found: try /status, /metrics, /explain?name=, /healthz\n"


# --- process ------------------------------------------------------------------------


def parse_listen(text: str) -> tuple[str, int]:
    """'HOST:PORT' or '[V6]:PORT' -> (host, port); port 0 picks a free one.

    Raises:
        ValueError: not an address.
    """
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"invalid address {text!r}: expected '[v6addr]:port'")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"invalid address {text!r}: expected 'host:port'")
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"invalid address {text!r}: port must be 0-65535")
    return host or "0.0.0.0", int(port_text)


def _fmt(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _bind(
    server: DnsServer, host: str, port: int
) -> tuple[UdpResponder, asyncio.Server, int]:
    """UDP and TCP on the same port (port 0: the kernel's pick for UDP, retried)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family = infos[0][0]
    for attempt in range(20):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        bound = sock.getsockname()[1]
        udp = UdpResponder(server.svc, sock, loop)
        try:
            tcp = await loop.create_server(
                lambda: _Tcp(server.svc, server.tcp, loop),
                host,
                bound,
                reuse_address=True,
                backlog=1024,
            )
        except OSError:
            udp.close()
            if port != 0 or attempt == 19:
                raise
            continue
        return udp, tcp, bound
    raise OSError("no free port for UDP and TCP")  # pragma: no cover


def _setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )


def run_dns(
    path: str,
    listen: str | None = None,
    admin: str | None = None,
    control: ControlOptions = NO_CONTROL,
) -> int:
    """Run `zonegate dns FILE` until SIGTERM/SIGINT; return the exit status.

    Args:
        path: The topology file.
        listen: 'HOST:PORT' for UDP and TCP (default `dns.listen`); port 0 picks one.
        admin: 'HOST:PORT' of the admin endpoint (default `dns.admin`, else none).
        control: the control plane to follow for zone admin states (no URLs: none).
    """
    import uvloop

    _setup_logging()
    try:
        compiled = compile_file(path, 1, _serial())
    except (ConfigErrors, ConfigError) as e:
        print(e, file=sys.stderr)
        return 1
    dns_cfg = compiled.topology.dns
    listen_text = listen or (str(dns_cfg.listen) if dns_cfg.listen is not None else None)
    if listen_text is None:
        print(f"zonegate dns: {path}: no dns.listen and no --listen", file=sys.stderr)
        return 2
    admin_text = admin or (str(dns_cfg.admin) if dns_cfg.admin is not None else None)
    try:
        where = parse_listen(listen_text)
        admin_at = parse_listen(admin_text) if admin_text else None
    except ValueError as e:
        print(f"zonegate dns: {e}", file=sys.stderr)
        return 2
    return uvloop.run(_serve(path, compiled, where, admin_at, control))


async def _serve(
    path: str,
    compiled: Compiled,
    where: tuple[str, int],
    admin_at: tuple[str, int] | None,
    control: ControlOptions,
) -> int:
    loop = asyncio.get_running_loop()
    server = DnsServer(path, compiled)
    prober = ZoneProber(compiled.topology, server.on_zone_change)
    server.prober = prober
    # Health known before the first answer: nothing is bound until this returns.
    await prober.first_round()
    prober.start()
    # The control plane's admin states too: the first answer already honours them.
    follower = await start_following(control, server.apply_control)
    server.svc.health = server.zone_states()
    server.tick(loop)
    try:
        udp, tcp, port = await _bind(server, *where)
    except OSError as e:
        print(f"zonegate dns: cannot listen on {_fmt(*where)}: {e}", file=sys.stderr)
        await _stop(prober, follower)
        return 1
    server.listen = _fmt(where[0], port)
    server.udp = udp
    admin_server = None
    if admin_at is not None:
        try:
            admin_server = await adminhttp.start_server(
                server.handle_admin, admin_at[0], admin_at[1]
            )
        except OSError as e:
            print(f"zonegate dns: cannot listen on {_fmt(*admin_at)}: {e}", file=sys.stderr)
            udp.close()
            tcp.close()
            await _stop(prober, follower)
            return 1
        sockname = admin_server.sockets[0].getsockname()
        server.admin = _fmt(admin_at[0], sockname[1])
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: server.spawn(server.reload()))
    zones = ", ".join(f"{n}={'up' if st.up else 'down'}" for n, st in prober.states().items())
    served = ", ".join(sorted(compiled.zones.domains)) or "none"
    print(
        f"zonegate dns ready: udp+tcp {server.listen}, admin {server.admin or 'off'}, "
        f"version {compiled.version}, domains {served}, zones {zones}"
        + (f", control version {server.control_version}" if follower else ""),
        flush=True,
    )
    await stop.wait()
    log.info("stopping")
    udp.close()
    tcp.close()
    if admin_server is not None:
        admin_server.close()
    await _stop(prober, follower)
    return 0


async def _stop(prober: ZoneProber, follower: ControlFollower | None) -> None:
    if follower is not None:
        await follower.stop()
    await prober.stop()


def run_explain(
    path: str,
    name: str,
    client: str,
    device_id: str | None = None,
    qtype: str = "A",
    *,
    subnet: str | None = None,
    control: ControlOptions = NO_CONTROL,
) -> int:
    """`zonegate dns explain FILE NAME --client IP`: probe zone health once, take the
    control plane's zone admin states (`control`: as `zonegate dns --control` does at
    start), print how NAME is answered to the client; return 0, 1 for a bad file or an
    unreachable control plane, 2 for bad arguments."""
    _setup_logging()
    try:
        compiled = compile_file(path, 1, _serial())
    except (ConfigErrors, ConfigError) as e:
        print(e, file=sys.stderr)
        return 1

    async def gather() -> tuple[Mapping[str, ZoneState], DesiredState | None]:
        prober = ZoneProber(compiled.topology)
        await prober.first_round()
        got: list[DesiredState] = []
        follower = await start_following(control, got.append)
        if follower is not None:
            await follower.stop()
        return prober.states(), (got[-1] if got else None)

    probed, desired = asyncio.run(gather())
    if control.urls and desired is None:
        urls = ", ".join(control.urls)
        print(
            f"zonegate dns explain: no control plane answered ({urls}) and no "
            "--control-cache: cannot tell the zone admin states the server follows",
            file=sys.stderr,
        )
        return 1
    head = ""
    states = probed
    if desired is not None:
        # The server's own overlay (`DnsServer.zone_states`): drained zones are down.
        states = overlay_admin(probed, desired.zones, desired.version)
        out = [f"{z} {a}" for z, a in sorted(desired.zones.items()) if a != "enabled"]
        head = f"control version {desired.version}: " + (
            f"admin states {', '.join(out)}" if out else "every zone enabled"
        )
    svc = DnsService(compiled, states)
    try:
        text = svc.explain(name, client, qtype, device_id, subnet)
    except ValueError as e:
        print(f"zonegate dns explain: {e}", file=sys.stderr)
        return 2
    if head:
        print(head)
    print(text)
    return 0


__all__ = [
    "Compiled",
    "DnsServer",
    "DnsService",
    "ResponseRateLimiter",
    "client_network",
    "compile_file",
    "parse_client",
    "parse_listen",
    "run_dns",
    "run_explain",
]


def main(argv: list[str] | None = None) -> int:
    """`python -m zonegate.dns.server FILE [--listen H:P] [--admin H:P]` (until the CLI
    wires `zonegate dns`), and `... explain FILE NAME --client IP [--type A]`."""
    import argparse

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "explain":
        e = argparse.ArgumentParser(prog="zonegate dns explain")
        e.add_argument("file")
        e.add_argument("name")
        e.add_argument("--client", required=True)
        e.add_argument("--device-id", default=None)
        e.add_argument("--type", default="A")
        e.add_argument("--subnet", default=None)
        e.add_argument("--control", action="append", default=[])
        ea = e.parse_args(args[1:])
        return run_explain(
            ea.file,
            ea.name,
            ea.client,
            ea.device_id,
            ea.type,
            subnet=ea.subnet,
            control=ControlOptions(tuple(ea.control)),
        )
    p = argparse.ArgumentParser(prog="zonegate dns")
    p.add_argument("file")
    p.add_argument("--listen", default=None)
    p.add_argument("--admin", default=None)
    a = p.parse_args(args)
    return run_dns(a.file, a.listen, a.admin)


if __name__ == "__main__":
    sys.exit(main())
