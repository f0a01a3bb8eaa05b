"""dns.codec: the query parser, error responses and the dynamic template builder.

Every response built here is read back with dnspython, the reference decoder.
"""

from __future__ import annotations

import ipaddress
import struct

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from zonegate.dns import codec
from zonegate.dns.codec import DnsFormError, Ecs, Query, Rr, parse
from zonegate.errors import RemoteProtocolError


def wire(name: str = "www.example.test", rdtype: str = "A", **kw) -> bytes:
    return dns.message.make_query(name, rdtype, **kw).to_wire()


def ecs_query(address: str, prefix: int, name: str = "api.example.test") -> bytes:
    opt = dns.edns.ECSOption(address, prefix)
    return dns.message.make_query(name, "A", use_edns=0, options=[opt]).to_wire()


def header(qd=1, an=0, ns=0, ar=0, flags=0x0100, qid=0x1234) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


QUESTION = b"\x03www\x07example\x04test\x00\x00\x01\x00\x01"
OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"  # root, OPT, 1232, v0, no rdata


# --- parse: valid queries -----------------------------------------------------------


def test_plain_query():
    data = wire("WwW.Example.TEST", "AAAA")
    q = parse(data)
    assert isinstance(q, Query)
    assert q.qname == b"\x03WwW\x07Example\x04TEST\x00"
    assert q.qname_lower == b"\x03www\x07example\x04test\x00"
    assert q.qtype == 28
    assert q.qclass == 1
    assert q.question == data[12:]
    assert q.edns == codec.NO_EDNS
    assert q.udp_size == 512
    assert q.ecs is None
    assert q.opcode == 0
    assert q.qname_text() == "www.example.test"


def test_edns_query_size_and_do_bit():
    data = wire(use_edns=0, payload=4096, want_dnssec=True)
    q = parse(data)
    assert q.edns == 0
    assert q.udp_size == 4096
    assert q.do is True


def test_edns_size_below_512_counts_as_512():
    q = parse(wire(use_edns=0, payload=100))
    assert q.udp_size == 512  # RFC 6891 §6.2.5


def test_edns_version_is_reported_not_refused():
    q = parse(wire(use_edns=1))
    assert q.edns == 1  # the server answers BADVERS


@pytest.mark.parametrize(
    ("address", "prefix", "family", "raw"),
    [
        ("10.1.2.0", 24, 1, b"\x0a\x01\x02"),
        ("10.1.2.128", 25, 1, b"\x0a\x01\x02\x80"),
        ("0.0.0.0", 0, 1, b""),
        ("2001:db8::", 48, 2, bytes.fromhex("20010db80000")),
    ],
)
def test_ecs_option(address, prefix, family, raw):
    q = parse(ecs_query(address, prefix))
    assert q.ecs == Ecs(family, prefix, raw)
    assert q.ecs.network() == ipaddress.ip_network(f"{address}/{prefix}")


def test_other_options_are_skipped():
    cookie = dns.edns.GenericOption(10, b"\x01" * 8)
    data = dns.message.make_query("a.test", "A", use_edns=0, options=[cookie]).to_wire()
    q = parse(data)
    assert q.edns == 0
    assert q.ecs is None


def test_non_opt_additional_records_are_skipped():
    # A TSIG-like record with a compressed owner before the OPT.
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 250, 255, 0, 3) + b"abc"
    q = parse(header(ar=2) + QUESTION + rr + OPT)
    assert q.edns == 0


