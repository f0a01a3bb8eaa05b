# dnspython's Renderer, RRset.update and rdata constructors are unannotated:
# mypy: disable-error-code="no-untyped-call"
"""The authoritative data of `zonegate dns`, compiled into prebuilt answers (pure).

Theory of operation
-------------------
`compile_zones(topology)` reads `dns.domains` once per config version and renders,
with dnspython (name compression included), every answer a static name can give
into a `codec.Template`. At query time the server does one lookup:

    names[qname_lower] ──> {qtype: answer, DEFAULT: answer}     the name exists
          │ miss
          └──> walk up the labels to the closest encloser (RFC 4592 §3.3.1):
                 a delegation                  referral, AA clear (RFC 1034 §4.3.2)
                 an existing name with '*.'    the wildcard's answer, owned by qname
                 another existing name         NXDOMAIN, SOA in authority (RFC 2308)
                 nothing                       None: REFUSED (not our zone)

An answer is a `Template` (static: ID, question and OPT are patched in), a
`GslbName` (A/AAAA decided per query by the policy chain), or a `CnameToGslb`
(static CNAMEs ending at a GSLB name). Every existing name has a DEFAULT entry:
NODATA with the SOA in authority (RFC 2308 §2.2), the CNAME chain for a CNAME owner
(RFC 1034 §3.6.2, chased inside our data, the final rcode as RFC 6604 says), or the
GSLB marker for a GSLB name that is a CNAME. Empty non-terminals exist (NODATA, not
NXDOMAIN: RFC 8020 §2). ANY gets one HINFO "RFC8482" (RFC 8482 §4.2), or the CNAME.

Names absent from the table (NXDOMAIN, referrals, wildcard matches) have questions
of any length, so their templates are rendered per question *length*: a body
compressed against a stand-in name of that length, whose labels above the apex (or
cut, or wildcard parent) are 0xff octets that no name of ours matches, can only
point into the part every such question shares (RFC 1035 §4.1.4). At most 255 per
domain, cut or wildcard and type, rendered on first use.

Names (keys of `records` and `gslb`; CNAME, NS, MX, SOA targets) are read by
`topology.validate.qualify`: '@' is the domain, a trailing '.' makes a name
absolute, a name already ending with the domain is taken as written, any other is
relative to the domain. `validate` checks most rules; `compile_zones` checks again
what it relies on (CNAME alone, no loop, names inside their domain, data below a
delegation is glue only) and raises every problem at once as `ConfigErrors`, so a
reload that brings one keeps the last good data.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.renderer
import dns.rrset
from dns.rdtypes.ANY.CNAME import CNAME as CnameRdata
from dns.rdtypes.ANY.HINFO import HINFO as HinfoRdata
from dns.rdtypes.ANY.MX import MX as MxRdata
from dns.rdtypes.ANY.NS import NS as NsRdata
from dns.rdtypes.ANY.SOA import SOA as SoaRdata
from dns.rdtypes.ANY.TXT import TXT as TxtRdata

from zonegate.dns.codec import (
    AA,
    MAX_NAME,
    MAX_TCP_MESSAGE,
    NOERROR,
    NXDOMAIN,
    QR,
    Rr,
    Template,
    make_heads,
)
from zonegate.dns.codec import ANY as TYPE_ANY
from zonegate.dns.codec import CNAME as TYPE_CNAME
from zonegate.errors import ConfigErrors, ConfigProblem
from zonegate.topology.schema import DnsDomain, GslbRecord, Topology
from zonegate.topology.validate import qualify

DEFAULT = -1
"""Key of a name's answer to every type it has no entry of its own for."""
MAX_CHAIN = 8
"""CNAMEs followed inside our data; a longer chain is answered as it stands."""
MAX_TTL = 2**31 - 1  # RFC 2181 §8
MAX_TEMPLATE = MAX_TCP_MESSAGE - 64
"""Largest response rendered: what TCP carries (RFC 1035 §4.2.2), less room for OPT
with an ECS echo, so no answer needs a size check on the way out."""

IN = dns.rdataclass.IN
_A = dns.rdatatype.A
_AAAA = dns.rdatatype.AAAA
_NS = dns.rdatatype.NS
_MX = dns.rdatatype.MX
_CNAME = dns.rdatatype.CNAME
_GLUE_TYPES = (_A, _AAAA)
_WILD = b"*"
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Negative:
    """What a negative answer of a domain needs: its SOA record (RFC 2308 §3)."""

    domain: str
    soa: Rr
    """The SOA owned by the apex, TTL min(SOA TTL, SOA minimum)."""


