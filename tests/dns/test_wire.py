"""Wire details checked against a real `zonegate dns` with dnspython and dig (issue 12
items 9-13): TC answers keep AA and the rcode, a CNAME into one of our delegations gets
the referral, NOTIMP and FORMERR carry an OPT, ANY on a GSLB CNAME, QCLASS ANY."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from tests.dns.conftest import DnsProc, HealthTarget, start_dns

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.0.1"
LONG = ".".join(["a" * 60, "b" * 60, "c" * 60])
LONG2 = ".".join(["d" * 60, "e" * 60, "f" * 60])
"""Long labels: an SOA made of them (one each: nothing to compress) does not fit 512
octets with a long question."""
NS_COUNT = 16

TOPOLOGY = """\
zones:
  z1:
    vips: [127.0.0.11]
    health: {{type: tcp, address: "127.0.0.1:{z1}", interval: 200ms, timeout: 200ms}}
  z2:
    vips: [127.0.0.12]
    health: {{type: tcp, address: "127.0.0.1:{z2}", interval: 200ms, timeout: 200ms}}
dns:
  domains:
    example.test:
      ns: [ns1]
      soa: {{mname: "m.{long}.other.test.", rname: "r.{long2}.else.test."}}
      records:
        ns1: [{{type: A, value: 192.0.2.1}}]
        sub: [{ns}]
{glue}
        into: [{{type: CNAME, value: host.sub}}]
        web: [{{type: A, value: 192.0.2.10}}]
      gslb:
        api: {{preferred: [weight], answers: 2}}
        alias: {{cname: api}}
        deleg-alias: {{cname: host.sub}}
"""


def topology(z1: int, z2: int) -> str:
    ns = ", ".join(f"{{type: NS, value: nameserver-{i:02}.sub}}" for i in range(NS_COUNT))
    glue = "\n".join(
        f"        nameserver-{i:02}.sub: [{{type: A, value: 192.0.2.{100 + i}}}]"
        for i in range(NS_COUNT)
    )
    return TOPOLOGY.format(z1=z1, z2=z2, long=LONG, long2=LONG2, ns=ns, glue=glue)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[DnsProc]:
    a, b = HealthTarget(), HealthTarget()
    path: Path = tmp_path_factory.mktemp("wire") / "topo.yaml"
    path.write_text(topology(a.port, b.port))
    srv = start_dns(path)
    yield srv
    srv.proc.stop()
    a.close()
    b.close()


def udp(srv: DnsProc, q: dns.message.Message) -> dns.message.Message:
    return dns.query.udp(q, HOST, port=srv.port, timeout=2)


def tcp(srv: DnsProc, q: dns.message.Message) -> dns.message.Message:
    return dns.query.tcp(q, HOST, port=srv.port, timeout=2)


def dig(srv: DnsProc, *args: str) -> str:
    if not shutil.which("dig"):
        pytest.skip("dig is not installed (apt-get install dnsutils)")
    out = subprocess.run(
        ["dig", f"@{HOST}", "-p", str(srv.port), "+time=2", "+tries=1", *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return out.stdout + out.stderr


def texts(section: list) -> list[str]:
    return sorted(line for rrset in section for line in rrset.to_text().splitlines())


def flags_line(out: str) -> str:
    """dig's ';; flags: ...;' header line."""
    return next(line for line in out.splitlines() if line.startswith(";; flags:"))


# --- item 9: TC keeps AA and the rcode ----------------------------------------------


def test_truncated_referral_does_not_claim_authority(server):
    q = dns.message.make_query("x.sub.example.test", "A")  # no EDNS: 512 octets
    r = udp(server, q)
    assert r.flags & dns.flags.TC
    assert not r.flags & dns.flags.AA  # a referral is not authoritative
    assert r.rcode() == dns.rcode.NOERROR
    full = tcp(server, q)
    assert not full.flags & dns.flags.AA
    assert len(full.authority[0]) == NS_COUNT
    out = dig(server, "+noedns", "+ignore", "x.sub.example.test", "A")
    assert "status: NOERROR" in out
    assert flags_line(out).startswith(";; flags: qr tc rd;")


def test_truncated_nxdomain_stays_nxdomain(server):
    name = ".".join(["q" * 60] * 3) + ".example.test"
    q = dns.message.make_query(name, "A")
    r = udp(server, q)
    assert r.flags & dns.flags.TC
    assert r.flags & dns.flags.AA
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert tcp(server, q).rcode() == dns.rcode.NXDOMAIN
    out = dig(server, "+noedns", "+ignore", name, "A")
    assert "status: NXDOMAIN" in out
    assert flags_line(out).startswith(";; flags: qr aa tc rd;")


# --- item 10: a CNAME into one of our delegations -----------------------------------


