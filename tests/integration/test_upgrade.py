"""Upgrade requests through a real `zonegate lb` (issue 12 item 1: upstream desync).

An Upgrade request with a body (POST + Upgrade + Content-Length, a GET handshake with
Content-Length, chunked) once reached the backend without its body; the upstream
connection went back to the idle pool, and the next client's request was read by the
origin as the missing body (a request hidden in it ran without X-Forwarded-For). The
origin here (tests/integration/origin.py, h11) records exactly what it read, so a desync
shows as a wrong body or a request that should not exist.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.integration.lbharness import Lb, Topo, raw_exchange, start_lb
from tests.integration.origin import RecordingOrigin

pytestmark = pytest.mark.timeout(60)

HIDDEN = b"GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n"


@pytest.fixture(scope="module")
def origin() -> Iterator[RecordingOrigin]:
    with RecordingOrigin() as o:
        yield o


@pytest.fixture(scope="module")
def lb(tmp_path_factory, origin) -> Iterator[Lb]:
    topo = (
        Topo()
        .pool(
            "web",
            [origin.address],
            # Shorter than client_idle: a stalled client body would hit it first if
            # the read timer ran while the client was still sending.
            timeouts={"read": "500ms"},
            health={
                "active": None,
                "passive": {"consecutive_failures": 2, "max_ejected_percent": 100},
            },
        )
        .listener("web", timeouts={"client_idle": "1s"})
    )
    with start_lb(tmp_path_factory.mktemp("upgrade"), topo) as lb:
        yield lb


def _chunked(body: bytes) -> bytes:
    return b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)


UPGRADE_WITH_BODY = {
    "post_content_length": (
        b"POST /x HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Content-Length: %d\r\n\r\n" % len(HIDDEN) + HIDDEN
    ),
    "post_h2c": (
        b"POST /x HTTP/1.1\r\nHost: app.test\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings"
        b"\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nContent-Length: %d\r\n\r\n"
        % len(HIDDEN)
        + HIDDEN
    ),
    "get_handshake_content_length": (
        b"GET /x HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Content-Length: %d\r\n\r\n" % len(HIDDEN) + HIDDEN
    ),
    "post_chunked": (
        b"POST /x HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(HIDDEN)
    ),
}


def _new_requests(origin: RecordingOrigin, before: int, want: int, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while len(origin.requests) < before + want and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # anything more (a smuggled request) would show up now
    return origin.requests[before:]


@pytest.mark.parametrize("case", sorted(UPGRADE_WITH_BODY))
def test_upgrade_with_body_never_desyncs_the_upstream(lb, origin, case):
    """The body goes with the head; the next client's request arrives as its own."""
    before = len(origin.requests)
    t0 = time.monotonic()
    # Trailing bytes after the request: tunnel data the client sends early. With a
    # declined Upgrade they must be dropped, never read as a request.
    reply = raw_exchange(lb.port, UPGRADE_WITH_BODY[case] + b"GET /early HTTP/1.1\r\n\r\n")
    took = time.monotonic() - t0
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:300]
    assert b"ok " in reply
    assert b"connection: close" in reply.lower()
    assert reply.count(b"HTTP/1.1 ") == 1
    assert took < 1.0, "the client waited for a timeout"  # client_idle is 1s

    second = raw_exchange(
        lb.port, b"GET /second HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"
    )
    assert second.startswith(b"HTTP/1.1 200 "), second[:300]
    assert b"ok GET /second" in second

    got = _new_requests(origin, before, 2)
    print(f"\n{case}: origin read {[(r.method, r.target, len(r.body)) for r in got]}")
    assert [r.target for r in got] == [b"/x", b"/second"]
    first, nxt = got
    assert first.body == HIDDEN, "the body of the Upgrade request was not forwarded whole"
    assert first.field(b"upgrade"), "the Upgrade field was not forwarded"
    assert not first.error, origin.errors
    assert not nxt.error, origin.errors
    assert nxt.field(b"x-forwarded-for") == [b"127.0.0.1"]
    assert nxt.field(b"via") == [b"1.1 zonegate"]
    assert nxt.body == b""
    assert b"/smuggled" not in origin.targets()
    assert b"/early" not in origin.targets()
    assert lb.backend("web", origin.address)["available"]