def test_opcode_other_than_query_keeps_what_notimp_echoes():
    """Issue 12 item 11: the question and the OPT of another opcode are read (NOTIMP
    echoes the question and carries an OPT, RFC 6891 §7); anything broken is skipped."""
    q = parse(header(flags=2 << 11) + QUESTION)
    assert q.opcode == 2
    assert q.question == QUESTION
    assert q.edns == codec.NO_EDNS
    # An UPDATE: zone, prerequisite and update records, then the OPT.
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 254, 0, 0)
    q = parse(header(flags=5 << 11, an=1, ns=1, ar=1) + QUESTION + rr + rr + OPT)
    assert (q.opcode, q.question, q.edns) == (5, QUESTION, 0)
    # No question, or one that does not parse: nothing echoed; OPT only when well formed.
    assert parse(header(qd=0, ar=1, flags=4 << 11) + OPT).edns == 0
    broken = parse(header(flags=4 << 11, ar=1) + b"\x03www\xc0\x0c\x00\x01")
    assert (broken.question, broken.edns) == (b"", codec.NO_EDNS)
    assert parse(header(flags=4 << 11, ar=2) + QUESTION + OPT + OPT).edns == codec.NO_EDNS


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x12\x34",
        b"\x00" * 11,
        header(flags=0x8000) + QUESTION,  # a response: never answered
    ],
    ids=["empty", "two-bytes", "short-header", "response"],
)
def test_dropped(data):
    assert parse(data) is None


# --- parse: FORMERR -----------------------------------------------------------------

FORMERRS = {
    "no-question": header(qd=0),
    "two-questions": header(qd=2) + QUESTION + QUESTION,
    "answer-records": header(an=1) + QUESTION,
    "authority-records": header(ns=1) + QUESTION,
    "name-past-end": header() + b"\x03www\x07exam",
    "no-root-label": header() + b"\x03www",
    "pointer-in-question": header() + b"\x03www\xc0\x0c\x00\x01\x00\x01",
    "extended-label": header() + b"\x41" + b"a" * 65 + b"\x00\x00\x01\x00\x01",
    "name-too-long": header() + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01",
    "no-type-class": header() + b"\x03www\x00\x00\x01",
    "trailing-bytes": header() + QUESTION + b"\x00",
    "two-opts": header(ar=2) + QUESTION + OPT + OPT,
    "opt-not-root": header(ar=1) + QUESTION + b"\x01a" + OPT,
    "rr-header-truncated": header(ar=1) + QUESTION + b"\x00\x00\x29",
    "rdata-truncated": header(ar=1) + QUESTION + OPT[:-2] + b"\x00\x05ab",
    "missing-additional": header(ar=2) + QUESTION + OPT,
    "option-truncated": header(ar=1) + QUESTION + OPT[:-2] + b"\x00\x02\x00\x08",
    "option-past-rdata": header(ar=1) + QUESTION + OPT[:-2] + b"\x00\x04\x00\x08\x00\x09",
    "ecs-short": header(ar=1) + QUESTION + OPT[:-2] + b"\x00\x06\x00\x08\x00\x02\x00\x01",
    "ecs-family": header(ar=1) + QUESTION + OPT[:-2] + b"\x00\x08\x00\x08\x00\x04\x00\x03\x08\x00",
    "ecs-scope-set": header(ar=1)
    + QUESTION
    + OPT[:-2]
    + b"\x00\x09\x00\x08\x00\x05\x00\x01\x08\x10\x0a",
    "ecs-source-too-long": header(ar=1)
    + QUESTION
    + OPT[:-2]
    + b"\x00\x0d\x00\x08\x00\x09\x00\x01\x21\x00\x0a\x01\x02\x03\x04",
    "ecs-address-too-long": header(ar=1)
    + QUESTION
    + OPT[:-2]
    + b"\x00\x0a\x00\x08\x00\x06\x00\x01\x08\x00\x0a\x01",
    "ecs-bits-beyond-prefix": header(ar=1)
    + QUESTION
    + OPT[:-2]
    + b"\x00\x0b\x00\x08\x00\x07\x00\x01\x17\x00\x0a\x01\x03",
    "two-ecs": header(ar=1)
    + QUESTION
    + OPT[:-2]
    + b"\x00\x10"
    + b"\x00\x08\x00\x04\x00\x01\x00\x00" * 2,
}