@dataclass(frozen=True, slots=True)
class GslbName:
    """Marker answer: the policy chain decides (A/AAAA, or every type for a CNAME)."""

    name: str
    """Fully qualified, lower case, no trailing dot: the policy's key."""
    wire: bytes
    negative: Negative
    """For NODATA when the decision has no address."""


@dataclass(frozen=True, slots=True)
class CnameToGslb:
    """Marker answer: static CNAMEs (in order, the first owned by the qname; for a
    wildcard match the server sets that owner to the qname) ending at a GSLB name."""

    chain: tuple[Rr, ...]
    target: GslbName


Answer = Template | GslbName | CnameToGslb


@dataclass(frozen=True, slots=True)
class Chase:
    """What one name holds for one type, to follow a CNAME decided at query time.

    kind: 'rrs' (records of the type), 'cname' (one CNAME, to follow), 'gslb' (a GSLB
    name), 'nodata', 'nxdomain', 'referral' (below a delegation of ours: `rrs` are its
    NS records, `glue` their addresses), 'external' (outside our zones).
    """

    kind: str
    rrs: tuple[Rr, ...] = ()
    glue: tuple[Rr, ...] = ()
    gslb: GslbName | None = None
    negative: Negative | None = None


def _wire(name: dns.name.Name) -> bytes:
    """A name's uncompressed wire form (dnspython types `to_wire()` as optional)."""
    wire = name.to_wire()
    assert wire is not None
    return wire


def _stand_in(suffix: dns.name.Name, length: int) -> dns.name.Name:
    """A name of `length` wire octets ending with `suffix`, its other labels 0xff."""
    extra = length - len(_wire(suffix))
    labels: list[bytes] = []
    while extra > 0:
        if extra <= 64:
            n = extra - 1
        elif extra == 65:
            n = 62  # leave 2 octets for a last label of 1
        else:
            n = 63
        labels.append(b"\xff" * n)
        extra -= n + 1
    return dns.name.Name((*labels, *suffix.labels))


def _render(
    qname: dns.name.Name,
    answer: Iterable[dns.rrset.RRset],
    authority: Iterable[dns.rrset.RRset] = (),
    additional: Iterable[dns.rrset.RRset] = (),
    *,
    rcode: int = NOERROR,
    aa: bool = True,
) -> Template:
    """Render a response with dnspython and cut it into a template.

    Records keep the file's order (dnspython would shuffle each RRset once, and that
    order would then stay fixed in the template anyway).
    """
    flags = QR | (AA if aa else 0) | rcode
    r = dns.renderer.Renderer(id=0, flags=flags, max_size=MAX_TEMPLATE)
    r.add_question(qname, _A, IN)
    for rrset in answer:
        r.add_rrset(dns.renderer.ANSWER, rrset, want_shuffle=False)
    for rrset in authority:
        r.add_rrset(dns.renderer.AUTHORITY, rrset, want_shuffle=False)
    for rrset in additional:
        r.add_rrset(dns.renderer.ADDITIONAL, rrset, want_shuffle=False)
    r.write_header()
    wire = r.get_wire()
    qd, an, ns, ar = struct.unpack_from("!HHHH", wire, 4)
    qlen = len(_wire(qname)) + 4
    return Template(make_heads(flags, qd, an, ns, ar), wire[12 + qlen :], rcode)


def _rrs(rrset: dns.rrset.RRset, owner: bytes | None = None) -> tuple[Rr, ...]:
    """An RRset as codec records (owned by `owner` if given)."""
    wire = owner if owner is not None else _wire(rrset.name)
    is_name = rrset.rdtype in (_CNAME, _NS)
    return tuple(
        Rr(wire, rrset.rdtype, rrset.ttl, _wire(rd.target), True)
        if is_name
        else Rr(wire, rrset.rdtype, rrset.ttl, rd.to_wire(), False)
        for rd in rrset
    )


def _reown(rrset: dns.rrset.RRset, owner: dns.name.Name) -> dns.rrset.RRset:
    if rrset.name == owner:
        return rrset
    out = dns.rrset.RRset(owner, rrset.rdclass, rrset.rdtype)
    out.update(rrset)
    return out


class _Miss:
    """Per-length templates for names under an apex (NXDOMAIN) or a cut (referral)."""

    __slots__ = ("_build", "_suffix", "_templates", "referral")

    def __init__(
        self,
        suffix: dns.name.Name,
        build: Callable[[dns.name.Name], Template],
        referral: Chase | None = None,
    ) -> None:
        self._suffix = suffix
        self._build = build
        self._templates: dict[int, Template] = {}
        self.referral = referral
        """For a cut: what a CNAME decided at query time that ends below it gets."""

    def template(self, qname_length: int) -> Template:
        t = self._templates.get(qname_length)
        if t is None:
            t = self._templates[qname_length] = self._build(_stand_in(self._suffix, qname_length))
        return t


