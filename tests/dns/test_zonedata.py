"""dns.zonedata: prebuilt answers, golden-checked by parsing them with dnspython."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from tests.dns.conftest import topology_text
from zonegate.dns import codec
from zonegate.dns.codec import Template, parse
from zonegate.dns.zonedata import CnameToGslb, GslbName, ZoneData, compile_zones
from zonegate.errors import ConfigErrors
from zonegate.topology.load import load_topology_text
from zonegate.topology.schema import Topology

SERIAL = 2026112201


@pytest.fixture(scope="module")
def zd() -> ZoneData:
    topo = load_topology_text(topology_text(z1_port=1, z2_port=2), "topo.yaml")
    return compile_zones(topo, serial=SERIAL, source="topo.yaml")


def ask(zd: ZoneData, name: str, rdtype: str = "A", edns: int | None = None):
    data = dns.message.make_query(name, rdtype, use_edns=edns).to_wire()
    q = parse(data)
    answer = zd.lookup(q.qname_lower, q.qtype)
    if not isinstance(answer, Template):
        return answer
    return dns.message.from_wire(codec.render(data, q, answer))


def texts(section) -> list[str]:
    return sorted(line for rrset in section for line in rrset.to_text().splitlines())


def test_soa(zd):
    r = ask(zd, "example.test", "SOA")
    assert r.rcode() == dns.rcode.NOERROR
    assert r.flags & dns.flags.AA
    assert not r.flags & dns.flags.RA
    assert texts(r.answer) == [
        f"example.test. 300 IN SOA ns1.example.test. hostmaster.example.test. {SERIAL} "
        "3600 600 604800 60"
    ]


def test_ns_with_glue(zd):
    r = ask(zd, "example.test", "NS")
    assert texts(r.answer) == [
        "example.test. 300 IN NS ns1.example.test.",
        "example.test. 300 IN NS ns2.example.test.",
    ]
    assert texts(r.additional) == [
        "ns1.example.test. 300 IN A 192.0.2.1",
        "ns2.example.test. 300 IN A 192.0.2.2",
        "ns2.example.test. 300 IN AAAA 2001:db8::2",
    ]


@pytest.mark.parametrize(
    ("rdtype", "expected"),
    [
        ("A", ["web.example.test. 300 IN A 192.0.2.10"]),
        ("AAAA", ["web.example.test. 300 IN AAAA 2001:db8::10"]),
        ("TXT", ['web.example.test. 300 IN TXT "hello world"']),
    ],
)
def test_static_types(zd, rdtype, expected):
    r = ask(zd, "web.example.test", rdtype)
    assert r.rcode() == dns.rcode.NOERROR
    assert texts(r.answer) == expected
    assert r.authority == []


def test_mx_with_additional(zd):
    r = ask(zd, "example.test", "MX")
    assert texts(r.answer) == ["example.test. 300 IN MX 10 mail.example.test."]
    assert texts(r.additional) == ["mail.example.test. 300 IN A 192.0.2.25"]


def test_long_txt_is_split_into_strings(zd):
    r = ask(zd, "big.example.test", "TXT")
    assert len(r.answer[0]) == 10


def test_cname_chain_is_followed(zd):
    r = ask(zd, "www.example.test", "A")
    assert texts(r.answer) == [
        "web.example.test. 300 IN A 192.0.2.10",
        "www.example.test. 300 IN CNAME web.example.test.",
    ]


def test_cname_query_gets_the_cname_only(zd):
    r = ask(zd, "www.example.test", "CNAME")
    assert texts(r.answer) == ["www.example.test. 300 IN CNAME web.example.test."]


def test_cname_to_missing_type_is_nodata_at_the_target(zd):
    r = ask(zd, "www.example.test", "MX")
    assert r.rcode() == dns.rcode.NOERROR
    assert texts(r.answer) == ["www.example.test. 300 IN CNAME web.example.test."]
    assert r.authority[0].rdtype == dns.rdatatype.SOA


def test_question_echoed_as_asked(zd):
    r = ask(zd, "WwW.eXaMpLe.TeSt", "A")
    assert str(r.question[0].name) == "WwW.eXaMpLe.TeSt."
    # Owners compress against the question, so they carry its case (as BIND's do).
    assert r.answer[0].name == dns.name.from_text("www.example.test")


def test_nxdomain_has_the_soa(zd):
    r = ask(zd, "nope.example.test", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert r.flags & dns.flags.AA
    assert r.answer == []
    (soa,) = r.authority
    assert soa.name == dns.name.from_text("example.test")
    assert soa.ttl == 60  # min(SOA TTL, minimum): RFC 2308 §3


@pytest.mark.parametrize(
    ("name", "rdtype"),
    [
        ("web.example.test", "MX"),  # exists, not that type
        ("deep.example.test", "A"),  # empty non-terminal (RFC 8020)
        ("b.deep.example.test", "TXT"),
        ("wild.example.test", "A"),  # parent of a wildcard: exists, empty
        ("api.example.test", "TXT"),  # a GSLB name has only A/AAAA
    ],
)
def test_nodata(zd, name, rdtype):
    r = ask(zd, name, rdtype)
    assert r.rcode() == dns.rcode.NOERROR
    assert r.answer == []
    assert r.authority[0].rdtype == dns.rdatatype.SOA
    assert r.authority[0].ttl == 60


@pytest.mark.parametrize("name", ["example.org", "test", "example.test.org", "."])
def test_outside_our_zones(zd, name):
    assert ask(zd, name) is None


def test_any_gets_rfc8482_hinfo(zd):
    r = ask(zd, "web.example.test", "ANY")
    assert texts(r.answer) == ['web.example.test. 300 IN HINFO "RFC8482" ""']


def test_wildcard_owner_is_the_question(zd):
    r = ask(zd, "X.y.wild.example.test", "A")
    assert r.rcode() == dns.rcode.NOERROR
    assert texts(r.answer) == ["X.y.wild.example.test. 300 IN A 192.0.2.99"]
    nodata = ask(zd, "z.wild.example.test", "TXT")
    assert nodata.answer == []
    assert nodata.rcode() == dns.rcode.NOERROR


def test_referral_below_a_delegation(zd):
    for name in ("sub.example.test", "host.sub.example.test"):
        r = ask(zd, name, "A")
        assert r.rcode() == dns.rcode.NOERROR
        assert not r.flags & dns.flags.AA  # RFC 1034 §4.3.2: not authoritative below a cut
        assert r.answer == []
        assert texts(r.authority) == ["sub.example.test. 300 IN NS ns.sub.example.test."]
        assert texts(r.additional) == ["ns.sub.example.test. 300 IN A 192.0.2.53"]


def test_gslb_markers(zd):
    api = ask(zd, "API.example.test", "A")
    assert isinstance(api, GslbName)
    assert api.name == "api.example.test"
    assert api.negative.domain == "example.test"
    assert ask(zd, "api.example.test", "AAAA") is api
    alias = ask(zd, "alias.example.test", "A")
    assert isinstance(alias, CnameToGslb)
    assert alias.target is api
    assert [rr.rtype for rr in alias.chain] == [codec.CNAME]
    assert zd.gslb_names == {"api.example.test": api}


def test_cname_to_gslb_answers_cname_for_other_types(zd):
    r = ask(zd, "alias.example.test", "CNAME")
    assert texts(r.answer) == ["alias.example.test. 300 IN CNAME api.example.test."]


def test_edns_variant_counts_the_opt(zd):
    data = dns.message.make_query("web.example.test", "A", use_edns=0).to_wire()
    q = parse(data)
    t = zd.lookup(q.qname_lower, q.qtype)
    r = dns.message.from_wire(codec.render(data, q, t))
    assert r.edns == 0
    assert r.payload == codec.EDNS_UDP_SIZE
    assert texts(r.answer) == ["web.example.test. 300 IN A 192.0.2.10"]


def test_cname_into_a_delegation_gets_the_referral():
    """Issue 12 item 10 (RFC 1034 §4.3.2 step 3b): a CNAME whose target lies below one of
    our delegations answers the CNAME (AA: it is ours), then the referral: the cut's NS
    in authority and its glue in additional. CNAME and ANY get the CNAME alone."""
    text = topology_text(z1_port=1, z2_port=2).replace(
        "        sub: [{type: NS, value: ns.sub}]\n",
        "        sub: [{type: NS, value: ns.sub}]\n"
        "        into: [{type: CNAME, value: host.sub}]\n"
        "        via: [{type: CNAME, value: into}]\n",
    )
    zd = compile_zones(load_topology_text(text, "topo.yaml"), serial=SERIAL, source="topo.yaml")
    for name, chain in (
        ("into.example.test", ["into.example.test. 300 IN CNAME host.sub.example.test."]),
        (
            "via.example.test",
            [
                "into.example.test. 300 IN CNAME host.sub.example.test.",
                "via.example.test. 300 IN CNAME into.example.test.",
            ],
        ),
    ):
        for rdtype in ("A", "AAAA", "MX"):
            r = ask(zd, name, rdtype)
            assert r.rcode() == dns.rcode.NOERROR
            assert r.flags & dns.flags.AA
            assert texts(r.answer) == chain
            assert texts(r.authority) == ["sub.example.test. 300 IN NS ns.sub.example.test."]
            assert texts(r.additional) == ["ns.sub.example.test. 300 IN A 192.0.2.53"]
        for rdtype in ("CNAME", "ANY"):
            r = ask(zd, name, rdtype)
            assert len(r.answer) == 1
            assert r.authority == r.additional == []


def test_chase(zd):
    def w(name):
        return codec.text_to_wire(name)

    assert zd.chase(w("web.example.test"), codec.A).kind == "rrs"
    assert zd.chase(w("www.example.test"), codec.A).kind == "cname"
    assert zd.chase(w("web.example.test"), codec.MX).kind == "nodata"
    assert zd.chase(w("nope.example.test"), codec.A).kind == "nxdomain"
    assert zd.chase(w("x.example.org"), codec.A).kind == "external"
    below = zd.chase(w("a.sub.example.test"), codec.A)
    assert below.kind == "referral"
    assert [rr.rdata for rr in below.rrs] == [w("ns.sub.example.test")]
    assert [rr.owner for rr in below.glue] == [w("ns.sub.example.test")]
    assert zd.chase(w("api.example.test"), codec.A).gslb.name == "api.example.test"
    wild = zd.chase(w("q.wild.example.test"), codec.A)
    assert wild.kind == "rrs"
    assert wild.rrs[0].owner == w("q.wild.example.test")


def test_records_text(zd):
    assert zd.records_text("mail.example.test") == ["mail.example.test. 300 IN A 192.0.2.25"]
    assert zd.records_text("nope.example.test") == []


# --- names of every length below the apex -------------------------------------------

_labels = st.lists(st.from_regex(r"[a-zA-Z0-9]{1,63}", fullmatch=True), min_size=1, max_size=8)


def _fits(labels: list[str], suffix: str) -> bool:
    return len(dns.name.from_text(".".join([*labels, suffix])).to_wire()) <= 255


@settings(max_examples=150, deadline=None)
@given(_labels.filter(lambda ls: _fits(ls, "zz.example.test")))
def test_nxdomain_for_any_length(zd, labels):
    name = ".".join([*labels, "zz.example.test"])
    r = ask(zd, name, "A", edns=0)
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert r.question[0].name == dns.name.from_text(name)
    assert r.authority[0].name == dns.name.from_text("example.test")
    assert r.authority[0][0].mname == dns.name.from_text("ns1.example.test")


@settings(max_examples=100, deadline=None)
@given(_labels.filter(lambda ls: _fits(ls, "wild.example.test")))
def test_wildcard_for_any_length(zd, labels):
    name = ".".join([*labels, "wild.example.test"])
    r = ask(zd, name, "A")
    assert texts(r.answer) == [f"{name}. 300 IN A 192.0.2.99"]


@settings(max_examples=100, deadline=None)
@given(_labels.filter(lambda ls: _fits(ls, "sub.example.test")))
def test_referral_for_any_length(zd, labels):
    r = ask(zd, ".".join([*labels, "sub.example.test"]), "A")
    assert texts(r.authority) == ["sub.example.test. 300 IN NS ns.sub.example.test."]


# --- compile problems ---------------------------------------------------------------


def raw_topology(domains: str) -> Topology:
    """A topology that skips `validate`, to reach compile_zones' own checks."""
    text = "zones: {z1: {vips: [127.0.0.1]}}\ndns:\n  domains:\n" + domains
    return Topology.model_validate(YAML(typ="safe").load(text))


