"""DNS wire codec of the authoritative server (pure): queries in, responses out.

Theory of operation
-------------------
An authoritative server answers one kind of message: a query with one question and
perhaps an OPT record. `parse` reads exactly that, with slicing and `struct`, and
never builds a general message object:

    bytes ──parse──> None                 header unreadable or a response: drop
                 ├─> DnsFormError         header readable, rest malformed: FORMERR
                 └─> Query                everything else (NOTIMP/REFUSED/BADVERS are
                                          the server's decisions, not parse errors)

That is h11's invariant, and the fuzz tests hold it: any bytes give a `Query`,
`None` or a `DnsFormError`, nothing else.

Responses are assembled from a `Template`: the 10 bytes after the ID (flags and
section counts) in the 8 variants a query can need (RD copied, CD copied, OPT
present), and the body after the question. The server writes

    query ID + template.heads[variant] + question as asked + template.body [+ OPT]

so a static answer costs a dict lookup and three concatenations. The question is
echoed exactly as asked; bodies compress names against the question by pointer,
which stays valid because the asked name differs from the lower-case key only by
case (RFC 1035 §4.1.4, RFC 4343 §2). OPT goes last (RFC 6891 §6.1.1 lets it be
anywhere in the additional section), so one body serves queries with and without
EDNS, and the EDNS Client Subnet echo (RFC 7871 §7.2.1) is per query.

Bodies of answers that vary per query (GSLB decisions) come from `build_template`,
a small encoder with name compression; callers cache its result per decision shape.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from typing import NamedTuple

from zonegate.errors import RemoteProtocolError

# -- RFC 1035 §4.1.1 header
HEADER = struct.Struct("!HHHHHH")
QR = 0x8000
OPCODE_MASK = 0x7800
AA = 0x0400
TC = 0x0200
RD = 0x0100
RA = 0x0080  # never set: no recursion here
CD = 0x0010  # RFC 4035 §3.2.2: copied into the response

# -- rcodes (RFC 1035 §4.1.1, RFC 6891 §9)
NOERROR = 0
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3
NOTIMP = 4
REFUSED = 5
BADVERS = 16  # RFC 6891 §6.1.3: extended rcode 1 in the OPT TTL, header rcode 0

RCODE_NAMES = {
    NOERROR: "NOERROR",
    FORMERR: "FORMERR",
    SERVFAIL: "SERVFAIL",
    NXDOMAIN: "NXDOMAIN",
    NOTIMP: "NOTIMP",
    REFUSED: "REFUSED",
    BADVERS: "BADVERS",
}

# -- types and classes (RFC 1035 §3.2.2, RFC 3596, RFC 6891)
A = 1
NS = 2
CNAME = 5
SOA = 6
HINFO = 13
MX = 15
TXT = 16
AAAA = 28
OPT = 41
IXFR = 251
AXFR = 252
ANY = 255
CLASS_IN = 1
CLASS_ANY = 255

TYPE_NAMES = {
    A: "A",
    NS: "NS",
    CNAME: "CNAME",
    SOA: "SOA",
    HINFO: "HINFO",
    MX: "MX",
    TXT: "TXT",
    AAAA: "AAAA",
    OPT: "OPT",
    IXFR: "IXFR",
    AXFR: "AXFR",
    ANY: "ANY",
}
TYPE_CODES = {v: k for k, v in TYPE_NAMES.items()}

# -- limits
MAX_NAME = 255  # RFC 1035 §2.3.4: a name's wire form, root label included
MAX_LABEL = 63  # RFC 1035 §2.3.4
MIN_UDP_SIZE = 512  # RFC 1035 §4.2.1; RFC 6891 §6.2.5: smaller EDNS sizes count as 512
EDNS_UDP_SIZE = 1232  # what we advertise and send at most over UDP (DNS flag day 2020)
MAX_TCP_MESSAGE = 65535  # RFC 1035 §4.2.2: 2-byte length prefix
OPTION_ECS = 8  # RFC 7871 §6
ECS_FAMILY_IPV4 = 1  # RFC 7871 §6, IANA address family numbers
ECS_FAMILY_IPV6 = 2

NO_EDNS = -1
"""`Query.edns` when the query carries no OPT record."""

_RRHEAD = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_OPTION = struct.Struct("!HH")
_TTL_TYPE = struct.Struct("!HHIH")


class DnsFormError(RemoteProtocolError):
    """Malformed DNS query."""

    hint = FORMERR

    def __init__(self, message: str | None = None, *, id: int = 0, flags: int = 0) -> None:
        super().__init__(message)
        self.id = id
        """The query's ID, for the FORMERR response."""
        self.flags = flags
        """The query's header flags (opcode and RD are copied into the response)."""


