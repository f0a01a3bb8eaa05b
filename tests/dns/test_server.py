"""`zonegate dns` as a real process on 127.0.0.1, queried with dnspython and dig."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import httpx
import pytest

from tests.dns.conftest import DnsProc, HealthTarget, closed_port, start_dns, topology_text

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.0.1"


def _dig_available() -> bool:
    if shutil.which("dig"):
        return True
    try:
        subprocess.run(
            ["apt-get", "install", "-y", "dnsutils"],
            capture_output=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return shutil.which("dig") is not None


@pytest.fixture(scope="module")
def targets() -> Iterator[tuple[HealthTarget, HealthTarget]]:
    a, b = HealthTarget(), HealthTarget()
    yield a, b
    a.close()
    b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, targets) -> Iterator[DnsProc]:
    path = tmp_path_factory.mktemp("dns") / "topo.yaml"
    path.write_text(topology_text(z1_port=targets[0].port, z2_port=targets[1].port))
    srv = start_dns(path)
    yield srv
    srv.proc.stop()


def udp(srv: DnsProc, name: str, rdtype: str = "A", **kw) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **kw)
    return dns.query.udp(q, HOST, port=srv.port, timeout=2)


def tcp(srv: DnsProc, name: str, rdtype: str = "A", **kw) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **kw)
    return dns.query.tcp(q, HOST, port=srv.port, timeout=2)


def lines(r: dns.message.Message, section: str = "answer") -> list[str]:
    return sorted(line for rrset in getattr(r, section) for line in rrset.to_text().splitlines())


def dig(srv: DnsProc, *args: str) -> str:
    if not _dig_available():
        pytest.skip("dig is not installed and `apt-get install -y dnsutils` failed")
    out = subprocess.run(
        ["dig", f"@{HOST}", "-p", str(srv.port), "+time=2", "+tries=1", *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return out.stdout + out.stderr


# --- record types, flags, negative answers ------------------------------------------


@pytest.mark.parametrize(
    ("name", "rdtype", "expected"),
    [
        (
            "example.test",
            "NS",
            [
                "example.test. 300 IN NS ns1.example.test.",
                "example.test. 300 IN NS ns2.example.test.",
            ],
        ),
        ("web.example.test", "A", ["web.example.test. 300 IN A 192.0.2.10"]),
        ("web.example.test", "AAAA", ["web.example.test. 300 IN AAAA 2001:db8::10"]),
        ("web.example.test", "TXT", ['web.example.test. 300 IN TXT "hello world"']),
        ("www.example.test", "CNAME", ["www.example.test. 300 IN CNAME web.example.test."]),
    ],
)
def test_record_types_over_udp_and_tcp(server, name, rdtype, expected):
    for ask in (udp, tcp):
        r = ask(server, name, rdtype)
        assert r.rcode() == dns.rcode.NOERROR
        assert lines(r) == expected


def test_soa_and_flags(server):
    r = udp(server, "example.test", "SOA")
    assert r.flags & dns.flags.AA
    assert not r.flags & dns.flags.RA
    (soa,) = r.answer
    assert soa[0].mname.to_text() == "ns1.example.test."
    assert soa[0].minimum == 60


def test_nxdomain_vs_nodata(server):
    nx = udp(server, "missing.example.test")
    assert nx.rcode() == dns.rcode.NXDOMAIN
    assert nx.answer == []
    assert nx.authority[0].rdtype == dns.rdatatype.SOA
    for name, rdtype in (("web.example.test", "MX"), ("deep.example.test", "A")):
        nodata = udp(server, name, rdtype)
        assert nodata.rcode() == dns.rcode.NOERROR
        assert nodata.answer == []
        assert nodata.authority[0].rdtype == dns.rdatatype.SOA


def test_refused_outside_zones(server):
    r = udp(server, "www.example.org")
    assert r.rcode() == dns.rcode.REFUSED
    assert not r.flags & dns.flags.AA


def test_case_is_echoed(server):
    r = udp(server, "WeB.ExAmPlE.tEsT")
    assert r.question[0].name.to_text() == "WeB.ExAmPlE.tEsT."
    assert r.answer[0].name == dns.name.from_text("web.example.test")  # case-insensitive
    assert [rd.address for rd in r.answer[0]] == ["192.0.2.10"]


def test_formerr_on_a_malformed_question(server):
    bad = b"\x4a\x11\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x04te"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(bad, (HOST, server.port))
        resp, _ = s.recvfrom(4096)
        r = dns.message.from_wire(resp)
        assert r.id == 0x4A11
        assert r.rcode() == dns.rcode.FORMERR
        # A header that does not parse gets silence; the server keeps answering.
        s.sendto(b"\x01\x02\x03", (HOST, server.port))
        s.settimeout(0.3)
        with pytest.raises(TimeoutError):
            s.recvfrom(4096)
    assert udp(server, "web.example.test").answer


# --- EDNS ---------------------------------------------------------------------------


def test_edns_size_tc_then_tcp(server):
    r = udp(server, "big.example.test", "TXT", use_edns=0, payload=1232)
    assert r.flags & dns.flags.TC
    assert r.answer == []
    full = tcp(server, "big.example.test", "TXT", use_edns=0)
    assert len(full.answer[0]) == 10
    (r2, used_tcp) = dns.query.udp_with_fallback(
        dns.message.make_query("big.example.test", "TXT", use_edns=0),
        HOST,
        port=server.port,
        timeout=2,
    )
    assert used_tcp
    assert len(r2.answer[0]) == 10


def test_512_without_edns(server):
    assert udp(server, "medium.example.test", "TXT").flags & dns.flags.TC
    r = udp(server, "medium.example.test", "TXT", use_edns=0)
    assert not r.flags & dns.flags.TC
    assert r.payload == 1232  # what we advertise


def test_badvers(server):
    r = udp(server, "web.example.test", use_edns=1)
    assert r.rcode() == dns.rcode.BADVERS


def test_ecs_geo_and_scope(server):
    north = dns.edns.ECSOption("10.1.2.0", 24)
    r = udp(server, "api.example.test", use_edns=0, options=[north])
    assert lines(r) == ["api.example.test. 30 IN A 127.0.0.11"]
    (opt,) = r.options
    assert (opt.address, opt.srclen, opt.scopelen) == ("10.1.2.0", 24, 20)
    south = dns.edns.ECSOption("10.2.9.0", 24)
    r = udp(server, "api.example.test", use_edns=0, options=[south])
    assert lines(r) == ["api.example.test. 30 IN A 127.0.0.12"]


# --- dig ----------------------------------------------------------------------------


def test_dig_flags_and_answer(server):
    out = dig(server, "web.example.test", "A", "+norec")
    assert "status: NOERROR" in out
    assert "flags: qr aa;" in out  # AA set, RA clear
    assert "192.0.2.10" in out


def test_dig_nxdomain_and_refused(server):
    assert "status: NXDOMAIN" in dig(server, "nope.example.test")
    assert "status: REFUSED" in dig(server, "nope.example.org")


def test_dig_truncation_retry_over_tcp(server):
    out = dig(server, "big.example.test", "TXT", "+bufsize=1232")
    assert "Truncated, retrying in TCP mode" in out
    assert out.count("IN\tTXT") >= 10


def test_dig_badvers_and_ecs(server):
    assert "status: BADVERS" in dig(server, "web.example.test", "+edns=1", "+noednsnegotiation")
    out = dig(server, "api.example.test", "+subnet=10.1.2.0/24")
    assert "CLIENT-SUBNET: 10.1.2.0/24/20" in out
    assert "127.0.0.11" in out


# --- TCP ----------------------------------------------------------------------------


def _frame(name: str, qid: int) -> bytes:
    q = dns.message.make_query(name, "A")
    q.id = qid
    w = q.to_wire()
    return struct.pack("!H", len(w)) + w


def _read_frame(s: socket.socket) -> dns.message.Message:
    head = _recv_exact(s, 2)
    return dns.message.from_wire(_recv_exact(s, struct.unpack("!H", head)[0]))


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def test_tcp_pipelining(server):
    with socket.create_connection((HOST, server.port), timeout=2) as s:
        s.sendall(
            _frame("web.example.test", 1)
            + _frame("mail.example.test", 2)
            + _frame("nope.example.test", 3)
        )
        got = [_read_frame(s) for _ in range(3)]
    assert [r.id for r in got] == [1, 2, 3]
    assert [r.rcode() for r in got] == [0, 0, dns.rcode.NXDOMAIN]


# --- admin --------------------------------------------------------------------------


def test_admin_status_metrics_explain(server):
    udp(server, "web.example.test")
    status = httpx.get(f"{server.admin_url}/status", timeout=2).json()
    assert status["zones"]["z1"]["up"] is True
    assert status["zones"]["z1"]["known"] is True
    assert status["domains"] == ["example.test"]
    assert status["zones_without_health_check"] == []
    metrics = httpx.get(f"{server.admin_url}/metrics", timeout=2).text
    assert 'zonegate_dns_responses_total{rcode="NOERROR",type="A"}' in metrics
    assert 'zonegate_zone_up{zone="z1"} 1.0' in metrics
    text = httpx.get(
        f"{server.admin_url}/explain",
        params={"name": "api.example.test", "client": "10.2.0.0/24"},
        timeout=2,
    ).text
    assert "preferred:topology" in text
    assert "127.0.0.12" in text
    bad = httpx.get(f"{server.admin_url}/explain", params={"name": "x", "type": "??"}, timeout=2)
    assert bad.status_code == 400


def test_repeated_queries_are_answered_from_kept_answers(server):
    """The second identical UDP query is answered by UdpResponder from DnsService.answers: the
    same answer under its own ID and question case, and counted in the metrics."""

    def count() -> float:
        text = httpx.get(f"{server.admin_url}/metrics", timeout=2).text
        for line in text.splitlines():
            if line.startswith('zonegate_dns_responses_total{rcode="NOERROR",type="MX"}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = count()
    answers = [udp(server, "Example.TEST", "MX") for _ in range(3)]
    assert all(lines(r) == lines(answers[0]) for r in answers)
    assert all(r.question[0].name.to_text() == "Example.TEST." for r in answers)
    # (names in the answer point at the question: they keep its case)
    assert [x.lower() for x in lines(answers[0])] == [
        "example.test. 300 in mx 10 mail.example.test."
    ]
    assert count() == before + 3


def test_explain_command(server, targets):

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "zonegate.dns.server",
            "explain",
            str(server.path),
            "api.example.test",
            "--client",
            "10.1.0.0/16",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
        env={**os.environ, "ZONEGATE_BUG_RAISE": "0"},
    )
    assert out.returncode == 0, out.stderr
    assert "z1 up" in out.stdout
    assert "answer: A 127.0.0.11" in out.stdout


# --- separate servers: health, RRL, TCP limits, reload ------------------------------


def test_health_known_before_the_first_answer_and_followed(tmp_path):
    z1, z2 = HealthTarget(), HealthTarget()
    path = tmp_path / "topo.yaml"
    path.write_text(topology_text(z1_port=z1.port, z2_port=closed_port()))
    srv = start_dns(path)
    try:
        # No client subnet and no region: alternate weight over the healthy zones only.
        r = udp(srv, "api.example.test")
        assert lines(r) == ["api.example.test. 30 IN A 127.0.0.11"]
        z1.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            r = udp(
                srv, "api.example.test", use_edns=0, options=[dns.edns.ECSOption("10.1.0.0", 16)]
            )
            if len(r.answer[0]) == 2:  # every zone down: fallback all
                break
            time.sleep(0.1)
        assert sorted(rd.address for rd in r.answer[0]) == ["127.0.0.11", "127.0.0.12"]
    finally:
        srv.proc.stop()
        z1.close()
        z2.close()


def test_rrl_with_slip(tmp_path, targets):
    path = tmp_path / "topo.yaml"
    path.write_text(
        topology_text(z1_port=targets[0].port, z2_port=targets[1].port, rrl=5, rrl_slip=2)
    )
    srv = start_dns(path)
    try:
        q = dns.message.make_query("web.example.test", "A")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            for _ in range(40):
                s.sendto(q.to_wire(), (HOST, srv.port))
            answers = truncated = 0
            try:
                while True:
                    r = dns.message.from_wire(s.recvfrom(4096)[0])
                    if r.flags & dns.flags.TC:
                        truncated += 1
                    else:
                        answers += 1
            except TimeoutError:
                pass
        assert 5 <= answers <= 8  # the burst, plus what refilled meanwhile
        assert truncated >= 10  # every second limited response slips
        assert answers + truncated < 40  # the rest were dropped
        metrics = httpx.get(f"{srv.admin_url}/metrics", timeout=2).text
        assert 'zonegate_dns_rrl_total{action="drop"}' in metrics
        # TCP is not rate limited.
        assert tcp(srv, "web.example.test").answer
    finally:
        srv.proc.stop()


def test_tcp_idle_timeout_and_connection_limit(tmp_path, targets):
    path = tmp_path / "topo.yaml"
    path.write_text(
        topology_text(z1_port=targets[0].port, z2_port=targets[1].port, tcp_max=2, tcp_idle="500ms")
    )
    srv = start_dns(path)
    try:
        a = socket.create_connection((HOST, srv.port), timeout=3)
        b = socket.create_connection((HOST, srv.port), timeout=3)
        a.sendall(_frame("web.example.test", 7))
        assert _read_frame(a).id == 7
        b.sendall(_frame("web.example.test", 8))
        assert _read_frame(b).id == 8
        c = socket.create_connection((HOST, srv.port), timeout=3)
        assert c.recv(10) == b""  # over the limit: closed at once
        c.close()
        started = time.monotonic()
        assert a.recv(10) == b""  # idle: closed by the server
        assert 0.2 < time.monotonic() - started < 2.5
        assert b.recv(10) == b""
        a.close()
        b.close()
        # Slots are free again.
        assert tcp(srv, "web.example.test").answer
        metrics = httpx.get(f"{srv.admin_url}/metrics", timeout=2).text
        assert 'zonegate_dns_tcp_events_total{event="refused_limit"} 1.0' in metrics
        assert 'zonegate_dns_tcp_events_total{event="idle_closed"} 2.0' in metrics
    finally:
        srv.proc.stop()


def test_reload_keeps_the_last_good_data(tmp_path, targets):
    path = tmp_path / "topo.yaml"
    good = topology_text(z1_port=targets[0].port, z2_port=targets[1].port)
    path.write_text(good)
    srv = start_dns(path)
    try:
        assert lines(udp(srv, "web.example.test")) == ["web.example.test. 300 IN A 192.0.2.10"]
        # A YAML error, then a file that loads but does not compile (CNAME loop).
        for broken in ("zones: [\n", good.replace("value: web}", "value: www}")):
            path.write_text(broken)
            srv.proc.signal(signal.SIGHUP)
            time.sleep(0.5)
            assert lines(udp(srv, "web.example.test")) == ["web.example.test. 300 IN A 192.0.2.10"]
        status = httpx.get(f"{srv.admin_url}/status", timeout=2).json()
        assert status["reloads"]["refused"] == 2
        assert status["version"] == 1
        path.write_text(
            topology_text(z1_port=targets[0].port, z2_port=targets[1].port, web_ip="192.0.2.77")
        )
        resp = httpx.post(f"{srv.admin_url}/reload", timeout=5)
        assert resp.status_code == 200, resp.text
        assert lines(udp(srv, "web.example.test")) == ["web.example.test. 300 IN A 192.0.2.77"]
        soa1 = json.loads(httpx.get(f"{srv.admin_url}/status", timeout=2).text)
        assert soa1["version"] == 2
        assert "reload refused" in srv.proc.stderr()
    finally:
        srv.proc.stop()


def test_dnsperf_qps(server):
    """A quick bounded load of static names; prints the rate (not a benchmark)."""
    if not shutil.which("dnsperf"):
        pytest.skip("dnsperf is not installed (apt-get install -y dnsperf)")
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("web.example.test A\nwww.example.test A\nexample.test SOA\nns2.example.test AAAA\n")
    try:
        out = subprocess.run(
            ["dnsperf", "-s", HOST, "-p", str(server.port), "-d", f.name, "-l", "2", "-c", "2"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        ).stdout
    finally:
        os.unlink(f.name)
    qps = float(out.split("Queries per second:")[1].split()[0])
    print(f"\nstatic UDP qps: {qps:.0f}")
    assert qps > 5000


def test_a_burst_larger_than_one_batch_is_answered_in_full(server):
    """UdpResponder answers at most UDP_BATCH datagrams per readiness, then yields to
    the loop: the rest of a burst (static, GSLB and junk mixed) is still answered, each
    under its own ID, and the junk is answered FORMERR or dropped without harm."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.settimeout(2)
    sent: dict[int, str] = {}
    names = ["web.example.test", "api.example.test", "nope.example.test", "example.test"]
    for i in range(300):
        name = names[i % len(names)]
        q = dns.message.make_query(name, "A", id=i)
        sock.sendto(q.to_wire(), (HOST, server.port))
        sent[i] = name
        if i % 50 == 0:
            sock.sendto(b"\x00", (HOST, server.port))  # no header: dropped
    got: dict[int, dns.message.Message] = {}
    while len(got) < len(sent):
        data = sock.recv(4096)
        r = dns.message.from_wire(data)
        got[r.id] = r
    sock.close()
    assert set(got) == set(sent)
    for i, r in got.items():
        assert r.question[0].name.to_text() == sent[i] + "."
    assert udp(server, "web.example.test").rcode() == dns.rcode.NOERROR


def test_serves_over_ipv6(tmp_path, targets):
    """`--listen [::1]:0`: UDP (the reader gets 4-tuple peer addresses) and TCP."""
    path = tmp_path / "topo.yaml"
    path.write_text(topology_text(z1_port=targets[0].port, z2_port=targets[1].port))
    srv = start_dns(path, listen="[::1]:0")
    try:
        assert srv.proc.match is not None
        assert srv.proc.match["host"] == "::1"
        q = dns.message.make_query("web.example.test", "A")
        for _ in range(2):  # the second is answered from the kept answers
            r = dns.query.udp(q, "::1", port=srv.port, timeout=2)
            assert lines(r) == ["web.example.test. 300 IN A 192.0.2.10"]
        r = dns.query.tcp(q, "::1", port=srv.port, timeout=2)
        assert lines(r) == ["web.example.test. 300 IN A 192.0.2.10"]
        gslb = dns.query.udp(
            dns.message.make_query("api.example.test", "A"), "::1", port=srv.port, timeout=2
        )
        assert gslb.rcode() == dns.rcode.NOERROR
        assert gslb.answer
    finally:
        srv.proc.stop()
