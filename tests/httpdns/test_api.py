"""`zonegate httpdns` as a real process: answers, split, signatures, limits, proxies."""

from __future__ import annotations

import json
import signal
import socket
import sys
import time
from collections.abc import Iterator
from hashlib import sha256
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.dns.test_zonehealth import FakeLb
from tests.peers.processes import Proc, start_process
from zonegate.balance.shard import zone_for
from zonegate.httpdns.api import RateLimiter, client_address
from zonegate.httpdns.sign import sign
from zonegate.topology.schema import SplitMap

READY = r"zonegate httpdns ready: listening on 127\.0\.0\.1:(?P<port>\d+)"
SECRET = "0123456789abcdef"
TRUSTED = "127.0.0.2"
Z1_V4, Z1_V6, Z2_V4 = "10.0.1.1", "2001:db8::1", "10.0.2.1"


def topology(lb1: FakeLb, lb2: FakeLb, **dns: Any) -> dict[str, Any]:
    health = {"interval": "100ms", "timeout": "300ms"}
    return {
        "zones": {
            "z1": {"lb_admin": lb1.address, "vips": [Z1_V4, Z1_V6], "health": health},
            "z2": {"lb_admin": lb2.address, "vips": [Z2_V4], "health": health},
        },
        "dns": {
            "trusted_proxies": [f"{TRUSTED}/32"],
            "accounts": {"app1": {"secret": SECRET}},
            "domains": {
                "example.test": {
                    "ns": ["ns1.example.test"],
                    "records": {
                        "ns1": [{"type": "A", "value": "10.9.9.53"}],
                        "www": [{"type": "A", "value": "10.9.9.9", "ttl": "60s"}],
                    },
                    "gslb": {
                        "api": {"zones": ["z1", "z2"], "preferred": ["weight"]},
                        "api-z1": {
                            "zones": ["z1", "z2"],
                            "preferred": ["admin"],
                            "admin_order": ["z1", "z2"],
                        },
                        "api-z2": {
                            "zones": ["z1", "z2"],
                            "preferred": ["admin"],
                            "admin_order": ["z2", "z1"],
                        },
                        "alias": {"cname": "api-z2"},
                    },
                }
            },
            **dns,
        },
        "split": {
            "api.example.test": {
                "sharding": 100,
                "zones": {
                    "z1": {"lower": 0, "upper": 50, "domain": "api-z1.example.test"},
                    "z2": {"lower": 50, "upper": 100, "domain": "api-z2.example.test"},
                },
            }
        },
    }