class Ecs(NamedTuple):
    """An EDNS Client Subnet option as sent (RFC 7871 §6); scope is 0 in queries."""

    family: int
    source: int
    address: bytes
    """The significant octets as sent: ceil(source / 8) of them, trailing bits zero."""

    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        """The client network (`address`/`source`)."""
        if self.family == ECS_FAMILY_IPV4:
            return ipaddress.IPv4Network((self.address.ljust(4, b"\0"), self.source))
        return ipaddress.IPv6Network((self.address.ljust(16, b"\0"), self.source))


class Query(NamedTuple):
    """A parsed query: the header, the one question, and the EDNS facts we use."""

    id: int
    flags: int
    qname: bytes
    """The question name in wire form, exactly as asked (opcode != QUERY: b"" unless the
    message has one plain question, which NOTIMP echoes)."""
    qname_lower: bytes
    """`qname` in lower case: the lookup key (RFC 4343: names compare case-insensitively)."""
    qtype: int
    qclass: int
    question: bytes
    """The whole question section as asked (name, type, class), for the echo."""
    edns: int
    """The EDNS version of the OPT record, or NO_EDNS (-1) without one."""
    udp_size: int
    """The largest UDP response the client takes: 512 without EDNS (RFC 1035 §4.2.1)."""
    do: bool
    """The DNSSEC OK bit (RFC 3225 §3: copied into the response's OPT)."""
    ecs: Ecs | None

    @property
    def opcode(self) -> int:
        return (self.flags & OPCODE_MASK) >> 11

    def qname_text(self) -> str:
        """The question name as lower-case text without the trailing dot ('' = root)."""
        return wire_to_text(self.qname_lower)


_new = tuple.__new__


def parse(data: bytes) -> Query | None:
    """Parse a query.

    Accepts a DNS message with QR clear. Opcode QUERY: exactly one question, no answer
    or authority records, additional records of which at most one OPT (with a valid
    ECS option, if any, when its version is 0), nothing after the last record. Other
    opcodes: only what NOTIMP echoes is read, the question and the OPT, if they parse.

    Returns:
        The `Query`, or None when the message must be dropped silently: shorter than a
        header, or a response (QR set; answering responses invites reflection loops).

    Raises:
        DnsFormError: the header parses but the rest is malformed (answer FORMERR).
    """
    end = len(data)
    if end < 12:
        return None
    qid, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    if flags & QR:
        return None
    if flags & OPCODE_MASK:
        return _parse_other_opcode(data, qid, flags, qdcount, ancount + nscount, arcount)
    if qdcount != 1:
        raise DnsFormError(f"{qdcount} questions (expected 1)", id=qid, flags=flags)
    if ancount or nscount:
        raise DnsFormError("a query with answer or authority records", id=qid, flags=flags)
    pos = 12
    while True:
        if pos >= end:
            raise DnsFormError("question name runs past the end", id=qid, flags=flags)
        n = data[pos]
        if n == 0:
            pos += 1
            break
        if n > MAX_LABEL:
            # RFC 1035 §4.1.4: a pointer has nothing earlier to point to in a question.
            raise DnsFormError("compressed or extended label in the question", id=qid, flags=flags)
        pos += n + 1
    if pos - 12 > MAX_NAME:
        raise DnsFormError("question name longer than 255 octets", id=qid, flags=flags)
    qend = pos + 4
    if qend > end:
        raise DnsFormError("question type and class missing", id=qid, flags=flags)
    qname = data[12:pos]
    qtype = (data[pos] << 8) | data[pos + 1]
    qclass = (data[pos + 2] << 8) | data[pos + 3]
    question = data[12:qend]
    if not arcount:
        if qend != end:
            raise DnsFormError("bytes after the question", id=qid, flags=flags)
        # tuple.__new__ skips NamedTuple's Python-level __new__: a third of parse's time.
        return _new(
            Query,
            (qid, flags, qname, qname.lower(), qtype, qclass, question, NO_EDNS, 512, False, None),
        )
    return _parse_additional(data, qend, arcount, qid, flags, qname, qtype, qclass, question)


