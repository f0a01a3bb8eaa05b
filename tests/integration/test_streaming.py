"""Large bodies through `zonegate lb`: streamed both ways, checked by CRC32, RSS bounded.

The LB's resident memory is sampled every 20 ms during each transfer; its peak growth
over the value before the transfer must stay under RSS_BUDGET, whatever the body size:
the proxy streams chunk by chunk with flow control and never holds a body.
"""

from __future__ import annotations

import socket
import threading
import time
import zlib
from collections.abc import Iterator

import httptools
import psutil
import pytest

from tests.integration.lbharness import Lb, Topo, start_lb
from tests.peers.processes import BackendProc, start_backend
from zonegate.lab.backend import iter_pattern, pattern_crc32

pytestmark = pytest.mark.timeout(120)

GIB = 1 << 30
RSS_BUDGET = 64 << 20
PIECE = 1 << 20


class RssSampler:
    """Peak RSS growth of a process (and its children) while the block runs."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.base = self._rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        procs = [self.proc, *self.proc.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.02)

    @property
    def growth(self) -> int:
        return self.peak - self.base

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class _Resp:
    def __init__(self) -> None:
        self.crc = 0
        self.size = 0
        self.done = False
        self.headers: dict[bytes, bytes] = {}
        self.body = b""

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.crc = zlib.crc32(body, self.crc)
        self.size += len(body)
        if len(self.body) < 4096:
            self.body += body[:4096]

    def on_message_complete(self) -> None:
        self.done = True


def read_response(s: socket.socket, *, slow_reader: float = 0.0) -> tuple[int, _Resp]:
    """Read one response, CRC-ing its body; `slow_reader` sleeps that long per MiB."""
    resp = _Resp()
    parser = httptools.HttpResponseParser(resp)
    buf = bytearray(PIECE)
    view = memoryview(buf)
    since_pause = 0
    while not resp.done:
        k = s.recv_into(buf)
        if not k:
            break
        parser.feed_data(view[:k])
        if slow_reader:
            since_pause += k
            if since_pause >= PIECE:
                since_pause = 0
                time.sleep(slow_reader)
    return parser.get_status_code(), resp


def download(lb: Lb, n: int, *, chunked: bool, slow_reader: float = 0.0) -> _Resp:
    with socket.create_connection(("127.0.0.1", lb.port), timeout=30) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        q = b"&chunked=1" if chunked else b""
        s.sendall(b"GET /download?bytes=%d%s HTTP/1.1\r\nHost: app.test\r\n\r\n" % (n, q))
        status, resp = read_response(s, slow_reader=slow_reader)
    assert status == 200
    assert resp.done
    return resp


def upload(lb: Lb, n: int, *, chunked: bool) -> _Resp:
    with socket.create_connection(("127.0.0.1", lb.port), timeout=30) as s:
        if chunked:
            s.sendall(
                b"POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            for piece in iter_pattern(n, PIECE):
                s.sendall(b"%x\r\n%b\r\n" % (len(piece), piece))
            s.sendall(b"0\r\n\r\n")
        else:
            s.sendall(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: %d\r\n\r\n" % n)
            for piece in iter_pattern(n, PIECE):
                s.sendall(piece)
        status, resp = read_response(s)
    assert status == 200, resp.body
    return resp


@pytest.fixture(scope="module")
def backend() -> Iterator[BackendProc]:
    b = start_backend("bulk", zone="z1")
    try:
        yield b
    finally:
        b.kill()


@pytest.fixture(scope="module")
def lb(tmp_path_factory, backend) -> Iterator[Lb]:
    topo = Topo().pool("web", [backend]).listener("web")
    with start_lb(tmp_path_factory.mktemp("streaming"), topo) as lb:
        # Warm up (first connections, code paths) before measuring memory.
        download(lb, 8 << 20, chunked=True)
        upload(lb, 8 << 20, chunked=True)
        yield lb


def _report(what: str, n: int, took: float, rss: RssSampler) -> None:
    print(
        f"\n{what}: {n >> 20} MiB in {took:.2f}s ({n / took / 1e6:.0f} MB/s), "
        f"LB RSS {rss.base >> 20} MiB + peak growth {rss.growth / (1 << 20):.1f} MiB"
    )


@pytest.mark.slow
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_download_1gib(lb, chunked):
    with RssSampler(lb.proc.pid) as rss:
        t0 = time.monotonic()
        resp = download(lb, GIB, chunked=chunked)
        took = time.monotonic() - t0
    _report(f"download {'chunked' if chunked else 'content-length'}", GIB, took, rss)
    assert resp.size == GIB
    assert resp.crc == pattern_crc32(GIB) == int(resp.headers[b"x-crc32"])
    assert rss.growth < RSS_BUDGET


@pytest.mark.slow
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_upload_1gib(lb, chunked):
    with RssSampler(lb.proc.pid) as rss:
        t0 = time.monotonic()
        resp = upload(lb, GIB, chunked=chunked)
        took = time.monotonic() - t0
    _report(f"upload {'chunked' if chunked else 'content-length'}", GIB, took, rss)
    import json

    doc = json.loads(resp.body)
    assert doc == {"bytes": GIB, "crc32": pattern_crc32(GIB)}
    assert rss.growth < RSS_BUDGET


@pytest.mark.slow
def test_slow_reader_download_does_not_buffer(lb):
    """The backend sends as fast as it can, the client reads 1 MiB every 5 ms."""
    n = 256 << 20
    with RssSampler(lb.proc.pid) as rss:
        t0 = time.monotonic()
        resp = download(lb, n, chunked=False, slow_reader=0.005)
        took = time.monotonic() - t0
    _report("slow reader download", n, took, rss)
    assert resp.crc == pattern_crc32(n)
    assert rss.growth < RSS_BUDGET


def test_upload_to_a_backend_that_does_not_read_does_not_buffer(tmp_path):
    """A backend that accepts and never reads: the LB must stop reading the client."""
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(8)
    accepted: list[socket.socket] = []

    def accept() -> None:
        try:
            conn, _ = sink.accept()
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            accepted.append(conn)
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    topo = (
        Topo()
        .pool("web", [f"127.0.0.1:{sink.getsockname()[1]}"], health={"active": None})
        .listener("web")
    )
    n = 256 << 20
    sent = 0
    try:
        with start_lb(tmp_path, topo) as lb:
            rss = RssSampler(lb.proc.pid)
            with rss, socket.create_connection(("127.0.0.1", lb.port), timeout=5) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
                s.sendall(
                    b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: %d\r\n\r\n" % n
                )
                s.settimeout(2.0)
                try:
                    for piece in iter_pattern(n, 64 * 1024):
                        s.sendall(piece)
                        sent += len(piece)
                except TimeoutError:
                    pass
                time.sleep(0.3)
            print(
                f"\nupload to a stalled backend: client could send {sent >> 10} KiB before "
                f"blocking; LB RSS peak growth {rss.growth / (1 << 20):.1f} MiB"
            )
            assert sent < 16 << 20, "the LB kept reading a body it could not forward"
            assert rss.growth < RSS_BUDGET
    finally:
        for c in accepted:
            c.close()
        sink.close()