class Httpdns:
    """A running `zonegate httpdns` and clients bound to chosen source addresses."""

    def __init__(self, proc: Proc, path: Path) -> None:
        self.proc = proc
        self.path = path
        assert proc.match is not None
        self.port = int(proc.match["port"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.clients: dict[str, httpx.Client] = {}

    def client(self, source: str = "127.0.0.1") -> httpx.Client:
        c = self.clients.get(source)
        if c is None:
            transport = httpx.HTTPTransport(local_address=source)
            c = self.clients[source] = httpx.Client(
                base_url=self.url, transport=transport, trust_env=False, timeout=5.0
            )
        return c

    def get(self, path: str, source: str = "127.0.0.1", **kw: Any) -> httpx.Response:
        return self.client(source).get(path, **kw)

    def d(self, source: str = "127.0.0.1", **params: Any) -> httpx.Response:
        return self.get("/d", source, params=params)

    def status(self) -> dict[str, Any]:
        return self.get("/status").json()

    def wait_zone(self, zone: str, up: bool, timeout: float = 5.0) -> float:
        t0 = time.monotonic()
        while self.status()["zones"][zone]["up"] != up:
            assert time.monotonic() - t0 < timeout, f"zone {zone} not {'up' if up else 'down'}"
            time.sleep(0.01)
        return time.monotonic() - t0

    def close(self) -> None:
        for c in self.clients.values():
            c.close()
        self.proc.stop()
        bad = [
            ln for ln in self.proc.stderr().splitlines() if "Traceback" in ln or "internal" in ln
        ]
        assert not bad, self.proc.stderr()[-4000:]


def start_httpdns(path: Path, doc: dict[str, Any]) -> Httpdns:
    path.write_text(json.dumps(doc, indent=1))
    argv = [sys.executable, "-m", "zonegate.httpdns.api", str(path), "--listen", "127.0.0.1:0"]
    proc = start_process(argv, READY, timeout=15.0, env={"ZONEGATE_BUG_RAISE": "0"})
    return Httpdns(proc, path)


@pytest.fixture(scope="module")
def lbs() -> Iterator[tuple[FakeLb, FakeLb]]:
    lb1 = FakeLb("z1", web={"healthy": 3, "total": 3, "inflight": 2, "capacity": 100})
    lb2 = FakeLb("z2", web={"healthy": 2, "total": 2})
    yield lb1, lb2
    lb1.close()
    lb2.close()


@pytest.fixture(scope="module")
def server(lbs, tmp_path_factory) -> Iterator[Httpdns]:
    h = start_httpdns(tmp_path_factory.mktemp("open") / "topo.yaml", topology(*lbs))
    yield h
    h.close()


@pytest.fixture(scope="module")
def strict(lbs, tmp_path_factory) -> Iterator[Httpdns]:
    doc = topology(*lbs, require_signature=True, rate_limit=10)
    h = start_httpdns(tmp_path_factory.mktemp("strict") / "topo.yaml", doc)
    yield h
    h.close()


def signed(host: str, expiry: int | None = None, account: str = "app1", secret: str = SECRET):
    expiry = int(time.time()) + 60 if expiry is None else expiry
    return {
        "host": host,
        "account": account,
        "expiry": str(expiry),
        "sig": sign(secret, host, expiry, account),
    }


# --- answers ---------------------------------------------------------------------------


def test_ready_line_says_zone_health_is_known(server):
    assert "zones z1 up, z2 up" in server.proc.stdout()


def test_answer_a(server):
    r = server.d(host="api.example.test")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-zonegate-version"] == "1"
    doc = r.json()
    assert doc["client_ip"] == "127.0.0.1"
    assert doc["client_ip_source"] == "socket"
    [a] = doc["answers"]
    assert a["host"] == "api.example.test"
    assert a["type"] == "A"
    assert a["ttl"] == 30
    assert a["zone"] in ("z1", "z2")
    assert a["ips"] == [{"z1": Z1_V4, "z2": Z2_V4}[a["zone"]]]
    assert "reason" not in a


def test_answer_aaaa_only_zones_with_v6(server):
    [a] = server.d(host="api.example.test", type="aaaa").json()["answers"]
    assert (a["type"], a["ips"], a["zone"]) == ("AAAA", [Z1_V6], "z1")


def test_batch_static_unknown_and_cname(server):
    doc = server.d(host="API.example.test.,www.example.test,nope.example.test,alias.example.test")
    answers = doc.json()["answers"]
    assert [a["host"] for a in answers] == [
        "api.example.test",
        "www.example.test",
        "nope.example.test",
        "alias.example.test",
    ]
    assert answers[1]["ips"] == ["10.9.9.9"]
    assert answers[1]["ttl"] == 60
    assert answers[2] == {
        "host": "nope.example.test",
        "type": "A",
        "ips": [],
        "ttl": 0,
        "zone": None,
        "zones": [],
        "reason": "unknown name",
    }
    assert answers[3]["cname"] == ["api-z2.example.test"]
    assert answers[3]["ips"] == [Z2_V4]


def independent_zone(device_id: str) -> str:
    shard = int.from_bytes(sha256(device_id.encode()).digest()[:8], "big") % 100
    return "z1" if shard < 50 else "z2"


def test_split_by_device_id_matches_the_sdk_hash(server):
    split = SplitMap.model_validate(
        {
            "sharding": 100,
            "zones": {
                "z1": {"lower": 0, "upper": 50, "domain": "api-z1.example.test"},
                "z2": {"lower": 50, "upper": 100, "domain": "api-z2.example.test"},
            },
        }
    )
    seen = set()
    for i in range(40):
        device = f"device-{i}"
        [a] = server.d(host="api.example.test", device_id=device).json()["answers"]
        found = zone_for(device, split)
        assert found is not None
        zone = found[0]
        assert zone == independent_zone(device)
        assert a["split"]["zone"] == zone
        assert a["split"]["domain"] == f"api-{zone}.example.test"
        assert a["zone"] == zone
        assert a["ips"] == [{"z1": Z1_V4, "z2": Z2_V4}[zone]]
        seen.add(zone)
    assert seen == {"z1", "z2"}
    # a host without a split map ignores device_id
    [a] = server.d(host="www.example.test", device_id="device-1").json()["answers"]
    assert "split" not in a


def test_split_zone_down_fails_over_and_all_down_falls_back(server, lbs):
    lb1, lb2 = lbs
    device = next(f"d{i}" for i in range(100) if independent_zone(f"d{i}") == "z1")
    try:
        lb1.set_pool("web", healthy=0)
        took = server.wait_zone("z1", up=False)
        [a] = server.d(host="api.example.test", device_id=device).json()["answers"]
        assert a["split"]["zone"] == "z1"  # the split map still says z1 ...
        assert a["zone"] == "z2"  # ... but the GSLB answers what is up
        assert a["ips"] == [Z2_V4]
        assert a["ttl"] == 5  # changing_ttl while z1 is changing
        lb2.set_pool("web", healthy=0)
        server.wait_zone("z2", up=False)
        [a] = server.d(host="api.example.test").json()["answers"]
        assert a["reason"] == "fallback: no candidate zone is up"
        assert sorted(a["ips"]) == [Z1_V4, Z2_V4]
    finally:
        lb1.set_pool("web", healthy=3)
        lb2.set_pool("web", healthy=2)
    server.wait_zone("z1", up=True)
    server.wait_zone("z2", up=True)
    print(f"\nhttpdns stopped answering a dead zone {took * 1000:.0f} ms after its LB said so")
    assert took < 0.5  # interval 100 ms


# --- parameters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("", "host: missing"),
        ("host=", "host: missing"),
        ("host=bad_name", "host: 'bad_name' is not a DNS name"),
        ("host=a.example.test,", "host: '' is not a DNS name"),
        ("host=" + ",".join(f"h{i}.example.test" for i in range(17)), "host: at most 16 names"),
        ("host=api.example.test&type=MX", "type: must be A or AAAA"),
        ("host=api.example.test&host=b.example.test", "host: given twice"),
        ("host=api.example.test&device_id=" + "x" * 257, "device_id: 1 to 256 characters"),
        ("host=api.example.test&device_id=", "device_id: 1 to 256 characters"),
        ("host=api.example.test&device_id=%ff", "parameters must be ASCII, percent-encoded UTF-8"),
        ("host=api.example.test&expiry=1&sig=00&account=app1", "expired"),
        ("host=api.example.test&sig=00", "signed request needs account and expiry"),
        ("host=api.example.test&sig=00&account=app1&expiry=-5", "expiry: must be Unix seconds"),
    ],
)
def test_bad_parameters(server, query, reason):
    r = server.get(f"/d?{query}")
    assert r.status_code in (400, 403)
    assert r.json() == {"error": reason}
    assert r.status_code == (403 if "expir" in reason or "sig" in query else 400)