def _parse_additional(
    data: bytes,
    pos: int,
    arcount: int,
    qid: int,
    flags: int,
    qname: bytes,
    qtype: int,
    qclass: int,
    question: bytes,
) -> Query:
    end = len(data)
    edns = NO_EDNS
    udp_size = MIN_UDP_SIZE
    do = False
    ecs: Ecs | None = None
    for _ in range(arcount):
        owner = pos
        pos = _skip_name(data, pos, qid, flags)
        if pos + 10 > end:
            raise DnsFormError("additional record header truncated", id=qid, flags=flags)
        rtype, rclass, ttl, rdlen = _RRHEAD.unpack_from(data, pos)
        pos += 10
        rdend = pos + rdlen
        if rdend > end:
            raise DnsFormError("additional record data truncated", id=qid, flags=flags)
        if rtype == OPT:
            if edns != NO_EDNS:
                raise DnsFormError("more than one OPT record", id=qid, flags=flags)  # §6.1.1
            if data[owner] != 0:
                raise DnsFormError("OPT record owner is not the root", id=qid, flags=flags)
            edns = (ttl >> 16) & 0xFF
            udp_size = rclass if rclass > MIN_UDP_SIZE else MIN_UDP_SIZE
            do = bool(ttl & 0x8000)
            if edns == 0:
                # Options of other versions may mean other things: BADVERS, not FORMERR.
                ecs = _parse_options(data, pos, rdend, qid, flags)
        pos = rdend
    if pos != end:
        raise DnsFormError("bytes after the last record", id=qid, flags=flags)
    return _new(
        Query, (qid, flags, qname, qname.lower(), qtype, qclass, question, edns, udp_size, do, ecs)
    )


def _parse_other_opcode(
    data: bytes, qid: int, flags: int, qdcount: int, records: int, arcount: int
) -> Query:
    """What a NOTIMP answer echoes of a message of another opcode: its one question
    (a NOTIFY's or an UPDATE's zone) and its OPT (RFC 6891 §7), when they parse;
    else the header alone. Never raises: NOTIMP is the answer whatever follows."""
    qname = question = b""
    qtype = qclass = 0
    if qdcount == 1:
        pos = 12
        end = len(data)
        while pos < end and 0 < data[pos] <= MAX_LABEL:
            pos += data[pos] + 1
        if pos < end and data[pos] == 0 and pos + 5 <= end and pos - 11 <= MAX_NAME:
            qname = data[12 : pos + 1]
            qtype = (data[pos + 1] << 8) | data[pos + 2]
            qclass = (data[pos + 3] << 8) | data[pos + 4]
            question = data[12 : pos + 5]
    opt = find_opt(data)
    edns, do = (NO_EDNS, False) if opt is None else (0, opt)
    return _new(
        Query,
        (qid, flags, qname, qname.lower(), qtype, qclass, question, edns, MIN_UDP_SIZE, do, None),
    )


def find_opt(data: bytes) -> bool | None:
    """The DO bit of a message's one OPT record, or None when it has none, more than
    one, or its sections do not parse up to the OPT (then it cannot be trusted).

    For answers to messages `parse` does not take as a query (FORMERR, NOTIMP), which
    must still carry an OPT when the query did (RFC 6891 §7).
    """
    end = len(data)
    if end < 12:
        return None
    _, _, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    found: bool | None = None
    try:
        pos = 12
        for _ in range(qdcount):
            pos = _skip_name(data, pos, 0, 0) + 4
            if pos > end:
                return None
        for i in range(ancount + nscount + arcount):
            owner = pos
            pos = _skip_name(data, pos, 0, 0)
            if pos + 10 > end:
                return None
            rtype, _, ttl, rdlen = _RRHEAD.unpack_from(data, pos)
            pos += 10 + rdlen
            if pos > end:
                return None
            if rtype == OPT:
                if found is not None or i < ancount + nscount or data[owner] != 0:
                    return None  # RFC 6891 §6.1.1: one OPT, owned by the root
                found = bool(ttl & 0x8000)
    except DnsFormError:
        return None
    return found


def _skip_name(data: bytes, pos: int, qid: int, flags: int) -> int:
    """Return the offset after the (possibly compressed) name at `pos`."""
    end = len(data)
    start = pos
    while True:
        if pos >= end:
            raise DnsFormError("record name runs past the end", id=qid, flags=flags)
        n = data[pos]
        if n == 0:
            return pos + 1
        if n & 0xC0 == 0xC0:
            if pos + 2 > end:
                raise DnsFormError("compression pointer truncated", id=qid, flags=flags)
            return pos + 2
        if n > MAX_LABEL:
            raise DnsFormError("extended label type", id=qid, flags=flags)  # RFC 6891 §5
        pos += n + 1
        if pos - start > MAX_NAME:
            raise DnsFormError("record name longer than 255 octets", id=qid, flags=flags)