@pytest.mark.parametrize("data", list(FORMERRS.values()), ids=list(FORMERRS))
def test_formerr(data):
    with pytest.raises(DnsFormError) as info:
        parse(data)
    exc = info.value
    assert isinstance(exc, RemoteProtocolError)
    assert exc.hint == codec.FORMERR
    assert exc.id == 0x1234
    resp = dns.message.from_wire(codec.formerr_response(exc))
    assert resp.id == 0x1234
    assert resp.rcode() == dns.rcode.FORMERR
    assert resp.flags & dns.flags.QR
    assert resp.flags & dns.flags.RD  # copied
    assert not resp.flags & dns.flags.AA
    assert resp.edns == -1  # without the query: no OPT


FORMERR_WITH_OPT = {
    "two-questions": header(qd=2, ar=1) + QUESTION + QUESTION + OPT,
    "answer-record": header(an=1, ar=1)
    + QUESTION
    + b"\xc0\x0c"
    + struct.pack("!HHIH", 1, 1, 0, 4)
    + bytes(4)
    + OPT,
    "ecs-scope-set": FORMERRS["ecs-scope-set"],
    "trailing": header(ar=1) + QUESTION + OPT + b"\x00",
}


@pytest.mark.parametrize("data", list(FORMERR_WITH_OPT.values()), ids=list(FORMERR_WITH_OPT))
def test_formerr_carries_an_opt_when_the_query_had_a_good_one(data):
    """Issue 12 item 11 (RFC 6891 §7): a FORMERR to a query with a well-formed OPT
    carries one; without it the resolver concludes that we lack EDNS."""
    with pytest.raises(DnsFormError) as info:
        parse(data)
    resp = dns.message.from_wire(codec.formerr_response(info.value, data))
    assert resp.rcode() == dns.rcode.FORMERR
    assert resp.edns == 0
    assert resp.payload == codec.EDNS_UDP_SIZE
    assert resp.question == []


@pytest.mark.parametrize("name", ["two-opts", "opt-not-root", "truncated-rr"])
def test_formerr_without_a_trustworthy_opt_has_none(name):
    data = FORMERRS.get(name, header(ar=1) + QUESTION + OPT[:-3])
    with pytest.raises(DnsFormError) as info:
        parse(data)
    resp = dns.message.from_wire(codec.formerr_response(info.value, data))
    assert resp.edns == -1


def test_formerr_messages_say_what_is_wrong():
    with pytest.raises(DnsFormError, match="more than one OPT"):
        parse(FORMERRS["two-opts"])
    with pytest.raises(DnsFormError, match="ECS scope prefix"):
        parse(FORMERRS["ecs-scope-set"])
    with pytest.raises(DnsFormError, match="OPT record owner is not the root"):
        parse(FORMERRS["opt-not-root"])


def test_bad_options_of_unknown_versions_are_not_parsed():
    # Version 1 with a broken ECS: BADVERS wins over FORMERR (RFC 6891 §6.1.3).
    opt = b"\x00\x00\x29\x04\xd0\x00\x01\x00\x00\x00\x06\x00\x08\x00\x02\x00\x01"
    q = parse(header(ar=1) + QUESTION + opt)
    assert q.edns == 1


# --- responses ----------------------------------------------------------------------


@pytest.mark.parametrize("rcode", [codec.REFUSED, codec.NOTIMP, codec.SERVFAIL])
@pytest.mark.parametrize("edns", [None, 0])
def test_error_response(rcode, edns):
    data = wire("Q.example.test", "TXT", use_edns=edns)
    q = parse(data)
    resp = dns.message.from_wire(codec.error_response(q, rcode))
    assert resp.id == q.id
    assert resp.rcode() == rcode
    assert str(resp.question[0].name) == "Q.example.test."
    assert resp.question[0].rdtype == dns.rdatatype.TXT
    assert not resp.flags & (dns.flags.AA | dns.flags.RA | dns.flags.TC)
    assert resp.edns == (0 if edns == 0 else -1)
    if edns == 0:
        assert resp.payload == codec.EDNS_UDP_SIZE