def test_other_paths_and_methods(server):
    assert server.get("/nope").status_code == 404
    r = server.client().post("/d?host=api.example.test")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD"
    assert server.get("/healthz").text == "ok\n"
    r = server.client().head("/d?host=api.example.test")
    assert r.status_code == 200
    assert r.content == b""


def test_keep_alive_and_pipelining(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        req = b"GET /d?host=www.example.test HTTP/1.1\r\nHost: x\r\n\r\n"
        s.sendall(req * 3 + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 4
    assert data.count(b"10.9.9.9") == 3
    assert data.endswith(b"ok\n")


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /d?host=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"y" * 20000 + b"\r\n\r\n", 431),
    ],
)
def test_malformed_requests(server, raw, status):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(raw)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 %d " % status)
    assert b"Connection: close" in data


# --- client IP -------------------------------------------------------------------------


def test_trusted_proxy_forwarded_for(server):
    r = server.get(
        "/d?host=api.example.test",
        TRUSTED,
        headers={"X-Forwarded-For": f"198.51.100.7, 203.0.113.9, {TRUSTED}"},
    )
    doc = r.json()
    assert (doc["client_ip"], doc["client_ip_source"]) == ("203.0.113.9", "x-forwarded-for")


def test_trusted_proxy_ip_parameter(server):
    doc = server.d(TRUSTED, host="api.example.test", ip="192.0.2.44").json()
    assert (doc["client_ip"], doc["client_ip_source"]) == ("192.0.2.44", "ip")
    r = server.d(TRUSTED, host="api.example.test", ip="not-an-ip")
    assert r.status_code == 400
    assert r.json() == {"error": "ip: 'not-an-ip' is not an IP address"}


def test_untrusted_peer_cannot_choose_its_ip(server):
    r = server.get(
        "/d?host=api.example.test&ip=192.0.2.44", headers={"X-Forwarded-For": "198.51.100.7"}
    )
    doc = r.json()
    assert (doc["client_ip"], doc["client_ip_source"]) == ("127.0.0.1", "socket")
    assert doc["warnings"] == ["ip parameter ignored: peer 127.0.0.1 is not a trusted proxy"]