PROBLEMS = {
    "cname-and-data": (
        "    example.test:\n      ns: [ns1]\n      records:\n"
        "        www: [{type: CNAME, value: web}, {type: TXT, value: x}]\n",
        "a CNAME and other data",
    ),
    "cname-at-apex": (
        "    example.test:\n      ns: [ns1]\n      records:\n"
        "        '@': [{type: CNAME, value: web}]\n",
        "a CNAME at the domain apex",
    ),
    "cname-loop": (
        "    example.test:\n      ns: [ns1]\n      records:\n"
        "        a: [{type: CNAME, value: b}]\n        b: [{type: CNAME, value: a}]\n",
        "CNAME loop",
    ),
    "outside-domain": (
        "    example.test:\n      ns: [ns1]\n      records:\n"
        "        'www.example.org.': [{type: A, value: 192.0.2.1}]\n",
        "not inside domain example.test",
    ),
    "below-delegation": (
        "    example.test:\n      ns: [ns1]\n      records:\n"
        "        sub: [{type: NS, value: ns.sub}]\n"
        "        x.sub: [{type: TXT, value: hidden}]\n",
        "below the delegation",
    ),
    "bad-address": (
        "    example.test:\n      ns: [ns1]\n      records:\n"
        "        www: [{type: A, value: 999.1.1.1}]\n",
        "invalid A value",
    ),
    "gslb-and-static": (
        "    example.test:\n      ns: [ns1]\n      records:\n"
        "        api: [{type: A, value: 192.0.2.1}]\n      gslb:\n        api: {}\n",
        "both static A/AAAA records and a GSLB name",
    ),
    "nested-domain": (
        "    example.test:\n      ns: [ns1]\n      records:\n"
        "        x.sub: [{type: A, value: 192.0.2.1}]\n"
        "    sub.example.test:\n      ns: [ns1]\n",
        "inside domain sub.example.test",
    ),
    "wildcard-inside": (
        "    example.test:\n      ns: [ns1]\n      records:\n"
        "        'a.*.b': [{type: A, value: 192.0.2.1}]\n",
        "wildcard only as the first label",
    ),
}