def _parse_options(data: bytes, pos: int, end: int, qid: int, flags: int) -> Ecs | None:
    ecs: Ecs | None = None
    while pos < end:
        if pos + 4 > end:
            raise DnsFormError("EDNS option header truncated", id=qid, flags=flags)
        code, length = _OPTION.unpack_from(data, pos)
        pos += 4
        oend = pos + length
        if oend > end:
            raise DnsFormError("EDNS option runs past the OPT record", id=qid, flags=flags)
        if code == OPTION_ECS:
            if ecs is not None:
                raise DnsFormError("more than one ECS option", id=qid, flags=flags)
            ecs = _parse_ecs(data[pos:oend], qid, flags)
        pos = oend
    return ecs


def _parse_ecs(opt: bytes, qid: int, flags: int) -> Ecs:
    """RFC 7871 §6 and §7.1.1: every malformation is answered FORMERR."""
    if len(opt) < 4:
        raise DnsFormError("ECS option shorter than 4 octets", id=qid, flags=flags)
    family = (opt[0] << 8) | opt[1]
    source = opt[2]
    scope = opt[3]
    address = opt[4:]
    if family == ECS_FAMILY_IPV4:
        bits = 32
    elif family == ECS_FAMILY_IPV6:
        bits = 128
    else:
        raise DnsFormError(f"ECS family {family} unknown", id=qid, flags=flags)
    if source > bits:
        raise DnsFormError("ECS source prefix longer than the address", id=qid, flags=flags)
    if scope != 0:
        raise DnsFormError("ECS scope prefix not 0 in a query", id=qid, flags=flags)
    if len(address) != (source + 7) // 8:
        raise DnsFormError("ECS address length does not match its prefix", id=qid, flags=flags)
    if source % 8 and address[-1] & (0xFF >> (source % 8)):
        raise DnsFormError("ECS address has bits set beyond its prefix", id=qid, flags=flags)
    return Ecs(family, source, address)


# -- names


def wire_to_text(wire: bytes) -> str:
    """An uncompressed wire name to text without the trailing dot (root: '').

    Labels are decoded as Latin-1 with '.' and '\\' escaped, so distinct names stay
    distinct; zone names are plain ASCII and come out as written.
    """
    labels = []
    pos = 0
    while pos < len(wire) and wire[pos]:
        n = wire[pos]
        label = wire[pos + 1 : pos + 1 + n].decode("latin-1")
        if "." in label or "\\" in label:
            label = label.replace("\\", "\\\\").replace(".", "\\.")
        labels.append(label)
        pos += n + 1
    return ".".join(labels)


def text_to_wire(name: str) -> bytes:
    """A plain ASCII name ('a.b.c' or 'a.b.c.') to lower-case wire form.

    Raises:
        ValueError: an empty label in the middle, a label over 63 or a name over 255
            octets.
    """
    name = name.rstrip(".") if name not in (".", "") else ""
    out = bytearray()
    if name:
        for label in name.split("."):
            raw = label.lower().encode("latin-1")
            if not raw or len(raw) > MAX_LABEL:
                raise ValueError(f"invalid name {name!r}: bad label {label!r}")
            out.append(len(raw))
            out += raw
    out.append(0)
    if len(out) > MAX_NAME:
        raise ValueError(f"invalid name {name!r}: longer than 255 octets")
    return bytes(out)


# -- templates


class Template(NamedTuple):
    """A response without its ID and question: see the module docstring."""

    heads: tuple[bytes, ...]
    """Flags and the four counts (10 bytes), indexed by `variant(query)`:
    bit 0 RD, bit 1 CD, bit 2 OPT present (ARCOUNT + 1)."""
    body: bytes
    """Answer, authority and additional records (without OPT)."""
    rcode: int


def make_heads(base_flags: int, qdcount: int, an: int, ns: int, ar: int) -> tuple[bytes, ...]:
    """The 8 header variants of a template (see `Template.heads`)."""
    heads = []
    for i in range(8):
        flags = base_flags | (RD if i & 1 else 0) | (CD if i & 2 else 0)
        heads.append(struct.pack("!HHHHH", flags, qdcount, an, ns, ar + (1 if i & 4 else 0)))
    return tuple(heads)