@pytest.mark.parametrize(
    ("peer", "xff", "ip", "expected"),
    [
        ("10.0.0.1", "1.1.1.1", None, ("10.0.0.1", "socket", None)),
        ("127.0.0.2", None, None, ("127.0.0.2", "socket", None)),
        ("127.0.0.2", "1.1.1.1", None, ("1.1.1.1", "x-forwarded-for", None)),
        ("127.0.0.2", "1.1.1.1, 2.2.2.2", None, ("2.2.2.2", "x-forwarded-for", None)),
        ("127.0.0.2", "1.1.1.1, 127.0.0.3", None, ("1.1.1.1", "x-forwarded-for", None)),
        ("127.0.0.2", "127.0.0.3, 127.0.0.4", None, ("127.0.0.3", "x-forwarded-for", None)),
        ("127.0.0.2", "1.1.1.1, junk, 127.0.0.3", None, ("127.0.0.3", "x-forwarded-for", None)),
        ("127.0.0.2", "junk", None, ("127.0.0.2", "x-forwarded-for", None)),
        ("127.0.0.2", " 2001:db8::5 ", None, ("2001:db8::5", "x-forwarded-for", None)),
        ("::ffff:127.0.0.2", "1.1.1.1", None, ("1.1.1.1", "x-forwarded-for", None)),
        ("127.0.0.2", "1.1.1.1", "9.9.9.9", ("9.9.9.9", "ip", None)),
        (
            "10.0.0.1",
            None,
            "9.9.9.9",
            ("10.0.0.1", "socket", "ip parameter ignored: peer 10.0.0.1 is not a trusted proxy"),
        ),
    ],
)
def test_client_address_rules(peer, xff, ip, expected):
    import ipaddress

    proxies = (ipaddress.ip_network("127.0.0.0/29"),)
    assert client_address(peer, proxies, xff, ip) == expected


# --- signatures ------------------------------------------------------------------------


def test_signatures_on_the_strict_server(strict):
    ok = strict.d("127.0.0.20", **signed("api.example.test,www.example.test"))
    assert ok.status_code == 200, ok.text
    assert len(ok.json()["answers"]) == 2
    cases = {
        "signature required: account, expiry and sig parameters": {"host": "api.example.test"},
        "expired": signed("api.example.test", expiry=int(time.time()) - 10),
        # default dns.signature_max_validity: one hour
        "expiry too far in the future": signed(
            "api.example.test", expiry=int(time.time()) + 10 * 365 * 86400
        ),
        "unknown account": signed("api.example.test", account="nobody"),
        "bad signature": signed("api.example.test", secret="x" * 16),
    }
    for reason, params in cases.items():
        r = strict.d("127.0.0.20", **params)
        assert (r.status_code, r.json()) == (403, {"error": reason})
    # the signature covers the host parameter exactly as sent
    params = signed("api.example.test")
    params["host"] = "API.example.test"
    assert strict.d("127.0.0.20", **params).json() == {"error": "bad signature"}


def test_signature_is_checked_when_given_even_if_not_required(server):
    assert server.d(**signed("api.example.test")).status_code == 200
    r = server.d(**signed("api.example.test", secret="y" * 16))
    assert (r.status_code, r.json()) == (403, {"error": "bad signature"})


# --- rate limit --------------------------------------------------------------------------


def test_rate_limit_per_client_ip(strict):
    params = signed("api.example.test")
    codes = [strict.d("127.0.0.30", **params) for _ in range(30)]
    statuses = [r.status_code for r in codes]
    assert statuses.count(200) >= 10
    assert 429 in statuses
    limited = next(r for r in codes if r.status_code == 429)
    assert limited.json() == {"error": "rate limit exceeded"}
    assert int(limited.headers["retry-after"]) >= 1
    # another client IP has its own bucket
    assert strict.d("127.0.0.31", **params).status_code == 200
    # and the bucket refills: 10/s
    time.sleep(0.25)
    assert strict.d("127.0.0.30", **params).status_code == 200
    metrics = strict.get("/metrics", "127.0.0.32").text
    assert 'zonegate_httpdns_refused_total{reason="rate_limited"}' in metrics
    assert 'zonegate_httpdns_responses_total{status="429"}' in metrics