def _read_head(s: socket.socket) -> tuple[bytes, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = s.recv(65536)
        assert data, f"closed before a complete head: {buf!r}"
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def _read_exactly(s: socket.socket, have: bytes, n: int) -> bytes:
    while len(have) < n:
        data = s.recv(65536)
        assert data, f"closed after {have!r}"
        have += data
    return have


@pytest.mark.parametrize("body", [b"", b"hello-body"])
def test_101_turns_into_a_tunnel_both_ways(lb, origin, body):
    """101 from the backend: its head goes to the client, then bytes both ways.

    Bytes the client sent right after its request (before the 101) reach the backend
    after the request body; a half-close is passed on and the tunnel ends cleanly.
    """
    before = len(origin.requests)
    framing = b"Content-Length: %d\r\n" % len(body) if body else b""
    req = (
        b"POST /tunnel HTTP/1.1\r\nHost: app.test\r\nUpgrade: echo\r\nConnection: Upgrade\r\n"
        + framing
        + b"\r\n"
        + body
    )
    with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as s:
        s.sendall(req + b"early|")
        head, rest = _read_head(s)
        assert head.startswith(b"HTTP/1.1 101 "), head
        lower = head.lower()
        assert b"\r\nupgrade: echo" in lower
        assert b"\r\nconnection: upgrade" in lower
        assert _read_exactly(s, rest, 6) == b"early|"
        big = bytes(range(256)) * 2048  # 512 KiB, through the flow control
        threading.Thread(target=s.sendall, args=(big,), daemon=True).start()
        assert _read_exactly(s, b"", len(big)) == big
        s.shutdown(socket.SHUT_WR)
        assert s.recv(10) == b"", "the tunnel did not end after both half-closes"
    got = _new_requests(origin, before, 1)
    assert [r.target for r in got] == [b"/tunnel"]
    assert got[0].body == body
    assert lb.backend("web", origin.address)["available"]


def test_websocket_echo_with_a_real_client_and_server(tmp_path):
    """The websockets library on both ends: handshake, text, binary, ping, close."""
    ws_server = pytest.importorskip("websockets.sync.server")
    ws_client = pytest.importorskip("websockets.sync.client")

    def echo(conn) -> None:
        for message in conn:
            conn.send(message)

    with ws_server.serve(echo, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        topo = Topo().pool("ws", [f"127.0.0.1:{port}"], health={"active": None}).listener("ws")
        with start_lb(tmp_path, topo) as lb:
            with ws_client.connect(f"ws://127.0.0.1:{lb.port}/chat", open_timeout=5) as ws:
                for message in ["hello", "zonegate", "x" * 100_000]:
                    ws.send(message)
                    assert ws.recv(timeout=5) == message
                ws.send(b"\x00\x01binary")
                assert ws.recv(timeout=5) == b"\x00\x01binary"
                assert ws.ping().wait(timeout=5)
            r = lb.get("/", headers={"Host": "app.test"})
            assert r.status in (400, 404, 426), r  # plain HTTP still served (not a ws path)
        server.shutdown()


def test_client_faults_never_blame_the_backend(lb, origin):
    """A client that stops mid-body or hangs up is cut; the backend is not blamed.

    Passive ejection is at 2 consecutive failures: 4 stalled bodies and 4 hang-ups
    would eject the only backend if any of them counted.
    """
    for _ in range(4):
        with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as s:
            s.sendall(
                b"POST /slow HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\n0123456789"
            )
            s.settimeout(5)
            try:
                assert s.recv(1000) == b""  # cut after client_idle (1s), no response
            except ConnectionResetError:
                pass
    for _ in range(4):
        with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as s:
            s.sendall(b"POST /gone HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\nab")
    entry = lb.backend("web", origin.address)
    assert entry["available"], entry
    assert lb.metric("zonegate_errors_total", pool="web", kind="read_timeout") == 0
    assert lb.metric("zonegate_errors_total", pool="web", kind="aborted_midway") == 0
    r = lb.get("/after", headers={"Host": "app.test"})
    assert r.status == 200
