"""Timeouts of `zonegate lb` on real sockets: slowloris, upstream read, connect, idle.

Connect timeouts are reproduced on loopback with a listener whose accept queue is full
(listen backlog 0, one connection queued and never accepted): Linux then drops the
SYNs of new connections, so a connect hangs until the client gives up.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.integration.lbharness import Lb, Load, Topo, start_lb
from tests.peers.processes import BackendProc, start_backend

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def backend() -> Iterator[BackendProc]:
    b = start_backend("solo", zone="z1")
    try:
        yield b
    finally:
        b.kill()


@pytest.fixture(scope="module")
def lb(tmp_path_factory, backend) -> Iterator[Lb]:
    topo = (
        Topo()
        .pool("web", [backend], timeouts={"read": "1s"})
        .listener("web", timeouts={"header": "1s", "client_idle": "1s"})
    )
    with start_lb(tmp_path_factory.mktemp("timeouts"), topo) as lb:
        yield lb


def _read_until_close(s: socket.socket, limit: float) -> tuple[bytes, float]:
    """Read until EOF (or reset); return what came and when the end came."""
    t0 = time.monotonic()
    s.settimeout(limit)
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
    return out, time.monotonic() - t0


def test_slowloris_cut_at_header_timeout_while_others_are_served(lb):
    head = b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Slow: " + b"a" * 200
    with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as s:
        load = Load(lb.port, clients=4, max_seconds=10).start()
        t0 = time.monotonic()
        cut_after = None
        reply = b""
        s.settimeout(0.2)
        for byte in head:
            try:
                s.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                cut_after = time.monotonic() - t0
                break
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                chunk = b""
            reply += chunk
            if not chunk:
                cut_after = time.monotonic() - t0
                break
            if time.monotonic() - t0 > 5:
                break
        res = load.stop()
    print(
        f"\nslowloris (1 byte / 200 ms, header timeout 1s): cut after {cut_after}s, "
        f"reply {reply[:40]!r}; meanwhile {res.summary()}"
    )
    assert cut_after is not None, "slowloris connection never cut"
    assert 0.85 <= cut_after <= 2.0
    assert reply == b"" or reply.startswith(b"HTTP/1.1 408 ")
    assert res.failed == 0
    assert res.ok > 100


def test_slowloris_silent_after_request_line(lb):
    """A client that sends part of a head and then nothing: 408 at the header timeout."""
    with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: app.test\r\n")
        reply, took = _read_until_close(s, 5)
    print(f"\npartial head then silence: {reply[:40]!r} after {took:.2f}s")
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert 0.85 <= took <= 2.0


def test_upstream_read_timeout_504(lb, backend):
    t0 = time.monotonic()
    r = lb.get("/hang")
    took = time.monotonic() - t0
    print(f"\n/hang with read timeout 1s: {r.status} after {took:.2f}s: {r.body!r}")
    assert r.status == 504
    assert 0.85 <= took <= 2.0
    # Not retried: the request reached the backend and may have run.
    assert lb.get("/").status == 200


def test_idle_keep_alive_client_closed_after_client_idle(lb):
    with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        rest, took = _read_until_close(s, 5)
    print(f"\nidle keep-alive connection closed {took:.2f}s after its response")
    assert rest == b""
    assert 0.85 <= took <= 2.0


def test_idle_connection_without_request_closed(lb):
    with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as s:
        rest, took = _read_until_close(s, 5)
    assert rest == b""
    assert 0.85 <= took <= 2.0


def test_keep_alive_survives_gaps_shorter_than_client_idle(lb):
    with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as s:
        for _ in range(3):
            s.sendall(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
            time.sleep(0.6)


def test_stalled_request_body_cut_after_client_idle(lb, backend):
    with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\nabc")
        reply, took = _read_until_close(s, 5)
    print(f"\nstalled body: closed after {took:.2f}s with {reply[:40]!r}")
    assert 0.85 <= took <= 2.0
    assert not reply.startswith(b"HTTP/1.1 200")


def test_connect_timeout_504(tmp_path):
    # A listener whose accept queue is full: SYNs to it are dropped.
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    queued = socket.create_connection(full.getsockname(), timeout=1)
    port = full.getsockname()[1]
    try:
        probe = socket.socket()
        probe.settimeout(0.3)
        with pytest.raises(TimeoutError), probe:
            probe.connect(("127.0.0.1", port))
        topo = (
            Topo()
            .pool(
                "web",
                [f"127.0.0.1:{port}"],
                health={"active": None},
                timeouts={"connect": "500ms"},
            )
            .listener("web")
        )
        with start_lb(tmp_path, topo) as lb:
            t0 = time.monotonic()
            r = lb.get("/")
            took = time.monotonic() - t0
            print(f"\nconnect timeout 500ms: {r.status} after {took:.2f}s: {r.body!r}")
            assert r.status == 504
            assert 0.45 <= took <= 1.5
            assert b"connect timeout" in r.body
            assert lb.metric("zonegate_errors_total", pool="web", kind="connect_timeout") == 1
    finally:
        queued.close()
        full.close()


@pytest.fixture(scope="module")
def lb_slow_clients(tmp_path_factory, backend) -> Iterator[Lb]:
    topo = (
        Topo()
        .pool(
            "web",
            [backend],
            timeouts={"read": "1s"},
            # One failure would eject the only backend: a wrong blame shows at once.
            health={
                "active": None,
                "passive": {"consecutive_failures": 1, "max_ejected_percent": 100},
            },
        )
        .listener("web", timeouts={"client_idle": "3s"})
    )
    with start_lb(tmp_path_factory.mktemp("slow-clients"), topo) as lb:
        yield lb


def _download_head(port: int, n: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.sendall(b"GET /download?bytes=%d HTTP/1.1\r\nHost: app.test\r\n\r\n" % n)
    return s


def test_client_pausing_longer_than_upstream_read_timeout_gets_everything(lb_slow_clients):
    """Backpressure from a slow client is not a slow backend: no read timeout, no ejection."""
    lb = lb_slow_clients
    n = 64 << 20
    with _download_head(lb.port, n) as s:
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        time.sleep(2.0)  # longer than the pool's read timeout, shorter than client_idle
        got = len(first.partition(b"\r\n\r\n")[2])
        while got < n:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
    entry = lb.backend("web", "solo")
    print(f"\nclient paused 2s mid-download (read timeout 1s): got {got} of {n} bytes")
    assert got == n
    assert entry["available"], entry["reason"]
    assert lb.metric("zonegate_errors_total", pool="web", kind="read_timeout") == 0


def test_client_that_never_reads_is_cut_after_client_idle(lb_slow_clients):
    lb = lb_slow_clients
    with _download_head(lb.port, 256 << 20) as s:
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        t0 = time.monotonic()
        time.sleep(4.0)
        # Drain what the kernel buffered; the connection must end soon after.
        s.settimeout(2)
        got = 0
        try:
            while chunk := s.recv(1 << 20):
                got += len(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
        took = time.monotonic() - t0
    entry = lb.backend("web", "solo")
    print(f"\nclient never reading: cut, {got} bytes buffered, after {took:.2f}s")
    assert got < 64 << 20
    assert took < 5.0
    assert entry["available"], "a slow client got the backend ejected"
    assert lb.metric("zonegate_errors_total", pool="web", kind="read_timeout") == 0
    assert lb.metric("zonegate_errors_total", pool="web", kind="aborted_midway") == 0
    assert lb.metric("zonegate_client_errors_total", kind="client_write_timeout") == 1
    assert lb.get("/").status == 200


def test_backend_slow_to_read_the_body_is_not_the_clients_fault(tmp_path):
    """The LB stops reading an upload the backend does not take: no client timeout then.

    client_idle 1s, read 2s: the exchange ends with the upstream read timeout (504), not
    with the client cut for a body it was not allowed to send.
    """
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        try:
            conn, _ = sink.accept()
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            held.append(conn)
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    topo = (
        Topo()
        .pool(
            "web",
            [f"127.0.0.1:{sink.getsockname()[1]}"],
            health={"active": None},
            timeouts={"read": "2s"},
        )
        .listener("web", timeouts={"client_idle": "1s"})
    )
    try:
        with (
            start_lb(tmp_path, topo) as lb,
            socket.create_connection(("127.0.0.1", lb.port), timeout=5) as s,
        ):
            n = 64 << 20
            s.sendall(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: %d\r\n\r\n" % n)
            s.setblocking(False)
            t0 = time.monotonic()
            piece = b"x" * 65536
            reply = b""
            while time.monotonic() - t0 < 5 and not reply:
                try:
                    s.send(piece)
                except BlockingIOError:
                    time.sleep(0.05)
                except (BrokenPipeError, ConnectionResetError):
                    break
                try:
                    reply = s.recv(65536)
                    if not reply:
                        break
                except BlockingIOError:
                    pass
                except ConnectionResetError:
                    break
            took = time.monotonic() - t0
            print(f"\nbackend not reading the body: {reply[:30]!r} after {took:.2f}s")
            assert reply.startswith(b"HTTP/1.1 504 "), reply
            assert 1.8 <= took <= 3.0
    finally:
        for c in held:
            c.close()
        sink.close()


def test_total_timeout_caps_an_exchange(tmp_path, backend):
    topo = (
        Topo()
        .pool(
            "web",
            [backend],
            health={
                "active": None,
                "passive": {"consecutive_failures": 1, "max_ejected_percent": 100},
            },
        )
        .listener("web", timeouts={"total": "1s"})
    )
    with start_lb(tmp_path, topo) as lb:
        assert lb.get("/slow?ms=200").status == 200
        t0 = time.monotonic()
        r = lb.get("/slow?ms=3000")
        took = time.monotonic() - t0
        print(f"\ntotal timeout 1s, /slow?ms=3000: {r.status} after {took:.2f}s {r.body!r}")
        assert r.status == 504
        assert 0.85 <= took <= 2.0
        # A slow download is cut too, once its response has started.
        n = 64 << 20
        with _download_head(lb.port, n) as s:
            got = len(s.recv(65536))
            time.sleep(1.5)
            t0 = time.monotonic()
            try:
                while chunk := s.recv(1 << 20):
                    got += len(chunk)
            except ConnectionResetError:
                pass
            took = time.monotonic() - t0
        print(f"  slow download cut: {got >> 20} of {n >> 20} MiB, rest read in {took:.2f}s")
        assert got < n // 4
        assert lb.metric("zonegate_errors_total", pool="web", kind="total_timeout") == 2
        # Nobody blamed the backend.
        assert lb.backend("web", "solo")["available"]
        assert lb.get("/").status == 200