def test_badvers_response():
    q = parse(wire(use_edns=1))
    resp = dns.message.from_wire(codec.error_response(q, codec.BADVERS))
    assert resp.rcode() == dns.rcode.BADVERS
    assert resp.edns == 0  # we answer with the version we speak


@pytest.mark.parametrize("edns", [False, True])
def test_notimp_response_echoes_question_and_opt(edns):
    """Issue 12 item 11: NOTIMP echoes the question, with an OPT if the query had one."""
    data = header(flags=(4 << 11) | 0x0100, ar=int(edns)) + QUESTION + (OPT if edns else b"")
    q = parse(data)
    resp = dns.message.from_wire(codec.error_response(q, codec.NOTIMP))
    assert resp.rcode() == dns.rcode.NOTIMP
    assert resp.opcode() == 4
    assert [str(r.name) for r in resp.question] == ["www.example.test."]
    assert resp.edns == (0 if edns else -1)


@pytest.mark.parametrize("edns", [None, 0])
@pytest.mark.parametrize(
    ("aa", "rcode"), [(True, codec.NOERROR), (True, codec.NXDOMAIN), (False, codec.NOERROR)]
)
def test_truncated_response_keeps_aa_and_rcode(edns, aa, rcode):
    """Issue 12 item 9: TC keeps the full answer's AA bit and rcode (a referral does
    not claim authority, an NXDOMAIN stays one)."""
    q = parse(wire("big.example.test", "TXT", use_edns=edns))
    full = codec.HEADER.pack(q.id, codec.QR | (codec.AA if aa else 0) | rcode, 1, 9, 0, 0)
    resp = dns.message.from_wire(codec.truncated_response(q, full))
    assert resp.flags & dns.flags.TC
    assert bool(resp.flags & dns.flags.AA) == aa
    assert resp.rcode() == rcode
    assert resp.answer == []
    assert str(resp.question[0].name) == "big.example.test."
    assert resp.edns == (0 if edns == 0 else -1)


def test_opt_echoes_do_bit_and_ecs_with_scope():
    q = parse(ecs_query("10.1.2.0", 24))
    raw = codec.opt_for(q, scope=20)
    head = codec.HEADER.pack(1, 0x8400, 0, 0, 0, 1)
    resp = dns.message.from_wire(head + raw)
    (option,) = resp.options
    assert isinstance(option, dns.edns.ECSOption)
    assert option.address == "10.1.2.0"
    assert option.srclen == 24
    assert option.scopelen == 20
    q2 = parse(wire(use_edns=0, want_dnssec=True))
    resp2 = dns.message.from_wire(head + codec.opt_for(q2))
    assert resp2.ednsflags & dns.flags.DO


def test_variant_copies_rd_and_cd():
    data = bytearray(wire())
    data[2] &= ~0x01
    data[3] |= 0x10
    assert codec.variant(bytes(data), True) == 0b110
    assert codec.variant(wire(), False) == 0b001


# --- the dynamic template builder ---------------------------------------------------


def render_dynamic(qname: str, template: codec.Template, rdtype: str = "A") -> dns.message.Message:
    data = wire(qname, rdtype)
    q = parse(data)
    return dns.message.from_wire(codec.render(data, q, template))


def test_build_template_compresses_and_reads_back():
    qname = "Api.Example.Test"
    q = codec.text_to_wire(qname)
    target = codec.text_to_wire("api-z1.example.test")
    answer = [
        Rr(q, codec.CNAME, 30, target, True),
        codec.address_rr(target, "127.0.0.11", 30),
        codec.address_rr(target, "127.0.0.12", 30),
    ]
    soa = Rr(codec.text_to_wire("example.test"), codec.SOA, 60, b"\x00" * 22)
    t = codec.build_template(q, answer, [soa])
    msg = render_dynamic(qname, t)
    assert [rr.to_text() for rr in msg.answer] == [
        "Api.Example.Test. 30 IN CNAME api-z1.Example.Test.",
        "api-z1.Example.Test. 30 IN A 127.0.0.11\napi-z1.Example.Test. 30 IN A 127.0.0.12",
    ]
    assert msg.authority[0].name == dns.name.from_text("example.test")
    assert msg.flags & dns.flags.AA
    # The target was written once, then pointed to.
    assert t.body.count(b"api-z1") == 1


