"""dns.server.DnsService in process: bytes in, bytes out, with fake zone states."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.dns.conftest import topology_text
from tests.dns.test_codec import mutated_queries, valid_queries
from zonegate.dns import codec
from zonegate.dns.model import ZoneState
from zonegate.dns.server import (
    DROP,
    SEND,
    SLIP,
    DnsService,
    ResponseRateLimiter,
    client_network,
    compile_file,
    parse_client,
    parse_listen,
)

UP = ZoneState(up=True, healthy=1, total=1)
DOWN = ZoneState(up=False, reason="down: test")


def make_service(tmp_path, health=None, **topo) -> DnsService:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "topo.yaml"
    path.write_text(topology_text(z1_port=1, z2_port=2, **topo))
    svc = DnsService(compile_file(str(path), 1, 7), health or {"z1": UP, "z2": UP})
    svc.now = 100.0
    return svc


@pytest.fixture
def svc(tmp_path) -> DnsService:
    return make_service(tmp_path)


def ask(svc, name, rdtype="A", *, ip="192.0.2.200", udp=True, **kw) -> dns.message.Message | None:
    q = dns.message.make_query(name, rdtype, **kw)
    resp = svc.respond(q.to_wire(), ip, udp)
    if resp is None:
        return None
    r = dns.message.from_wire(resp)
    assert r.id == q.id
    return r


def ecs(address: str, prefix: int) -> dict:
    return {"use_edns": 0, "options": [dns.edns.ECSOption(address, prefix)]}


def addresses(r) -> list[str]:
    return [rd.address for rrset in r.answer for rd in rrset if hasattr(rd, "address")]


# --- static -------------------------------------------------------------------------


def test_static_answer_flags(svc):
    r = ask(svc, "web.example.test")
    assert r.rcode() == dns.rcode.NOERROR
    assert r.flags & dns.flags.AA
    assert r.flags & dns.flags.RD  # copied
    assert not r.flags & dns.flags.RA
    assert addresses(r) == ["192.0.2.10"]


def test_rd_clear_is_copied(svc):
    q = dns.message.make_query("web.example.test", "A")
    q.flags &= ~dns.flags.RD
    r = dns.message.from_wire(svc.respond(q.to_wire(), "192.0.2.1", True))
    assert not r.flags & dns.flags.RD


def test_refused_outside_zones(svc):
    r = ask(svc, "www.example.org")
    assert r.rcode() == dns.rcode.REFUSED
    assert not r.flags & dns.flags.AA


def test_refused_for_other_classes_and_transfers(svc):
    for rdclass in (dns.rdataclass.CH, dns.rdataclass.ANY):  # ANY: issue 12 item 13
        q = dns.message.make_query("example.test", "A", rdclass=rdclass)
        r = dns.message.from_wire(svc.respond(q.to_wire(), "192.0.2.1", True))
        assert r.rcode() == dns.rcode.REFUSED
    assert ask(svc, "example.test", "AXFR", udp=False).rcode() == dns.rcode.REFUSED


def test_badvers(svc):
    r = ask(svc, "web.example.test", use_edns=1)
    assert r.rcode() == dns.rcode.BADVERS
    assert r.edns == 0


def test_notimp_for_other_opcodes(svc):
    q = dns.message.make_query("example.test", "SOA")
    q.set_opcode(dns.opcode.NOTIFY)
    r = dns.message.from_wire(svc.respond(q.to_wire(), "192.0.2.1", True))
    assert r.rcode() == dns.rcode.NOTIMP


def test_formerr_and_drop(svc):
    bad = b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05abc"
    r = dns.message.from_wire(svc.respond(bad, "192.0.2.1", True))
    assert r.id == 0xBEEF
    assert r.rcode() == dns.rcode.FORMERR
    assert svc.respond(b"\x00\x01", "192.0.2.1", True) is None
    assert svc.dropped == 1


def test_tc_over_udp_then_full_over_tcp(svc):
    r = ask(svc, "big.example.test", "TXT", use_edns=0)
    assert r.flags & dns.flags.TC
    assert r.answer == []
    full = ask(svc, "big.example.test", "TXT", udp=False, use_edns=0)
    assert not full.flags & dns.flags.TC
    assert len(full.answer[0]) == 10
    assert svc.truncated == 1


def test_512_without_edns_larger_with_it(svc):
    assert ask(svc, "medium.example.test", "TXT").flags & dns.flags.TC
    r = ask(svc, "medium.example.test", "TXT", use_edns=0, payload=1232)
    assert not r.flags & dns.flags.TC
    assert len(r.answer[0]) == 3
    # A client that takes less than the answer gets TC even with EDNS.
    assert ask(svc, "medium.example.test", "TXT", use_edns=0, payload=512).flags & dns.flags.TC


def test_static_answer_echoes_ecs_with_scope_zero(svc):
    r = ask(svc, "web.example.test", **ecs("10.1.2.0", 24))
    (option,) = r.options
    assert (option.srclen, option.scopelen) == (24, 0)  # RFC 7871 §7.2.1: not tailored


def test_counts_by_rcode_and_type(svc):
    ask(svc, "web.example.test")
    ask(svc, "web.example.test")
    ask(svc, "nope.example.test", "TXT")
    assert svc.queries[codec.NOERROR << 17 | codec.A] == 2
    assert svc.queries[codec.NXDOMAIN << 17 | codec.TXT] == 1


# --- GSLB ---------------------------------------------------------------------------


def test_gslb_by_ecs_region_with_scope(svc):
    r = ask(svc, "api.example.test", **ecs("10.1.2.0", 24))
    assert addresses(r) == ["127.0.0.11"]
    assert r.answer[0].ttl == 30
    (option,) = r.options
    assert (option.address, option.srclen, option.scopelen) == ("10.1.2.0", 24, 20)
    r2 = ask(svc, "api.example.test", **ecs("10.2.7.0", 24))
    assert addresses(r2) == ["127.0.0.12"]


def test_gslb_ipv6_scope(svc):
    r = ask(svc, "api.example.test", "AAAA", **ecs("2001:db8:2::", 48))
    assert addresses(r) == ["fd00::12"]
    assert r.options[0].scopelen == 56


def test_gslb_without_ecs_uses_the_resolver_address(svc):
    r = ask(svc, "api.example.test", ip="10.2.0.9", use_edns=0)
    assert addresses(r) == ["127.0.0.12"]
    assert not r.options


def test_ecs_source_zero_gets_scope_zero(svc):
    r = ask(svc, "api.example.test", ip="10.1.0.9", **ecs("0.0.0.0", 0))
    assert addresses(r) == ["127.0.0.11"]  # decided on the resolver's address
    assert r.options[0].scopelen == 0


def test_health_flip_is_answered_at_once(svc):
    north = ecs("10.1.2.0", 24)
    assert addresses(ask(svc, "api.example.test", **north)) == ["127.0.0.11"]
    svc.health_changed({"z1": DOWN, "z2": UP})
    assert addresses(ask(svc, "api.example.test", **north)) == ["127.0.0.12"]


def test_plans_are_per_region_and_zone_states(svc):
    north, north2 = ecs("10.1.2.0", 24), ecs("10.1.9.0", 24)
    ask(svc, "api.example.test", **north)
    ask(svc, "api.example.test", **north2)  # another subnet of the same region
    assert (svc.cache_misses, svc.cache_hits) == (1, 1)
    ask(svc, "api.example.test", **ecs("10.2.0.0", 16))  # another region
    assert svc.cache_misses == 2
    # the same states again (a new mapping, equal): the plans stay
    svc.health = {"z1": UP, "z2": UP}
    ask(svc, "api.example.test", **north)
    assert svc.cache_misses == 2
    # any change of a zone state (here only the session count) drops them
    svc.health = {"z1": ZoneState(up=True, healthy=1, total=1, sessions=5), "z2": UP}
    ask(svc, "api.example.test", **north)
    assert svc.cache_misses == 3


def test_every_query_is_decided(tmp_path):
    """No per-client answer cache: weighted picks and round robin move per query."""
    svc = make_service(tmp_path)
    seen = {tuple(addresses(ask(svc, "api.example.test", ip="9.9.9.9"))) for _ in range(200)}
    assert seen == {("127.0.0.11",), ("127.0.0.12",)}  # alternate: weight, no region


def test_planned_answers_match_the_explained_ones(tmp_path):
    """The hot path (plans) and gslb_answer (policy.decide, explain) agree, draw for draw."""
    import random

    from zonegate.dns.model import ClientInfo
    from zonegate.dns.policy import SelectionState

    svc = make_service(tmp_path)
    marker = svc.names[codec.text_to_wire("api.example.test")][codec.A]
    for i in range(50):
        ip = f"10.{1 + i % 3}.0.{i}"
        svc.rng = random.Random(i)
        fast = ask(svc, "api.example.test", ip=ip, use_edns=False)
        t, _ = svc.gslb_answer(
            codec.text_to_wire("api.example.test"),
            codec.A,
            marker,
            ClientInfo(ip),
            state=SelectionState(),
            rng=random.Random(i),
        )
        slow = dns.message.from_wire(
            codec.render(
                dns.message.make_query("api.example.test", "A").to_wire(),
                codec.parse(dns.message.make_query("api.example.test", "A").to_wire()),
                t,
                0,
            )
        )
        assert addresses(fast) == addresses(slow)


def test_static_udp_answers_are_kept_by_query_bytes(svc):
    q = dns.message.make_query("web.example.test", "A", use_edns=False)
    wire = q.to_wire()
    first = svc.respond(wire, "192.0.2.1", True)
    assert svc.answers[wire[2:]][0] == first[2:]
    svc.respond(dns.message.make_query("api.example.test", "A").to_wire(), "192.0.2.1", True)
    assert len(svc.answers) == 1  # GSLB answers depend on the client: never kept
    svc.respond(wire, "192.0.2.1", False)
    assert len(svc.answers) == 1  # nor TCP ones


def test_all_zones_down_falls_back(tmp_path):
    svc = make_service(tmp_path, {"z1": DOWN, "z2": DOWN})
    r = ask(svc, "api.example.test")
    assert sorted(addresses(r)) == ["127.0.0.11", "127.0.0.12"]


def test_cname_to_gslb(svc):
    r = ask(svc, "ALIAS.example.test", **ecs("10.2.0.0", 16))
    assert r.answer[0].to_text() == "ALIAS.example.test. 300 IN CNAME api.example.test."
    assert addresses(r) == ["127.0.0.12"]
    assert r.answer[1].name.to_text() == "api.example.test."
    assert r.options[0].scopelen == 20


def test_gslb_nodata_for_other_types(svc):
    r = ask(svc, "api.example.test", "MX")
    assert r.rcode() == dns.rcode.NOERROR
    assert r.answer == []


def test_explain(svc):
    text = svc.explain("api.example.test", "10.1.2.0/24", "A")
    assert "preferred:topology" in text
    assert "127.0.0.11" in text
    assert "ECS scope /20" in text
    assert "response:" in text
    assert "static data" in svc.explain("web.example.test", "192.0.2.1", "A")
    assert "REFUSED" in svc.explain("x.example.org", "192.0.2.1")
    assert "CNAME chain to the GSLB name api.example.test" in svc.explain(
        "alias.example.test", "10.2.0.1"
    )
    with pytest.raises(ValueError, match="unknown type"):
        svc.explain("api.example.test", "10.1.2.3", "BOGUS")
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6"):
        svc.explain("api.example.test", "not-an-ip")


def test_explain_changes_no_selection_state(svc):
    before = (dict(svc.state.rotations), dict(svc.state.selected))
    svc.explain("api.example.test", "192.0.2.9")
    assert (dict(svc.state.rotations), dict(svc.state.selected)) == before


# --- rate limiting ------------------------------------------------------------------


def test_rate_limiter_slip_pattern():
    rrl = ResponseRateLimiter(rate=3, slip=2)
    verdicts = [rrl.check("k", 0.0) for _ in range(9)]
    assert verdicts == [SEND, SEND, SEND, DROP, SLIP, DROP, SLIP, DROP, SLIP]
    assert rrl.check("other", 0.0) == SEND  # per key
    assert rrl.check("k", 1.0) == SEND  # refilled: rate per second
    assert rrl.check("k", 1.0) == SEND


@pytest.mark.parametrize(("slip", "expected"), [(0, DROP), (1, SLIP)])
def test_rate_limiter_slip_zero_and_one(slip, expected):
    rrl = ResponseRateLimiter(rate=1, slip=slip)
    rrl.check("k", 0.0)
    assert {rrl.check("k", 0.0) for _ in range(5)} == {expected}


def test_rate_limiter_prunes_idle_buckets():
    rrl = ResponseRateLimiter(rate=1, slip=0, max_entries=10)
    for i in range(10):
        rrl.check(i, 0.0)
    rrl.check("new", 5.0)
    assert len(rrl.buckets) == 1


def test_rrl_in_service(tmp_path):
    svc = make_service(tmp_path, rrl=5, rrl_slip=2)
    results = [ask(svc, "web.example.test") for _ in range(15)]
    sent = [r for r in results if r is not None and not r.flags & dns.flags.TC]
    slipped = [r for r in results if r is not None and r.flags & dns.flags.TC]
    assert len(sent) == 5
    assert len(slipped) == 5
    assert svc.rrl_dropped == 5
    # Another /24 is not limited; TCP is never limited.
    assert ask(svc, "web.example.test", ip="192.0.3.1").answer
    assert ask(svc, "web.example.test", udp=False).answer


def test_client_network():
    assert client_network("10.1.2.3") == client_network("10.1.2.200") == "10.1.2"
    assert client_network("2001:db8:0:1::1") == client_network("2001:db8:0:ff::2")
    assert client_network("2001:db8:0:100::1") != client_network("2001:db8:0:1::1")


def test_parse_helpers():
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:53") == ("::1", 53)
    with pytest.raises(ValueError, match="expected 'host:port'"):
        parse_listen("127.0.0.1")
    assert parse_client("10.1.2.3") == ("10.1.2.3", None)
    ip, net = parse_client("10.1.2.3/24")
    assert (ip, str(net)) == ("10.1.2.0", "10.1.2.0/24")


# --- fuzz: the whole service --------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_svc(tmp_path_factory) -> DnsService:
    return make_service(tmp_path_factory.mktemp("fuzz"), rrl=0)


def _check(svc: DnsService, data: bytes) -> None:
    for udp in (True, False):
        resp = svc.respond(data, "10.1.2.3", udp)
        if resp is None:
            continue
        r = dns.message.from_wire(resp)
        assert r.id == int.from_bytes(data[:2], "big")
        assert r.flags & dns.flags.QR
        if udp:
            assert len(resp) <= codec.EDNS_UDP_SIZE


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_service_random(fuzz_svc, data):
    _check(fuzz_svc, data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(valid_queries(), mutated_queries()))
def test_fuzz_service_queries(fuzz_svc, data):
    _check(fuzz_svc, data)


# --- the fast path answers exactly as the full path ---------------------------------


@pytest.fixture(scope="module")
def fast_and_full(tmp_path_factory) -> tuple[DnsService, DnsService]:
    base = tmp_path_factory.mktemp("paths")
    fast = make_service(base / "fast", rrl=0)
    full = make_service(base / "full", rrl=1_000_000_000)  # RRL on takes every query through parse
    fast.rng.seed(7)  # GSLB names take the same path in both: same draws
    full.rng.seed(7)
    return fast, full


_STATIC_NAMES = [
    "example.test",
    "web.example.test",
    "www.example.test",
    "big.example.test",
    "medium.example.test",
    "deep.example.test",
    "alias.example.test",
    "api.example.test",
    "x.wild.example.test",
    "sub.example.test",
    "nope.example.test",
]


@st.composite
def static_queries(draw) -> bytes:
    name = draw(st.sampled_from(_STATIC_NAMES))
    name = "".join(c.upper() if draw(st.booleans()) else c for c in name)
    rdtype = draw(st.sampled_from(["A", "AAAA", "TXT", "SOA", "NS", "MX", "CNAME", "ANY", "SRV"]))
    edns = draw(st.sampled_from([None, 0]))
    kw = {}
    if edns is not None:
        kw = {
            "payload": draw(st.sampled_from([0, 512, 1232, 4096])),
            "want_dnssec": draw(st.booleans()),
        }
    q = dns.message.make_query(name, rdtype, use_edns=edns, **kw)
    if draw(st.booleans()):
        q.flags &= ~dns.flags.RD
    if draw(st.booleans()):
        q.flags |= dns.flags.CD
    return q.to_wire()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(static_queries())
def test_fast_path_is_the_full_path(fast_and_full, data):
    fast, full = fast_and_full
    for udp in (True, False):
        assert fast.respond(data, "10.9.9.9", udp) == full.respond(data, "10.9.9.9", udp)


def test_fast_path_is_taken(tmp_path):
    svc = make_service(tmp_path)
    data = dns.message.make_query("web.example.test", "A", use_edns=0).to_wire()

    def boom(*args):
        raise AssertionError("parsed")

    import zonegate.dns.server as server_module

    saved = server_module.parse
    server_module.parse = boom
    try:
        assert dns.message.from_wire(svc.respond(data, "10.0.0.1", True)).answer
    finally:
        server_module.parse = saved
