"""HTTP semantics of the `zonegate lb` reverse proxy, checked end to end.

Forwarding fields, hop-by-hop removal, routing, the errors the proxy generates
(404/502/503), bodiless responses, pipelining, 100-continue, keep-alive, the version
header, and drain.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.integration.lbharness import (
    Lb,
    ScriptedBackend,
    Topo,
    raw_exchange,
    run_requests,
    start_lb,
)
from tests.peers.processes import BackendProc, start_backends

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def backends() -> Iterator[list[BackendProc]]:
    bs = start_backends(3, zone="z1")
    try:
        yield bs
    finally:
        for b in bs:
            b.kill()


@pytest.fixture(scope="module")
def lb(tmp_path_factory, backends) -> Iterator[Lb]:
    b1, b2, b3 = backends
    topo = (
        Topo()
        .pool("main", [b1, b2])
        .pool("api", [b3])
        .listener(
            routes=[
                {"host": "api.test", "pool": "api"},
                {"host": "*.api.test", "pool": "api"},
                {"host": "www.test", "path_prefix": "/v2/", "pool": "api"},
                {"host": "www.test", "pool": "main"},
                {"path_prefix": "/only-api", "pool": "api"},
            ]
        )
    )
    with start_lb(tmp_path_factory.mktemp("semantics"), topo) as lb:
        yield lb


def echo(lb: Lb, headers: dict[str, str] | None = None, *, host: str = "www.test", **kw):
    r = lb.get("/echo", headers={"Host": host, **(headers or {})}, **kw)
    assert r.status == 200, r
    doc = r.json()
    doc["header_map"] = {}
    for name, value in doc["headers"]:
        doc["header_map"].setdefault(name.lower(), []).append(value)
    return r, doc


# forwarding fields


def test_forwarded_fields_added_and_appended(lb):
    _, doc = echo(lb, {"X-Forwarded-For": "203.0.113.7", "Via": "1.0 edge"})
    h = doc["header_map"]
    assert h["x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"]
    assert h["x-forwarded-proto"] == ["http"]
    assert h["via"] == ["1.0 edge, 1.1 zonegate"]
    _, doc = echo(lb)
    h = doc["header_map"]
    assert h["x-forwarded-for"] == ["127.0.0.1"]
    assert h["via"] == ["1.1 zonegate"]


def test_client_x_forwarded_proto_replaced(lb):
    _, doc = echo(lb, {"X-Forwarded-Proto": "https"})
    assert doc["header_map"]["x-forwarded-proto"] == ["http"]


def test_hop_by_hop_request_fields_removed(lb):
    _, doc = echo(
        lb,
        {
            "Connection": "keep-alive, X-Secret",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Trailer": "X-T",
            "Proxy-Connection": "keep-alive",
            "X-Secret": "do not forward",
            "X-Kept": "yes",
        },
    )
    h = doc["header_map"]
    for name in ("connection", "keep-alive", "te", "trailer", "proxy-connection", "x-secret"):
        assert name not in h, name
    assert h["x-kept"] == ["yes"]
    assert h["host"] == ["www.test"]


def test_upgrade_declined_by_backend_is_a_plain_response_then_closed(lb):
    """The Upgrade goes to the backend; a non-101 answer is relayed with normal framing.

    Bytes after the Upgrade request belong to a protocol that was not agreed: they are
    never read as a request, and the client connection closes after the response.
    """
    reply = raw_exchange(
        lb.port,
        b"GET /echo HTTP/1.1\r\nHost: www.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: www.test\r\n\r\n",
    )
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in head.lower()
    doc = json.loads(body)
    fields = {n.lower(): v for n, v in doc["headers"]}
    assert fields["upgrade"] == "websocket"
    assert fields["connection"].lower() == "upgrade"
    assert reply.count(b"HTTP/1.1 ") == 1


def test_hop_by_hop_response_fields_removed(tmp_path):
    body = b"hello"
    reply = (
        b"HTTP/1.1 200 OK\r\nConnection: close, X-Internal\r\nKeep-Alive: timeout=5\r\n"
        b"X-Internal: secret\r\nProxy-Authenticate: Basic\r\nX-Public: yes\r\n"
        b"Content-Length: 5\r\n\r\n" + body
    )
    with ScriptedBackend({"/": reply}, close_after=True) as sb:
        topo = Topo().pool("web", [sb.address], health={"active": None}).listener("web")
        with start_lb(tmp_path, topo) as lb:
            conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=5)
            conn.request("GET", "/", headers={"Host": "x.test"})
            r = conn.getresponse()
            assert r.read() == body
            names = {k.lower() for k, _ in r.getheaders()}
            assert r.getheader("X-Public") == "yes"
            for name in ("connection", "keep-alive", "x-internal", "proxy-authenticate"):
                assert name not in names, name
            # The backend closed its connection; the client's stays open.
            sock = conn.sock
            conn.request("GET", "/", headers={"Host": "x.test"})
            assert conn.getresponse().read() == body
            assert conn.sock is sock
            conn.close()


# routing


@pytest.mark.parametrize(
    ("host", "path", "backend"),
    [
        ("api.test", "/echo", "b3"),
        ("API.TEST:8080", "/echo", "b3"),
        ("eu.api.test", "/echo", "b3"),
        ("www.test", "/v2/echo", "b3"),
        ("www.test", "/v1/echo", None),  # main: b1 or b2
        ("www.test", "/echo", None),
        ("other.test", "/only-api/x", "b3"),
    ],
)
def test_routing_by_host_and_path_prefix(lb, host, path, backend):
    r = lb.get(path, headers={"Host": host})
    assert r.status == 200
    served = r.headers["x-backend"]
    if backend is None:
        assert served in ("b1", "b2")
    else:
        assert served == backend


def test_absolute_form_target_routes_by_its_authority(lb):
    reply = raw_exchange(
        lb.port,
        b"GET http://api.test/echo HTTP/1.1\r\nHost: www.test\r\nConnection: close\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert b"X-Backend: b3" in reply
    body = json.loads(reply.partition(b"\r\n\r\n")[2])
    assert body["target"] == "/echo"
    assert ["Host", "api.test"] in body["headers"]


def test_no_route_404_keeps_connection(lb):
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=5)
    conn.request("GET", "/nothing", headers={"Host": "other.test"})
    r = conn.getresponse()
    r.read()
    assert r.status == 404
    assert r.getheader("X-Zonegate-Version") == "1"
    sock = conn.sock
    conn.request("GET", "/echo", headers={"Host": "www.test"})
    r = conn.getresponse()
    r.read()
    assert r.status == 200
    assert conn.sock is sock
    conn.close()


# errors generated by the proxy


def test_503_when_every_backend_disabled(tmp_path, backend_factory):
    bs = backend_factory.many(2, zone="z1")
    with start_lb(tmp_path, Topo().pool("web", bs).listener("web")) as lb:
        for b in ("b1", "b2"):
            lb.set_admin("web", b, "disable")
        lb.wait_pool("web", lambda p: p["healthy"] == 0)
        r = lb.get("/")
        print(f"\nall disabled: {r.status} {r.body!r}")
        assert r.status == 503
        assert r.headers["x-zonegate-version"] == "1"
        assert not lb.status()["pools"]["web"]["panic"]
        assert lb.metric("zonegate_errors_total", pool="web", kind="no_backend") == 1
        lb.set_admin("web", "b1", "enable")
        lb.wait_pool("web", lambda p: p["healthy"] == 1)
        assert lb.get("/").status == 200


def test_502_when_every_attempt_closes(tmp_path, backend_factory):
    bs = backend_factory.many(2, zone="z1")
    topo = Topo().pool("web", bs, retries=2).listener("web")
    with start_lb(tmp_path, topo) as lb:
        t0 = time.monotonic()
        r = lb.get("/close")
        print(f"\n/close on every attempt: {r.status} {r.body!r} in {time.monotonic() - t0:.3f}s")
        assert r.status == 502
        assert lb.metric("zonegate_errors_total", pool="web", kind="retried") == 1
        r = lb.get("/close?rst=1")
        assert r.status == 502


def test_502_on_garbage_response(tmp_path):
    with (
        ScriptedBackend({"/": b"garbage garbage\r\n\r\n"}) as g1,
        ScriptedBackend({"/": b"HTTP/1.1 abc\r\n\r\n"}) as g2,
    ):
        topo = (
            Topo()
            .pool("web", [g1.address, g2.address], health={"active": None}, retries=1)
            .listener("web")
        )
        with start_lb(tmp_path, topo) as lb:
            r = lb.get("/")
            print(f"\ngarbage from both backends: {r.status} {r.body!r}")
            assert r.status == 502
            assert g1.hits["/"] + g2.hits["/"] == 2
            assert lb.metric("zonegate_errors_total", pool="web", kind="bad_response") == 2


def test_response_without_length_is_rechunked_for_http11(tmp_path):
    reply = b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nuntil close"
    with ScriptedBackend({"/": reply}, close_after=True) as sb:
        topo = Topo().pool("web", [sb.address], health={"active": None}).listener("web")
        with start_lb(tmp_path, topo) as lb:
            conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=5)
            for _ in range(2):
                conn.request("GET", "/", headers={"Host": "x.test"})
                r = conn.getresponse()
                assert r.getheader("Transfer-Encoding") == "chunked"
                assert r.read() == b"until close"
            conn.close()


# bodiless responses, keep-alive, pipelining


def test_head_204_304_have_no_body_and_keep_alive(lb):
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=5)
    h = {"Host": "www.test"}
    conn.request("HEAD", "/download?bytes=1000", headers=h)
    r = conn.getresponse()
    assert r.status == 200
    assert r.getheader("Content-Length") == "1000"
    assert r.read() == b""
    sock = conn.sock
    for status in (204, 304):
        conn.request("GET", f"/status/{status}", headers=h)
        r = conn.getresponse()
        assert r.status == status
        assert r.read() == b""
        assert r.getheader("Content-Length") in (None, "0")
        assert r.getheader("Transfer-Encoding") is None
    conn.request("HEAD", "/download?bytes=5000&chunked=1", headers=h)
    r = conn.getresponse()
    assert r.read() == b""
    conn.request("GET", "/", headers=h)
    r = conn.getresponse()
    assert r.status == 200
    assert r.read().startswith(b"hello from")
    assert conn.sock is sock
    conn.close()


def test_head_and_204_raw_on_one_connection(lb):
    """On the wire: nothing after a HEAD/204 head, and the next response follows."""
    req = b"%s %s HTTP/1.1\r\nHost: www.test\r\n\r\n"
    reply = raw_exchange(
        lb.port,
        req % (b"HEAD", b"/download?bytes=100")
        + req % (b"GET", b"/status/204")
        + req % (b"HEAD", b"/")
        + b"GET /status/200 HTTP/1.1\r\nHost: www.test\r\nConnection: close\r\n\r\n",
    )
    parts = reply.split(b"HTTP/1.1 ")[1:]
    assert [p[:3] for p in parts] == [b"200", b"204", b"200", b"200"]
    for p in parts[:3]:
        assert p.endswith(b"\r\n\r\n"), p
    assert parts[3].endswith(b"status 200\n")


def test_bodyful_response_to_a_head_of_a_garbage_backend_cut(tmp_path):
    """A backend that wrongly sends a body after a 204: the body is not forwarded."""
    reply = b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nHELLO"
    with ScriptedBackend({"/": reply}) as sb:
        topo = Topo().pool("web", [sb.address], health={"active": None}).listener("web")
        with start_lb(tmp_path, topo) as lb:
            out = raw_exchange(
                lb.port,
                b"GET / HTTP/1.1\r\nHost: x.test\r\n\r\n"
                b"GET / HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\n",
            )
            assert b"HELLO" not in out
            assert out.count(b"HTTP/1.1 204 ") == 2


def test_pipelined_requests_answered_in_order(lb):
    reqs = []
    for i in range(12):
        path = b"/slow?ms=%d&n=%d" % (60 - 5 * i, i) if i % 3 == 0 else b"/echo?n=%d" % i
        reqs.append(b"GET %s HTTP/1.1\r\nHost: www.test\r\n\r\n" % path)
    reqs.append(b"GET /echo?n=last HTTP/1.1\r\nHost: www.test\r\nConnection: close\r\n\r\n")
    reply = raw_exchange(lb.port, b"".join(reqs))
    parts = reply.split(b"HTTP/1.1 ")[1:]
    assert len(parts) == 13
    assert all(p.startswith(b"200 ") for p in parts)
    for i, p in enumerate(parts[:12]):
        if i % 3 == 0:
            assert p.endswith(b"slept %d ms\n" % (60 - 5 * i)), p
        else:
            assert b'"query":"n=%d"' % i in p
    assert b'"query":"n=last"' in parts[12]


def test_many_requests_on_one_keep_alive_connection(lb):
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=5)
    conn.connect()
    sock = conn.sock
    seen = set()
    for i in range(300):
        conn.request("GET", f"/?i={i}", headers={"Host": "www.test"})
        r = conn.getresponse()
        assert r.status == 200
        r.read()
        seen.add(r.getheader("X-Backend"))
    assert conn.sock is sock
    assert seen == {"b1", "b2"}
    conn.close()


def test_http10_client(lb):
    reply = raw_exchange(lb.port, b"GET /echo HTTP/1.0\r\nHost: www.test\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ")
    head = reply.partition(b"\r\n\r\n")[0].lower()
    assert b"connection: close" in head
    reply = raw_exchange(
        lb.port,
        b"GET /echo HTTP/1.0\r\nHost: www.test\r\nConnection: keep-alive\r\n\r\n"
        b"GET /download?bytes=10&chunked=1 HTTP/1.0\r\nHost: www.test\r\n\r\n",
    )
    first, second = reply.split(b"HTTP/1.1 ")[1:]
    assert b"connection: keep-alive" in first.lower()
    # No chunked encoding for an HTTP/1.0 client: the body is delimited by the close.
    assert b"transfer-encoding" not in second.lower()
    assert second.endswith(bytes(range(10)))


def test_post_body_forwarded(lb):
    body = b"x" * 100_000
    r = lb.request("POST", "/upload", body=body, headers={"Host": "www.test"})
    assert r.status == 200
    import zlib

    assert r.json() == {"bytes": len(body), "crc32": zlib.crc32(body)}


def test_expect_100_continue(lb):
    with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as s:
        s.sendall(
            b"POST /upload HTTP/1.1\r\nHost: www.test\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        interim = s.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"hello")
        final = b""
        while b"}" not in final:
            chunk = s.recv(65536)
            assert chunk
            final += chunk
    assert final.startswith(b"HTTP/1.1 200 ")
    assert b'"bytes":5' in final


def test_version_header_on_every_response(lb):
    assert lb.get("/", headers={"Host": "www.test"}).headers["x-zonegate-version"] == "1"
    assert lb.get("/status/500", headers={"Host": "www.test"}).headers["x-zonegate-version"] == "1"
    assert lb.get("/x", headers={"Host": "nowhere.test"}).headers["x-zonegate-version"] == "1"


# drain


def test_drain_finishes_in_flight_and_takes_no_new_requests(tmp_path, backend_factory):
    bs = backend_factory.many(2, zone="z1")
    with start_lb(tmp_path, Topo().pool("web", bs).listener("web")) as lb:
        result: dict[str, object] = {}

        def slow() -> None:
            r = lb.get("/slow?ms=1500", timeout=10)
            result["status"] = r.status
            result["backend"] = r.headers.get("x-backend")
            result["body"] = r.body

        t = threading.Thread(target=slow)
        t.start()
        busy = None
        deadline = time.monotonic() + 3
        while busy is None and time.monotonic() < deadline:
            for b in lb.status()["pools"]["web"]["backends"]:
                if b["inflight"]:
                    busy = b["id"]
            time.sleep(0.02)
        assert busy is not None
        lb.set_admin("web", busy, "drain")
        entry = lb.backend("web", busy)
        assert entry["admin"] == "drain"
        assert not entry["available"]
        res = run_requests(lb.port, 300)
        t.join(5)
        print(
            f"\ndrained {busy} with a request in flight: new requests {dict(res.backends)}; "
            f"in-flight one finished {result.get('status')} from {result.get('backend')}"
        )
        assert res.failed == 0
        assert res.backends[busy] == 0
        assert result["status"] == 200
        assert result["backend"] == busy
        assert result["body"] == b"slept 1500 ms\n"
        lb.set_admin("web", busy, "enable")
        res = run_requests(lb.port, 100)
        assert res.backends[busy] == 50


def test_unsolicited_101_from_backend_is_a_bad_response(tmp_path):
    """A 101 to a request that asked for no Upgrade is a backend bug: 502, not a tunnel."""
    reply = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nxx"
    with ScriptedBackend({"/": reply}) as sb:
        topo = Topo().pool("web", [sb.address], health={"active": None}).listener("web")
        with start_lb(tmp_path, topo) as lb:
            r = lb.get("/")
            print(f"\nunsolicited 101: {r.status} {r.body!r}")
            assert r.status == 502
            assert lb.get("/").status == 502
            assert "Traceback" not in lb.proc.stderr()
            assert "Fatal error" not in lb.proc.stderr()