def test_addresses_template():
    q = codec.text_to_wire("api.example.test")
    t = codec.addresses_template(q, codec.AAAA, [ipaddress.ip_address("fd00::1").packed], 5)
    msg = render_dynamic("API.example.test", t, "AAAA")
    assert msg.answer[0].to_text() == "API.example.test. 5 IN AAAA fd00::1"


def test_text_and_wire_names():
    assert codec.text_to_wire("A.b.") == b"\x01a\x01b\x00"
    assert codec.text_to_wire(".") == b"\x00"
    assert codec.wire_to_text(b"\x01a\x01b\x00") == "a.b"
    assert codec.wire_to_text(b"\x03a.b\x00") == "a\\.b"
    with pytest.raises(ValueError, match="bad label"):
        codec.text_to_wire("a..b")
    with pytest.raises(ValueError, match="255"):
        codec.text_to_wire(".".join(["a" * 63] * 4))


# --- fuzz: any bytes give a Query, None or DnsFormError -----------------------------


def _outcome(data: bytes) -> str:
    try:
        q = parse(data)
    except DnsFormError as exc:
        codec.formerr_response(exc, data)  # always buildable
        return "formerr"
    if q is None:
        return "drop"
    assert isinstance(q, Query)
    assert len(q.qname) == len(q.qname_lower)
    if q.question:
        codec.error_response(q, codec.REFUSED)
        codec.truncated_response(q, codec.error_response(q, codec.REFUSED))
    return "query"


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=700))
@example(b"\x00" * 12)
@example(header() + QUESTION)
def test_fuzz_random_bytes(data):
    _outcome(data)


_label = st.binary(min_size=1, max_size=20).filter(lambda b: b"." not in b)


@st.composite
def valid_queries(draw) -> bytes:
    labels = draw(st.lists(st.from_regex(r"[A-Za-z0-9-]{1,12}", fullmatch=True), max_size=5))
    name = ".".join([*labels, "example", "test"])
    rdtype = draw(st.sampled_from(["A", "AAAA", "TXT", "SOA", "NS", "ANY", "MX", "CNAME"]))
    edns = draw(st.sampled_from([None, 0, 1]))
    options = []
    if edns is not None and draw(st.booleans()):
        prefix = draw(st.integers(0, 32))
        addr = ipaddress.ip_network(
            (
                draw(st.integers(0, 2**32 - 1)) >> (32 - prefix) << (32 - prefix) if prefix else 0,
                prefix,
            )
        )
        options.append(dns.edns.ECSOption(str(addr.network_address), prefix))
    m = dns.message.make_query(name, rdtype, use_edns=edns, options=options or None)
    return m.to_wire()


@st.composite
def mutated_queries(draw) -> bytes:
    data = bytearray(draw(valid_queries()))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[i]
    return bytes(data)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_queries())
def test_fuzz_mutated_queries(data):
    _outcome(data)


@settings(max_examples=100, deadline=None)
@given(valid_queries())
def test_valid_queries_always_parse(data):
    q = parse(data)
    assert isinstance(q, Query)
    assert q.question == data[12 : 12 + len(q.question)]


@pytest.mark.parametrize("module", ["dns/codec.py", "dns/zonedata.py"])
def test_pure_modules_import_no_io(module):
    from tests.test_architecture import FORBIDDEN, SRC, imported_roots

    bad = imported_roots(SRC / module) & FORBIDDEN
    assert not bad, f"{module} is pure code but imports {sorted(bad)}"