@pytest.mark.parametrize(
    ("name", "ttl"), [("into.example.test", 300), ("deleg-alias.example.test", 30)]
)
def test_cname_into_a_delegation_gets_the_referral(server, name, ttl):
    """RFC 1034 §4.3.2 step 3b after 3a: the CNAME (static, or decided by the GSLB),
    then the cut's NS in authority and their glue in additional."""
    r = udp(server, dns.message.make_query(name, "A", use_edns=0))
    assert r.rcode() == dns.rcode.NOERROR
    assert r.flags & dns.flags.AA
    assert texts(r.answer) == [f"{name}. {ttl} IN CNAME host.sub.example.test."]
    assert len(r.authority) == 1
    assert r.authority[0].rdtype == dns.rdatatype.NS
    assert len(r.authority[0]) == NS_COUNT
    assert texts(r.additional) == [  # the glue
        f"nameserver-{i:02}.sub.example.test. 300 IN A 192.0.2.{100 + i}" for i in range(NS_COUNT)
    ]
    out = dig(server, "+norec", name, "A")
    assert "status: NOERROR" in out
    assert f"ANSWER: 1, AUTHORITY: {NS_COUNT}, ADDITIONAL: {NS_COUNT + 1}" in out
    assert "IN\tCNAME\thost.sub.example.test." in out
    assert "sub.example.test.\t300\tIN\tNS\tnameserver-00.sub.example.test." in out
    assert "nameserver-00.sub.example.test.\t300 IN\tA\t192.0.2.100" in out


# --- item 11: NOTIMP and FORMERR carry an OPT ---------------------------------------


def test_notimp_echoes_the_question_and_the_opt(server):
    q = dns.message.make_query("example.test", "SOA", use_edns=0)
    q.set_opcode(dns.opcode.NOTIFY)
    r = udp(server, q)
    assert r.rcode() == dns.rcode.NOTIMP
    assert r.opcode() == dns.opcode.NOTIFY
    assert [(str(x.name), x.rdtype) for x in r.question] == [("example.test.", 6)]
    assert r.edns == 0
    out = dig(server, "+opcode=notify", "+norec", "example.test", "SOA")
    assert "opcode: NOTIFY, status: NOTIMP" in out
    assert "QUERY: 1, ANSWER: 0, AUTHORITY: 0, ADDITIONAL: 1" in out
    assert "OPT PSEUDOSECTION" in out


def test_formerr_carries_an_opt(server):
    # ECS with a scope in a query (RFC 7871 §7.1.1: FORMERR; RFC 6891 §7: with an OPT).
    bad_ecs = dns.edns.GenericOption(8, bytes.fromhex("000118050a0102"))
    q = dns.message.make_query("web.example.test", "A", use_edns=0, options=[bad_ecs])
    r = udp(server, q)
    assert r.rcode() == dns.rcode.FORMERR
    assert r.edns == 0
    # Two questions and an OPT, as raw bytes: FORMERR, with the OPT.
    question = b"\x03web\x07example\x04test\x00\x00\x01\x00\x01"
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    data = struct.pack("!HHHHHH", 0x4242, 0x0100, 2, 0, 0, 1) + question * 2 + opt
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(data, (HOST, server.port))
        r = dns.message.from_wire(s.recvfrom(4096)[0])
    assert (r.id, r.rcode(), r.edns) == (0x4242, dns.rcode.FORMERR, 0)
    out = dig(server, "+ednsopt=8:000118050a0102", "web.example.test")
    assert "status: FORMERR" in out
    assert "OPT PSEUDOSECTION" in out


# --- item 12: ANY on a GSLB CNAME ---------------------------------------------------


def test_any_on_a_gslb_cname_is_the_cname_alone(server):
    for ask in (udp, tcp):
        r = ask(server, dns.message.make_query("alias.example.test", "ANY"))
        assert r.rcode() == dns.rcode.NOERROR
        assert texts(r.answer) == ["alias.example.test. 30 IN CNAME api.example.test."]
        assert r.authority == []  # no negative SOA beside a positive answer
    # A static CNAME answers the same way.
    r = udp(server, dns.message.make_query("into.example.test", "ANY"))
    assert texts(r.answer) == ["into.example.test. 300 IN CNAME host.sub.example.test."]
    assert r.authority == []
    out = dig(server, "+norec", "alias.example.test", "ANY")
    assert "ANSWER: 1, AUTHORITY: 0" in out


# --- item 13: QCLASS ANY ------------------------------------------------------------


@pytest.mark.parametrize("rdclass", [dns.rdataclass.ANY, dns.rdataclass.CH, dns.rdataclass.NONE])
def test_non_in_classes_are_refused(server, rdclass):
    """docs/dns.md: non-IN classes are REFUSED, QCLASS ANY (255) included: the data is
    IN only, and a QCLASS * answer would be IN records under another class's name."""
    r = udp(server, dns.message.make_query("web.example.test", "A", rdclass=rdclass))
    assert r.rcode() == dns.rcode.REFUSED
    assert not r.flags & dns.flags.AA
    assert r.answer == []
    assert "status: REFUSED" in dig(server, "-c", "ANY", "web.example.test", "A")
    # IN still answers.
    assert texts(udp(server, dns.message.make_query("web.example.test", "A")).answer) == [
        "web.example.test. 300 IN A 192.0.2.10"
    ]