def variant(data: bytes, edns: bool) -> int:
    """The `Template.heads` index for a query's raw bytes (RD, CD) and its EDNS."""
    return (data[2] & 1) | ((data[3] >> 3) & 2) | (4 if edns else 0)


def opt_record(do: bool = False, ext_rcode: int = 0, options: bytes = b"") -> bytes:
    """Our OPT record (RFC 6891 §6.1.2): version 0, advertising EDNS_UDP_SIZE."""
    flags = 0x8000 if do else 0
    head = struct.pack("!HHBBHH", OPT, EDNS_UDP_SIZE, ext_rcode, 0, flags, len(options))
    return b"\x00" + head + options


OPT_PLAIN = (opt_record(False), opt_record(True))
"""The OPT record without options, indexed by the DO bit."""


def ecs_option(ecs: Ecs, scope: int) -> bytes:
    """The ECS echo (RFC 7871 §7.2.1): family, source and address as sent, our scope."""
    return (
        struct.pack("!HHHBB", OPTION_ECS, 4 + len(ecs.address), ecs.family, ecs.source, scope)
        + ecs.address
    )


def opt_for(query: Query, scope: int = 0, ext_rcode: int = 0) -> bytes:
    """The OPT record answering `query` (which has EDNS), with the ECS echo if it sent ECS."""
    if query.ecs is None and not ext_rcode:
        return OPT_PLAIN[query.do]
    options = ecs_option(query.ecs, scope) if query.ecs is not None else b""
    return opt_record(query.do, ext_rcode, options)


def render(data: bytes, query: Query, template: Template, scope: int = 0) -> bytes:
    """The full response to `query` (whose raw bytes are `data`) from a template."""
    if query.edns == NO_EDNS:
        return data[:2] + template.heads[variant(data, False)] + query.question + template.body
    return (
        data[:2]
        + template.heads[variant(data, True)]
        + query.question
        + template.body
        + opt_for(query, scope)
    )


def udp_limit(query: Query) -> int:
    """The largest UDP response for `query`: 512 without EDNS, else its size up to ours."""
    if query.edns == NO_EDNS:
        return MIN_UDP_SIZE
    return query.udp_size if query.udp_size < EDNS_UDP_SIZE else EDNS_UDP_SIZE


def _flags(query_flags: int, rcode: int, aa: bool, tc: bool = False) -> int:
    return (
        QR
        | (query_flags & (OPCODE_MASK | RD | CD))
        | (AA if aa else 0)
        | (TC if tc else 0)
        | (rcode & 0xF)
    )


def formerr_response(exc: DnsFormError, data: bytes = b"") -> bytes:
    """FORMERR for a query whose header parsed: no question echoed, and an OPT when
    the query (`data`) carried a well-formed one (RFC 6891 §7: without it a resolver
    concludes that this server does not speak EDNS)."""
    do = find_opt(data) if data else None
    head = HEADER.pack(exc.id, _flags(exc.flags, FORMERR, False), 0, 0, 0, do is not None)
    return head if do is None else head + OPT_PLAIN[do]


def error_response(query: Query, rcode: int, *, aa: bool = False) -> bytes:
    """A response with no records: REFUSED, NOTIMP, SERVFAIL, BADVERS, ...

    The question is echoed when there is one; an OPT record is added when the query
    had one (BADVERS goes in its extended rcode, RFC 6891 §6.1.3).
    """
    edns = query.edns != NO_EDNS
    qd = 1 if query.question else 0
    head = HEADER.pack(query.id, _flags(query.flags, rcode, aa), qd, 0, 0, 1 if edns else 0)
    if not edns:
        return head + query.question
    return head + query.question + opt_for(query, 0, rcode >> 4)


def truncated_response(query: Query, full: bytes) -> bytes:
    """TC set, the question echoed, no records: the client retries over TCP.

    Used when an answer exceeds the client's UDP size, and for RRL slips (RFC 2181 §9).
    The AA bit and the rcode are those of the `full` response (a referral does not
    claim authority, an NXDOMAIN stays one: the header tells the truth even when the
    records do not fit).
    """
    edns = query.edns != NO_EDNS
    flags = (full[2] << 8) | full[3]
    head = HEADER.pack(
        query.id, _flags(query.flags, flags & 0xF, bool(flags & AA), tc=True), 1, 0, 0, edns
    )
    if not edns:
        return head + query.question
    return head + query.question + opt_for(query)