@pytest.mark.parametrize(("domains", "message"), list(PROBLEMS.values()), ids=list(PROBLEMS))
def test_compile_problems(domains, message):
    with pytest.raises(ConfigErrors, match=message) as info:
        compile_zones(raw_topology(domains), source="t.yaml")
    assert all(p.file == "t.yaml" for p in info.value.problems)


def test_every_problem_is_reported_at_once():
    domains = PROBLEMS["cname-and-data"][0] + "        mail: [{type: A, value: nope}]\n"
    with pytest.raises(ConfigErrors) as info:
        compile_zones(raw_topology(domains))
    assert len(info.value.problems) == 2


def test_nested_domains_answer_with_their_own_soa():
    topo = raw_topology(
        "    example.test:\n      ns: [ns1]\n"
        "    sub.example.test:\n      ns: [ns1]\n      soa: {minimum: 10s}\n"
    )
    zd = compile_zones(topo)
    r = ask(zd, "nope.sub.example.test")
    assert r.authority[0].name == dns.name.from_text("sub.example.test")
    assert r.authority[0].ttl == 10
    r2 = ask(zd, "nope.example.test")
    assert r2.authority[0].name == dns.name.from_text("example.test")


def test_names_follow_validate_qualify():
    # 'www.example.test' in example.test is taken as written, not doubled.
    topo = raw_topology(
        "    example.test:\n      ns: [ns1.example.test]\n      records:\n"
        "        www.example.test: [{type: CNAME, value: other.test.}]\n"
    )
    zd = compile_zones(topo)
    r = ask(zd, "www.example.test")
    assert texts(r.answer) == ["www.example.test. 300 IN CNAME other.test."]
    soa = ask(zd, "example.test", "SOA")
    assert soa.answer[0][0].mname == dns.name.from_text("ns1.example.test")


def test_record_ttl_and_rrset_ttl():
    topo = raw_topology(
        "    example.test:\n      ns: [ns1]\n      ttl: 120s\n      records:\n"
        "        a: [{type: A, value: 192.0.2.1, ttl: 30s}, {type: A, value: 192.0.2.2}]\n"
        "        b: [{type: A, value: 192.0.2.3}]\n"
    )
    zd = compile_zones(topo)
    assert ask(zd, "a.example.test").answer[0].ttl == 30  # one TTL per RRset: the smallest
    assert ask(zd, "b.example.test").answer[0].ttl == 120


def test_an_answer_too_large_for_a_message_is_a_problem():
    records = ", ".join(f'{{type: TXT, value: "{i:04d}{"y" * 250}"}}' for i in range(300))
    topo = raw_topology(
        f"    example.test:\n      ns: [ns1]\n      records:\n        huge: [{records}]\n"
    )
    with pytest.raises(ConfigErrors, match="larger than"):
        compile_zones(topo)