@dataclass(slots=True)
class _Plan:
    """Everything one name answers, before rendering; owner-independent so that a
    wildcard renders it again under the name of each question length."""

    name: dns.name.Name
    soa_neg: dns.rrset.RRset
    negative: Negative
    hinfo_ttl: int
    rrsets: dict[int, dns.rrset.RRset] = field(default_factory=dict)
    extra: dict[int, list[dns.rrset.RRset]] = field(default_factory=dict)
    gslb: GslbName | None = None
    gslb_cname: bool = False
    chain: list[dns.rrset.RRset] = field(default_factory=list)
    """CNAME owner: the chain of CNAME RRsets, the first owned by `name`."""
    end: str = ""
    """How the chain ends: 'external', 'referral', 'nxdomain', 'long' or 'target'."""
    referral: tuple[dns.rrset.RRset, list[dns.rrset.RRset]] | None = None
    """A chain ending below a delegation: the cut's NS RRset and their glue."""
    end_soa: dns.rrset.RRset | None = None
    target: _Plan | None = None

    def render(self, owner: dns.name.Name) -> dict[int, Answer]:
        """Every answer of the name, owned by `owner` (the name itself or a stand-in)."""
        out: dict[int, Answer] = {DEFAULT: _render(owner, [], [self.soa_neg])}
        if self.rrsets or self.gslb is not None:
            hinfo = dns.rrset.RRset(owner, IN, dns.rdatatype.HINFO)
            hinfo.add(HinfoRdata(IN, dns.rdatatype.HINFO, b"RFC8482", b""), self.hinfo_ttl)
            out[TYPE_ANY] = _render(owner, [hinfo])
        for rdtype, rrset in self.rrsets.items():
            out[rdtype] = _render(owner, [_reown(rrset, owner)], (), self.extra.get(rdtype, ()))
        if self.gslb is not None:
            if self.gslb_cname:
                out = {DEFAULT: self.gslb}
            else:
                out[_A] = out[_AAAA] = self.gslb
        if self.chain:
            self._render_chain(owner, out)
        return out

    def _render_chain(self, owner: dns.name.Name, out: dict[int, Answer]) -> None:
        chain = [_reown(self.chain[0], owner), *self.chain[1:]]
        if self.end in ("external", "long"):
            out[DEFAULT] = _render(owner, chain)
            out[TYPE_CNAME] = out[TYPE_ANY] = _render(owner, chain[:1])
            return
        if self.end == "referral":
            # RFC 1034 §4.3.2 steps 3a then 3b: the CNAME (ours: AA), then the referral.
            assert self.referral is not None
            ns, glue = self.referral
            out[DEFAULT] = _render(owner, chain, [ns], glue)
            out[TYPE_CNAME] = out[TYPE_ANY] = _render(owner, chain[:1])
            return
        assert self.end_soa is not None
        if self.end == "nxdomain":
            out[DEFAULT] = _render(owner, chain, [self.end_soa], rcode=NXDOMAIN)
            out[TYPE_CNAME] = out[TYPE_ANY] = _render(owner, chain[:1])
            return
        target = self.target
        assert target is not None
        out[DEFAULT] = _render(owner, chain, [self.end_soa])
        for rdtype, rrset in target.rrsets.items():
            if rdtype != TYPE_CNAME:
                out[rdtype] = _render(owner, [*chain, rrset])
        if target.gslb is not None:
            prefix = tuple(rr for rrset in chain for rr in _rrs(rrset))
            marker = CnameToGslb(prefix, target.gslb)
            if target.gslb_cname:
                out[DEFAULT] = marker
            else:
                out[_A] = out[_AAAA] = marker
        out[TYPE_CNAME] = out[TYPE_ANY] = _render(owner, chain[:1])

    def chase(self, owner: bytes) -> dict[int, Chase]:
        """What the name holds per type, for a CNAME decided at query time."""
        out: dict[int, Chase] = {DEFAULT: Chase("nodata", negative=self.negative)}
        for rdtype, rrset in self.rrsets.items():
            out[rdtype] = Chase("rrs", rrs=_rrs(rrset, owner))
        if self.chain:
            out = {DEFAULT: Chase("cname", rrs=_rrs(self.chain[0], owner))}
        if self.gslb is not None:
            found = Chase("gslb", gslb=self.gslb)
            if self.gslb_cname:
                out = {DEFAULT: found}
            else:
                out[_A] = out[_AAAA] = found
        return out