def test_rate_limiter_pure():
    rl = RateLimiter(rate=2.0, burst=2.0, max_keys=3)
    assert rl.allow("a", 0.0) == 0.0
    assert rl.allow("a", 0.0) == 0.0
    assert rl.allow("a", 0.0) == pytest.approx(0.5)
    assert rl.allow("a", 0.5) == 0.0  # one token back after 0.5 s
    assert rl.allow("a", 0.5) == pytest.approx(0.5)
    for k in "bcdefg":
        rl.allow(k, 100.0)
    assert len(rl) <= 3
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(0)


# --- metrics, status, reload --------------------------------------------------------------


def test_metrics_and_status(server):
    server.d(host="api.example.test")
    text = server.get("/metrics").text
    assert 'zonegate_httpdns_responses_total{status="200"}' in text
    assert "zonegate_httpdns_decisions_total{zone=" in text
    assert 'zonegate_zone_up{zone="z1"} 1.0' in text
    assert 'zonegate_zone_probes_total{zone="z1"}' in text
    doc = server.status()
    assert doc["version"] >= 1
    assert doc["zones"]["z1"]["known"] is True
    assert doc["zones"]["z1"]["capacity"] == 100
    assert doc["zones_without_health_check"] == []


def test_sighup_reload_keeps_last_good(lbs, tmp_path):
    doc = topology(*lbs)
    h = start_httpdns(tmp_path / "topo.yaml", doc)
    try:
        assert h.d(host="new.example.test").json()["answers"][0]["ips"] == []
        doc["dns"]["domains"]["example.test"]["records"]["new"] = [
            {"type": "A", "value": "10.7.7.7"}
        ]
        h.path.write_text(json.dumps(doc))
        h.proc.signal(signal.SIGHUP)
        t0 = time.monotonic()
        while h.status()["version"] != 2:
            assert time.monotonic() - t0 < 5
            time.sleep(0.02)
        assert h.d(host="new.example.test").json()["answers"][0]["ips"] == ["10.7.7.7"]
        h.path.write_text("zones: {bad: {weight: -1}}\n")
        h.proc.signal(signal.SIGHUP)
        t0 = time.monotonic()
        while h.status()["reloads"]["refused"] != 1:
            assert time.monotonic() - t0 < 5
            time.sleep(0.02)
        assert h.status()["version"] == 2
        assert h.d(host="new.example.test").json()["answers"][0]["ips"] == ["10.7.7.7"]
        assert "reload refused, keeping version 2" in h.proc.stderr()
    finally:
        h.close()


def test_bad_topology_and_listen_exit_codes(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("zones: {}\n")
    from zonegate.httpdns.api import run_httpdns

    assert run_httpdns(str(bad), "127.0.0.1:0") == 1
    good = tmp_path / "good.yaml"
    good.write_text(json.dumps({"zones": {"z": {}}}))
    assert run_httpdns(str(good), None) == 2  # no dns.httpdns_listen
    assert run_httpdns(str(good), "nope") == 2


# --- any input gives an answer, never an exception -------------------------------------


def _app():
    from zonegate.dns.zonehealth import ZoneProber
    from zonegate.httpdns.api import HttpdnsApp
    from zonegate.topology.schema import Topology
    from zonegate.topology.snapshot import Snapshot

    class Dummy:
        address = "127.0.0.1:9"

    topo = Topology.model_validate(topology(Dummy(), Dummy(), rate_limit=1000))
    return HttpdnsApp(Snapshot(1, topo, "test"), ZoneProber(topo))


_APP = None


@given(
    st.binary(max_size=300),
    st.sampled_from(["127.0.0.1", TRUSTED, "::1", "junk"]),
    st.one_of(st.none(), st.binary(max_size=80)),
)
def test_any_query_is_answered(query, peer, xff):
    global _APP
    if _APP is None:
        _APP = _app()
    headers = [] if xff is None else [(b"X-Forwarded-For", xff)]
    status, _, body, _ = _APP.handle(b"GET", b"/d?" + query, headers, peer)
    assert status in (200, 400, 403, 429)
    doc = json.loads(body)
    assert ("answers" in doc) == (status == 200)


@given(st.text(alphabet="abcdefhipstvy=&,.%0123456789AF_-x", max_size=120))
def test_any_parameter_text_is_answered(query):
    global _APP
    if _APP is None:
        _APP = _app()
    status, _, body, _ = _APP.handle(b"GET", b"/d?" + query.encode(), [], "127.0.0.1")
    assert status in (200, 400, 403, 429)
    json.loads(body)