# -- dynamic answers


class Rr(NamedTuple):
    """A record to encode: owner and rdata names are lower-case wire names."""

    owner: bytes
    rtype: int
    ttl: int
    rdata: bytes
    rdata_is_name: bool = False
    """The whole rdata is one name (CNAME, NS): compressed when encoded."""


def address_rr(owner: bytes, address: str, ttl: int) -> Rr:
    """An A or AAAA record for an address literal.

    Raises:
        ValueError: not an address.
    """
    ip = ipaddress.ip_address(address)
    return Rr(owner, A if ip.version == 4 else AAAA, ttl, ip.packed)


class _Writer:
    """Appends records after a question, compressing names (RFC 1035 §4.1.4)."""

    def __init__(self, qname_lower: bytes) -> None:
        self.out = bytearray()
        self.base = 12 + len(qname_lower) + 4
        self.names: dict[bytes, int] = {}
        self._remember(qname_lower, 12)

    def _remember(self, name: bytes, offset: int, stop: int | None = None) -> None:
        """Record the suffixes of `name` that start before `stop`, written at `offset`."""
        stop = len(name) if stop is None else stop
        pos = 0
        while pos < stop and name[pos] and offset + pos < 0x4000:  # 14-bit pointers
            self.names.setdefault(name[pos:], offset + pos)
            pos += name[pos] + 1

    def name(self, name: bytes) -> None:
        pos = 0
        while pos < len(name) and name[pos]:
            ptr = self.names.get(name[pos:])
            if ptr is not None:
                self._remember(name, self.base + len(self.out), pos)
                self.out += name[:pos]
                self.out += struct.pack("!H", 0xC000 | ptr)
                return
            pos += name[pos] + 1
        self._remember(name, self.base + len(self.out))
        self.out += name

    def rr(self, rr: Rr) -> None:
        self.name(rr.owner)
        if rr.rdata_is_name:
            self.out += _TTL_TYPE.pack(rr.rtype, CLASS_IN, rr.ttl, 0)
            at = len(self.out)
            self.name(rr.rdata)
            struct.pack_into("!H", self.out, at - 2, len(self.out) - at)
        else:
            self.out += _TTL_TYPE.pack(rr.rtype, CLASS_IN, rr.ttl, len(rr.rdata))
            self.out += rr.rdata


def build_template(
    qname_lower: bytes,
    answer: Sequence[Rr],
    authority: Sequence[Rr] = (),
    additional: Sequence[Rr] = (),
    *,
    rcode: int = NOERROR,
    aa: bool = True,
) -> Template:
    """A template for a response to a question on `qname_lower` (any type, any case).

    Names in the records are compressed against the question and each other.
    """
    w = _Writer(qname_lower)
    for rr in answer:
        w.rr(rr)
    for rr in authority:
        w.rr(rr)
    for rr in additional:
        w.rr(rr)
    base = QR | (AA if aa else 0) | rcode
    heads = make_heads(base, 1, len(answer), len(authority), len(additional))
    return Template(heads, bytes(w.out), rcode)


def addresses_template(
    qname_lower: bytes, rtype: int, addresses: Sequence[bytes], ttl: int
) -> Template:
    """The common GSLB answer: A or AAAA records (packed addresses) owned by the qname."""
    rr_head = b"\xc0\x0c" + _TTL_TYPE.pack(rtype, CLASS_IN, ttl, 4 if rtype == A else 16)
    body = b"".join(rr_head + a for a in addresses)
    return Template(make_heads(QR | AA, 1, len(addresses), 0, 0), body, NOERROR)


__all__ = [
    "AA",
    "CD",
    "EDNS_UDP_SIZE",
    "NO_EDNS",
    "QR",
    "RCODE_NAMES",
    "RD",
    "TC",
    "TYPE_CODES",
    "TYPE_NAMES",
    "DnsFormError",
    "Ecs",
    "Query",
    "Rr",
    "Template",
    "address_rr",
    "addresses_template",
    "build_template",
    "ecs_option",
    "error_response",
    "find_opt",
    "formerr_response",
    "make_heads",
    "opt_for",
    "opt_record",
    "parse",
    "render",
    "text_to_wire",
    "truncated_response",
    "udp_limit",
    "variant",
    "wire_to_text",
]