class _Wildcard:
    """A wildcard `*.parent`: its answers rendered per question length and type."""

    __slots__ = ("_answers", "_parent", "_plan")

    def __init__(self, parent: dns.name.Name, plan: _Plan) -> None:
        self._parent = parent
        self._plan = plan
        self._answers: dict[int, dict[int, Answer]] = {}

    def answer(self, qtype: int, qname_length: int) -> Answer:
        answers = self._answers.get(qname_length)
        if answers is None:
            owner = _stand_in(self._parent, qname_length)
            answers = self._answers[qname_length] = self._plan.render(owner)
        found = answers.get(qtype)
        return found if found is not None else answers[DEFAULT]

    def chase(self, qname_lower: bytes, qtype: int) -> Chase:
        found = self._plan.chase(qname_lower)
        return found.get(qtype) or found[DEFAULT]


class ZoneData:
    """The compiled zones (see the module docstring). Immutable after
    `compile_zones`, except for the per-length templates rendered on first use."""

    __slots__ = ("_chase", "_cuts", "_enclosers", "_rrsets", "domains", "gslb_names", "names")

    def __init__(self) -> None:
        self.names: dict[bytes, dict[int, Answer]] = {}
        """Lower-case wire name -> qtype (or DEFAULT) -> answer."""
        self.domains: dict[str, Negative] = {}
        """Domain (lower case, no trailing dot) -> its negative-answer data."""
        self.gslb_names: dict[str, GslbName] = {}
        self._cuts: dict[bytes, _Miss] = {}
        self._enclosers: dict[bytes, tuple[_Miss, _Wildcard | None, Negative]] = {}
        """Every existing name -> (its domain's NXDOMAIN, its '*' child, its domain)."""
        self._chase: dict[bytes, dict[int, Chase]] = {}
        self._rrsets: dict[bytes, list[dns.rrset.RRset]] = {}

    def lookup(self, qname_lower: bytes, qtype: int) -> Answer | None:
        """The answer to a question, or None when the name is in none of our domains.

        Args:
            qname_lower: A lower-case uncompressed wire name (`Query.qname_lower`).
            qtype: The question type.
        """
        node = self.names.get(qname_lower)
        if node is not None:
            answer = node.get(qtype)
            return answer if answer is not None else node[DEFAULT]
        return self.miss(qname_lower, qtype)

    def _encloser(
        self, qname_lower: bytes
    ) -> _Miss | tuple[_Miss, _Wildcard | None, Negative] | None:
        """For a name not in `names`: the delegation above it (its referral), else its
        closest encloser's entry, else None (outside our domains)."""
        cuts = self._cuts
        enclosers = self._enclosers
        cut = cuts.get(qname_lower)
        if cut is not None:
            return cut
        pos = 0
        n = len(qname_lower)
        while pos < n and qname_lower[pos]:
            pos += qname_lower[pos] + 1
            suffix = qname_lower[pos:]
            cut = cuts.get(suffix)
            if cut is not None:
                return cut
            found = enclosers.get(suffix)
            if found is not None:
                return found
        return None

    def miss(self, qname_lower: bytes, qtype: int) -> Answer | None:
        """The answer for a name not in `names`: a referral, a wildcard's answer,
        NXDOMAIN, or None (not in our domains)."""
        found = self._encloser(qname_lower)
        if found is None:
            return None
        if isinstance(found, _Miss):
            return found.template(len(qname_lower))
        nx, wildcard, _ = found
        if wildcard is not None:
            return wildcard.answer(qtype, len(qname_lower))
        return nx.template(len(qname_lower))

    def chase(self, qname_lower: bytes, qtype: int) -> Chase:
        """What `qname_lower` holds for `qtype`, to follow a CNAME decided at query time."""
        node = self._chase.get(qname_lower)
        if node is not None:
            found = node.get(qtype)
            return found if found is not None else node[DEFAULT]
        enclosing = self._encloser(qname_lower)
        if enclosing is None:
            return Chase("external")
        if isinstance(enclosing, _Miss):
            return enclosing.referral or Chase("external")
        _, wildcard, negative = enclosing
        if wildcard is not None:
            return wildcard.chase(qname_lower, qtype)
        return Chase("nxdomain", negative=negative)

    def records_text(self, name: str) -> list[str]:
        """The static records of a name, in zone file format (for `explain`)."""
        try:
            wire = _wire(dns.name.from_text(name).canonicalize())
        except dns.exception.DNSException:
            return []
        return [rrset.to_text() for rrset in self._rrsets.get(wire, [])]


def _quote(key: str) -> str:
    plain = key.replace("_", "").replace("-", "").isalnum()
    return f".{key}" if plain else f'["{key}"]'


@dataclass(slots=True)
class _Node:
    domain: _Domain
    rrsets: dict[int, dns.rrset.RRset] = field(default_factory=dict)
    gslb: GslbRecord | None = None


@dataclass(slots=True)
class _Domain:
    key: str
    origin: str
    apex: dns.name.Name
    spec: DnsDomain
    ttl: int = 0
    soa_neg: dns.rrset.RRset | None = None
    negative: Negative | None = None


class _Compiler:
    def __init__(self, topo: Topology, serial: int, source: str) -> None:
        self.topo = topo
        self.serial = serial & 0xFFFFFFFF  # RFC 1982 serial arithmetic: 32 bits
        self.source = source
        self.problems: list[ConfigProblem] = []
        self.domains: list[_Domain] = []
        self.nodes: dict[dns.name.Name, _Node] = {}
        self.cuts: set[dns.name.Name] = set()
        self.plans: dict[dns.name.Name, _Plan] = {}
        self.gslb: dict[dns.name.Name, GslbName] = {}

    def problem(self, path: str, msg: str) -> None:
        self.problems.append(ConfigProblem(self.source, None, None, path, msg))

    def name(self, text: str, origin: str, path: str) -> dns.name.Name | None:
        """A name as written in a domain, qualified (`validate.qualify`), lower case."""
        fqdn = qualify(text, origin)
        try:
            return dns.name.from_text(fqdn + "." if fqdn else ".").canonicalize()
        except dns.exception.DNSException as e:
            self.problem(path, f"invalid name {text!r}: {e}")
            return None

    def ttl(self, value: float | None, default: int, path: str) -> int:
        ttl = default if value is None else int(value)
        if ttl > MAX_TTL:
            self.problem(path, f"ttl {ttl} is above {MAX_TTL} (RFC 2181 §8)")
            return MAX_TTL
        return ttl

    # -- passes

    def run(self) -> ZoneData:
        for key, spec in self.topo.dns.domains.items():
            path = f"dns.domains{_quote(key)}"
            origin = qualify(key, ".")
            apex = self.name(key, ".", path)
            if apex is None:
                continue
            if any(d.apex == apex for d in self.domains):
                self.problem(path, f"domain {origin} is declared twice")
                continue
            d = _Domain(key, origin, apex, spec)
            d.ttl = self.ttl(None, min(int(spec.ttl), MAX_TTL), f"{path}.ttl")
            self.domains.append(d)
        # Deepest apex first: a name belongs to the most specific domain holding it.
        self.domains.sort(key=lambda d: -len(d.apex.labels))
        for d in self.domains:
            self.apex_records(d)
            self.static_records(d)
            self.gslb_records(d)
        self.check()
        if not self.problems:
            data = self.build()
            if not self.problems:
                return data
        raise ConfigErrors(self.problems)

    def domain_of(self, name: dns.name.Name) -> _Domain | None:
        for d in self.domains:
            if name.is_subdomain(d.apex):
                return d
        return None

    def node(self, name: dns.name.Name, d: _Domain) -> _Node:
        node = self.nodes.get(name)
        if node is None:
            node = self.nodes[name] = _Node(d)
        return node

    def add(self, name: dns.name.Name, d: _Domain, rdata: dns.rdata.Rdata, ttl: int) -> None:
        node = self.node(name, d)
        rrset = node.rrsets.get(rdata.rdtype)
        if rrset is None:
            rrset = node.rrsets[rdata.rdtype] = dns.rrset.RRset(name, IN, rdata.rdtype)
        rrset.add(rdata, ttl)  # one TTL per RRset: the smallest (RFC 2181 §5.2)

    def owned(self, owner: dns.name.Name, d: _Domain, path: str) -> bool:
        if not owner.is_subdomain(d.apex):
            self.problem(path, f"{owner.to_text(True)} is not inside domain {d.origin}")
            return False
        deeper = self.domain_of(owner)
        if deeper is not d:
            assert deeper is not None
            self.problem(
                path,
                f"{owner.to_text(True)} is inside domain {deeper.origin}, which is "
                "configured separately: define it there",
            )
            return False
        if _WILD in owner.labels[1:]:
            self.problem(path, "'*' is a wildcard only as the first label")
            return False
        return True

    def apex_records(self, d: _Domain) -> None:
        path = f"dns.domains{_quote(d.key)}"
        ns_names = []
        for i, text in enumerate(d.spec.ns):
            target = self.name(text, d.origin, f"{path}.ns[{i}]")
            if target is not None:
                ns_names.append(target)
                self.add(d.apex, d, NsRdata(IN, _NS, target), d.ttl)
        soa = d.spec.soa
        if soa.mname is not None:
            mname = self.name(soa.mname, d.origin, f"{path}.soa.mname")
        else:
            mname = ns_names[0] if ns_names else None
        rname = self.name(soa.rname, d.origin, f"{path}.soa.rname")
        if mname is None or rname is None:
            return
        times = [min(int(v), MAX_TTL) for v in (soa.refresh, soa.retry, soa.expire, soa.minimum)]
        rdata = SoaRdata(IN, dns.rdatatype.SOA, mname, rname, self.serial, *times)
        self.add(d.apex, d, rdata, d.ttl)
        neg = dns.rrset.RRset(d.apex, IN, dns.rdatatype.SOA)
        neg.add(rdata, min(d.ttl, times[3]))  # RFC 2308 §3
        d.soa_neg = neg
        d.negative = Negative(d.origin, _rrs(neg)[0])

    def static_records(self, d: _Domain) -> None:
        base = f"dns.domains{_quote(d.key)}.records"
        for key, records in d.spec.records.items():
            path = f"{base}{_quote(key)}"
            owner = self.name(key, d.origin, path)
            if owner is None or not self.owned(owner, d, path):
                continue
            for i, rec in enumerate(records):
                rpath = f"{path}[{i}]"
                ttl = self.ttl(rec.ttl, d.ttl, f"{rpath}.ttl")
                rdata = self.rdata(rec.type, rec.value, d.origin, f"{rpath}.value")
                if rdata is not None:
                    self.add(owner, d, rdata, ttl)  # NS at '@' joins `ns`

    def rdata(self, rtype: str, value: str, origin: str, path: str) -> dns.rdata.Rdata | None:
        rdtype = dns.rdatatype.from_text(rtype)
        try:
            if rtype == "TXT":
                raw = value.encode()
                chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
                return TxtRdata(IN, rdtype, chunks)  # RFC 1035 §3.3.14: 255-octet strings
            if rtype in ("CNAME", "NS"):
                target = self.name(value, origin, path)
                if target is None:
                    return None
                cls = CnameRdata if rtype == "CNAME" else NsRdata
                return cls(IN, rdtype, target)
            if rtype == "MX":
                pref, _, exchange = value.strip().partition(" ")
                target = self.name(exchange.strip(), origin, path)
                if target is None:
                    return None
                return MxRdata(IN, rdtype, int(pref), target)
            return dns.rdata.from_text(IN, rdtype, value.strip())
        except (dns.exception.DNSException, ValueError) as e:
            self.problem(path, f"invalid {rtype} value {value!r}: {e}")
            return None

    def gslb_records(self, d: _Domain) -> None:
        base = f"dns.domains{_quote(d.key)}.gslb"
        for key, record in d.spec.gslb.items():
            path = f"{base}{_quote(key)}"
            owner = self.name(key, d.origin, path)
            if owner is None or not self.owned(owner, d, path):
                continue
            if owner.labels[0] == _WILD:
                self.problem(path, "a GSLB name cannot be a wildcard")
                continue
            node = self.node(owner, d)
            if node.gslb is not None:
                self.problem(path, f"GSLB name {owner.to_text(True)} is defined twice")
                continue
            node.gslb = record
            if record.cname is not None:
                self.name(record.cname, d.origin, f"{path}.cname")

    def cut_above(self, name: dns.name.Name) -> dns.name.Name | None:
        """The delegation at or above `name` (below its domain's apex), if any."""
        d = self.domain_of(name)
        if d is None:
            return None
        n = name
        while n != d.apex:
            if n in self.cuts:
                return n
            n = n.parent()
        return None

    def check(self) -> None:
        for name, node in self.nodes.items():
            if name != node.domain.apex and _NS in node.rrsets:
                self.cuts.add(name)
        for name, node in self.nodes.items():
            where = f"dns.domains{_quote(node.domain.key)}: {name.to_text(True)}"
            types = set(node.rrsets)
            cut = self.cut_above(name)
            if cut is not None:
                allowed = {_NS, *_GLUE_TYPES} if cut == name else set(_GLUE_TYPES)
                if node.gslb is not None or types - allowed:
                    self.problem(
                        where,
                        f"at or below the delegation to {cut.to_text(True)}: only NS and "
                        "A/AAAA glue records are allowed",
                    )
                continue
            if _CNAME in types:
                if len(node.rrsets[_CNAME]) > 1:
                    self.problem(where, "more than one CNAME (RFC 2181 §10.1)")
                if name == node.domain.apex:
                    self.problem(where, "a CNAME at the domain apex (it holds SOA and NS)")
                elif len(types) > 1 or node.gslb is not None:
                    self.problem(where, "a CNAME and other data (RFC 1034 §3.6.2)")
            if node.gslb is not None:
                if types & {_A, _AAAA}:
                    self.problem(where, "both static A/AAAA records and a GSLB name")
                if node.gslb.cname is not None and (name == node.domain.apex or types):
                    self.problem(where, "a GSLB CNAME at the apex or beside other data")
        for start in self.nodes:
            target, seen = self.follow(start)
            if target is not None and target in seen:
                loop = " -> ".join(n.to_text(True) for n in [*seen, target])
                self.problem(f"dns: {start.to_text(True)}", f"CNAME loop: {loop}")

    def cname_target(self, name: dns.name.Name) -> dns.name.Name | None:
        node = self.nodes.get(name)
        if node is None:
            return None
        if _CNAME in node.rrsets:
            return next(iter(node.rrsets[_CNAME])).target  # type: ignore[no-any-return]
        return None

    def follow(self, start: dns.name.Name) -> tuple[dns.name.Name | None, list[dns.name.Name]]:
        """Follow static CNAMEs from `start`: (the first repeated name or None, the trail)."""
        seen = [start]
        target = self.cname_target(start)
        while target is not None and target not in seen:
            seen.append(target)
            target = self.cname_target(target)
        return target, seen

    # -- building the answers

    def build(self) -> ZoneData:
        data = ZoneData()
        nx_by_domain: dict[str, _Miss] = {}
        for d in self.domains:
            soa_neg, negative = d.soa_neg, d.negative
            assert soa_neg is not None
            assert negative is not None
            data.domains[d.origin] = negative

            def nxdomain(qname: dns.name.Name, soa: dns.rrset.RRset = soa_neg) -> Template:
                return _render(qname, [], [soa], rcode=NXDOMAIN)

            nx_by_domain[d.origin] = _Miss(d.apex, nxdomain)
        for cut in self.cuts:
            ns = self.nodes[cut].rrsets[_NS]
            glue = self.additional([ns])

            def referral(
                qname: dns.name.Name,
                ns: dns.rrset.RRset = ns,
                glue: list[dns.rrset.RRset] = glue,
            ) -> Template:
                return _render(qname, [], [ns], glue, aa=False)  # RFC 1034 §4.3.2 step 3b

            found = Chase("referral", _rrs(ns), tuple(rr for rs in glue for rr in _rrs(rs)))
            miss = data._cuts[_wire(cut)] = _Miss(cut, referral, found)
            self.fits(cut, partial(miss.template, MAX_NAME))  # the longest question
        # GSLB markers first: chains may end at them.
        for name, node in self.nodes.items():
            if node.gslb is not None:
                assert node.domain.negative is not None
                text = name.to_text(True)
                self.gslb[name] = GslbName(text, _wire(name), node.domain.negative)
                data.gslb_names[text] = self.gslb[name]
        existing: dict[dns.name.Name, _Domain] = {}
        for name, node in self.nodes.items():
            d = node.domain
            above = self.cut_above(name)
            if above is not None:
                name = above.parent()  # the names between the apex and a cut exist here
            while name not in existing:
                existing[name] = d
                if name == d.apex:
                    break
                name = name.parent()
        wildcards: dict[dns.name.Name, _Wildcard] = {}
        for name in existing:
            if name.labels[0] == _WILD:
                wild = wildcards[name.parent()] = _Wildcard(name.parent(), self.plan(name))
                self.fits(name, partial(wild.answer, DEFAULT, MAX_NAME))
        for name, d in existing.items():
            plan = self.plan(name)
            wire = _wire(name)
            answers = self.fits(name, partial(plan.render, name))
            if answers is None:
                continue
            data.names[wire] = answers
            data._chase[wire] = plan.chase(wire)
            assert d.negative is not None
            data._enclosers[wire] = (nx_by_domain[d.origin], wildcards.get(name), d.negative)
            if plan.rrsets:
                data._rrsets[wire] = list(plan.rrsets.values())
        return data

    def fits(self, name: dns.name.Name, render: Callable[[], _T]) -> _T | None:
        """Render now, reporting answers too large for one message as problems."""
        try:
            return render()
        except dns.exception.TooBig:
            d = self.domain_of(name)
            where = f"dns.domains{_quote(d.key)}" if d is not None else "dns.domains"
            self.problem(
                f"{where}: {name.to_text(True)}",
                f"an answer is larger than {MAX_TEMPLATE} octets (too many or too long records)",
            )
            return None

    def plan(self, name: dns.name.Name) -> _Plan:
        found = self.plans.get(name)
        if found is not None:
            return found
        d = self.domain_of(name)
        assert d is not None
        assert d.soa_neg is not None
        assert d.negative is not None
        node = self.nodes.get(name)
        p = self.plans[name] = _Plan(name, d.soa_neg, d.negative, d.ttl)
        if node is None:
            return p  # an empty non-terminal
        p.rrsets = dict(node.rrsets)
        for rdtype, rrset in node.rrsets.items():
            if rdtype in (_NS, _MX):
                p.extra[rdtype] = self.additional([rrset])
        if node.gslb is not None:
            p.gslb = self.gslb[name]
            p.gslb_cname = node.gslb.cname is not None
        if _CNAME in node.rrsets:
            self.plan_chain(p, node.rrsets[_CNAME])
        return p

    def plan_chain(self, p: _Plan, first: dns.rrset.RRset) -> None:
        p.chain = [first]
        target = next(iter(first)).target
        while True:
            d = self.domain_of(target)
            if d is None:
                p.end = "external"
                return
            cut = self.cut_above(target)
            if cut is not None:
                p.end = "referral"
                ns = self.nodes[cut].rrsets[_NS]
                p.referral = (ns, self.additional([ns]))
                return
            p.end_soa = d.soa_neg
            nxt = self.cname_target(target)
            if nxt is None:
                break
            if len(p.chain) >= MAX_CHAIN:
                p.end = "long"
                return
            p.chain.append(self.nodes[target].rrsets[_CNAME])
            target = nxt
        if self.exists(target):
            p.end = "target"
            p.target = self.plan(target)
            return
        wildcard = self.wildcard_for(target)
        if wildcard is None:
            p.end = "nxdomain"
        elif _CNAME in wildcard.rrsets:
            p.end = "long"  # a wildcard CNAME: the resolver follows it
        else:
            p.end = "target"
            p.target = _Plan(target, wildcard.soa_neg, wildcard.negative, wildcard.hinfo_ttl)
            p.target.rrsets = {t: _reown(rs, target) for t, rs in wildcard.rrsets.items()}

    def wildcard_for(self, name: dns.name.Name) -> _Plan | None:
        """The plan of the wildcard that synthesizes `name` (which does not exist)."""
        d = self.domain_of(name)
        encloser = name.parent()
        while d is not None and encloser != d.apex and not self.exists(encloser):
            encloser = encloser.parent()
        wild = dns.name.Name((_WILD, *encloser.labels))
        return self.plan(wild) if wild in self.nodes else None

    def exists(self, name: dns.name.Name) -> bool:
        return any(n.is_subdomain(name) for n in self.nodes)

    def additional(self, rrsets: Iterable[dns.rrset.RRset]) -> list[dns.rrset.RRset]:
        """A/AAAA of NS and MX targets we hold statically (RFC 1035 §3.3.9, §3.3.11)."""
        extra: list[dns.rrset.RRset] = []
        seen: set[dns.name.Name] = set()
        for rrset in rrsets:
            for rd in rrset:
                target = rd.target if rrset.rdtype == _NS else rd.exchange
                if target in seen:
                    continue
                seen.add(target)
                node = self.nodes.get(target)
                if node is not None:
                    extra.extend(node.rrsets[t] for t in _GLUE_TYPES if t in node.rrsets)
        return extra


def compile_zones(topo: Topology, *, serial: int = 1, source: str = "<topology>") -> ZoneData:
    """Compile `topo.dns.domains` into prebuilt answers.

    Args:
        topo: A topology that passed the schema (the DNS rules are checked again).
        serial: The SOA serial of every domain (the shell passes the load time).
        source: The file name problems are reported against.

    Returns:
        The compiled data.

    Raises:
        ConfigErrors: every problem found, at once.
    """
    return _Compiler(topo, serial, source).run()


__all__ = [
    "DEFAULT",
    "Answer",
    "Chase",
    "CnameToGslb",
    "GslbName",
    "Negative",
    "ZoneData",
    "compile_zones",
]
