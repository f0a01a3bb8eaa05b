"""The demo backend, exercised as a real process over real sockets.

Also covers the process helpers in tests/peers/processes.py that start it.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import zlib

import httptools
import httpx
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.peers.processes import (
    ProcessError,
    free_port,
    refused_port,
    start_process,
    wait_port,
)
from zonegate.lab.backend import pattern_crc32

pytestmark = pytest.mark.timeout(30)

MB = 1_000_000


@pytest.fixture
def backend(backend_factory):
    return backend_factory("cp-1", zone="changping")


@pytest.fixture
def client(backend):
    with httpx.Client(base_url=backend.url, timeout=10) as c:
        yield c


def expected_crc(n: int) -> int:
    """CRC32 of n bytes where byte i is i % 256, computed the slow, obvious way."""
    unit = bytes(range(256)) * 4096
    crc = 0
    while n > 0:
        crc = zlib.crc32(unit[: min(n, len(unit))], crc)
        n -= len(unit)
    return crc


class Responses:
    """Collects HTTP responses parsed from raw bytes, in order."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[tuple[int, dict[str, str], bytes]] = []
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        self.done.append((status, self._headers, b"".join(self._body)))
        self._headers, self._body = {}, []


def exchange(address: tuple[str, int], data: bytes, n: int, timeout: float = 10) -> Responses:
    """Send `data` on one connection, read until `n` responses or EOF."""
    responses = Responses()
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(data)
        while len(responses.done) < n:
            chunk = sock.recv(65536)
            if not chunk:
                break
            responses.parser.feed_data(chunk)
    return responses


def read_until_eof(sock: socket.socket) -> bytes:
    out = bytearray()
    while chunk := sock.recv(65536):
        out += chunk
    return bytes(out)


# --- endpoints ------------------------------------------------------------------------


def test_root_says_hello_with_identity_headers(client):
    r = client.get("/")
    assert r.status_code == 200
    assert r.text == "hello from cp-1\n"
    assert r.headers["x-backend"] == "cp-1"
    assert r.headers["x-zone"] == "changping"
    assert r.headers["content-length"] == str(len(r.content))


def test_unknown_paths_and_methods_say_hello(client):
    assert client.get("/no/such/thing?x=1").text == "hello from cp-1\n"
    assert client.post("/", content=b"ignored").text == "hello from cp-1\n"
    head = client.head("/whatever")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len("hello from cp-1\n"))


def test_healthz_toggles_with_admin_endpoints(client):
    assert (client.get("/healthz").status_code, client.get("/healthz").text) == (200, "ok")
    assert client.post("/admin/fail-health").status_code == 200
    assert client.get("/healthz").status_code == 503
    assert client.get("/stats").json()["healthy"] is False
    assert client.post("/admin/heal").status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/admin/heal").status_code == 405


def test_echo_reports_what_was_received(client):
    r = client.post(
        "/echo?a=1&b=two",
        content=b"x" * 1234,
        headers={"X-Forwarded-For": "10.1.2.3", "Via": "1.1 zonegate"},
    )
    doc = r.json()
    assert doc["method"] == "POST"
    assert doc["path"] == "/echo"
    assert doc["query"] == "a=1&b=two"
    assert doc["body_bytes"] == 1234
    assert doc["http_version"] == "1.1"
    assert doc["peer"][0] == "127.0.0.1"
    headers = {name.lower(): value for name, value in doc["headers"]}
    assert headers["x-forwarded-for"] == "10.1.2.3"
    assert headers["via"] == "1.1 zonegate"
    assert all(isinstance(pair, list) and len(pair) == 2 for pair in doc["headers"])


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_upload_20mb_counts_bytes_and_crc(client, chunked):
    data = os.urandom(20 * MB)
    if chunked:
        step = 256 * 1024
        content = (data[i : i + step] for i in range(0, len(data), step))
        r = client.post("/upload", content=content)
    else:
        r = client.put("/upload", content=data)
    assert r.status_code == 200
    assert r.json() == {"bytes": len(data), "crc32": zlib.crc32(data)}
    assert r.request.headers.get("transfer-encoding") == ("chunked" if chunked else None)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_download_50mb_streams_the_pattern(client, chunked):
    n = 50 * MB
    url = f"/download?bytes={n}" + ("&chunked=1" if chunked else "")
    with client.stream("GET", url) as r:
        assert r.status_code == 200
        if chunked:
            assert r.headers["transfer-encoding"] == "chunked"
        else:
            assert r.headers["content-length"] == str(n)
        size = crc = 0
        for piece in r.iter_raw():
            size += len(piece)
            crc = zlib.crc32(piece, crc)
    assert size == n
    assert crc == expected_crc(n) == int(r.headers["x-crc32"])


@pytest.mark.parametrize("n", [0, 1, 255, 65536, 64 * 65536, 64 * 65536 + 1, 300 * MB + 7])
def test_pattern_crc32_matches_the_bytes(n):
    assert pattern_crc32(n) == expected_crc(n)


@given(st.integers(min_value=0, max_value=8 * 2**20))
def test_pattern_crc32_property(n):
    assert pattern_crc32(n) == expected_crc(n)


def test_download_head_and_bad_size(client):
    r = client.head("/download?bytes=1000")
    assert (r.status_code, r.content, r.headers["content-length"]) == (200, b"", "1000")
    assert client.get("/download?bytes=-1").status_code == 400
    assert client.get("/download?bytes=lots").status_code == 400


@pytest.mark.parametrize("status", [204, 404, 418, 503])
def test_status_endpoint(client, status):
    r = client.get(f"/status/{status}")
    assert r.status_code == status
    assert r.headers["x-backend"] == "cp-1"
    if status == 204:
        assert "content-length" not in r.headers
    assert client.get("/status/99").status_code == 400


@pytest.mark.parametrize("query", ["", "?rst=1"])
def test_close_drops_the_connection_without_answer(client, query):
    with pytest.raises(httpx.TransportError):
        client.get(f"/close{query}")
    assert client.get("/").status_code == 200


def test_slow_answers_after_delay(client):
    t0 = time.monotonic()
    r = client.get("/slow?ms=300")
    assert r.status_code == 200
    assert time.monotonic() - t0 >= 0.29
    assert client.get("/slow?ms=nope").status_code == 400


def test_hang_never_answers(backend):
    with socket.create_connection((backend.host, backend.port), timeout=0.5) as sock:
        sock.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(TimeoutError):
            sock.recv(1)


def test_stats_counts_requests(client):
    for _ in range(5):
        client.get("/")
    doc = client.get("/stats").json()
    assert doc["name"] == "cp-1"
    assert doc["requests"] == 6


# --- connection handling --------------------------------------------------------------


def test_keep_alive_serves_many_requests_on_one_connection(client):
    before = client.get("/stats").json()["connections"]
    for path in ["/", "/echo", "/healthz", "/status/404", "/upload"] * 4:
        client.request("POST" if path == "/upload" else "GET", path, content=b"abc")
    assert client.get("/stats").json()["connections"] == before


def test_pipelined_requests_are_answered_in_order(backend):
    requests = (
        b"GET /slow?ms=200 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /echo?i=2 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n"
        b"GET /status/404 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /download?bytes=100000 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    got = exchange((backend.host, backend.port), requests, 6).done
    assert [status for status, _, _ in got] == [200, 200, 200, 404, 200, 200]
    assert got[0][2] == b"slept 200 ms\n"
    assert b'"query":"i=2"' in got[1][2]
    assert got[2][2] == b'{"bytes":3,"crc32":%d}\n' % zlib.crc32(b"abc")
    assert len(got[4][2]) == 100000
    assert got[5][2] == b"hello from cp-1\n"


def test_deep_pipeline_behind_a_slow_request(backend):
    # More queued requests than the server parses ahead: it must pause reading, not drop.
    n = 500
    data = b"GET /slow?ms=100 HTTP/1.1\r\nHost: x\r\n\r\n" + b"GET /echo HTTP/1.1\r\n\r\n" * n
    got = exchange((backend.host, backend.port), data, n + 1).done
    assert len(got) == n + 1
    assert all(status == 200 for status, _, _ in got)


@pytest.mark.parametrize(
    "garbage",
    [
        b"GARBAGE\r\n\r\n",
        b"\x00\xff\xfe binary \x01\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
    ],
)
def test_garbage_gets_400_and_close(backend, garbage):
    with socket.create_connection((backend.host, backend.port), timeout=5) as sock:
        sock.sendall(garbage)
        answer = read_until_eof(sock)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"\r\nConnection: close\r\n" in answer


def test_garbage_after_good_request_still_answers_the_good_one(backend):
    data = b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\nNOT HTTP AT ALL\r\n\r\n"
    with socket.create_connection((backend.host, backend.port), timeout=5) as sock:
        sock.sendall(data)
        answer = read_until_eof(sock)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"HTTP/1.1 400 " in answer


def test_oversized_target_and_headers_are_refused(backend):
    address = (backend.host, backend.port)
    long_target = b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n"
    assert exchange(address, long_target, 1).done[0][0] == 414
    big_headers = b"GET / HTTP/1.1\r\n" + b"X-Pad: " + b"p" * 70_000 + b"\r\n\r\n"
    assert exchange(address, big_headers, 1).done[0][0] == 431


def test_http10_closes_unless_keep_alive(backend):
    with socket.create_connection((backend.host, backend.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        answer = read_until_eof(sock)
    assert b"Connection: close" in answer
    assert answer.endswith(b"hello from cp-1\n")
    got = exchange(
        (backend.host, backend.port),
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" * 2,
        2,
    ).done
    assert [status for status, _, _ in got] == [200, 200]
    assert got[0][1]["connection"] == "keep-alive"


def test_half_closed_client_still_gets_its_answer(backend):
    with socket.create_connection((backend.host, backend.port), timeout=5) as sock:
        sock.sendall(b"GET /slow?ms=100 HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        answer = read_until_eof(sock)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"slept 100 ms\n")


def test_expect_100_continue(backend):
    with socket.create_connection((backend.host, backend.port), timeout=5) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"abc")
        assert b'"bytes":3' in sock.recv(1000)


def test_download_respects_a_slow_reader(backend):
    # A client that does not read must not make the server buffer the whole body.
    with socket.create_connection((backend.host, backend.port), timeout=5) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /download?bytes=1000000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)
        rss = psutil.Process(backend.pid).memory_info().rss
        assert rss < 150 * 2**20
        assert len(sock.recv(65536)) > 0
    with httpx.Client(base_url=backend.url, timeout=5) as c:
        assert c.get("/").status_code == 200


@settings(
    max_examples=150,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.binary(max_size=600) | st.builds(lambda b: b"GET /" + b, st.binary(max_size=200)))
def test_random_input_never_kills_the_server(backend, data):
    with socket.create_connection((backend.host, backend.port), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        try:
            read_until_eof(sock)
        except ConnectionResetError:
            pass
    assert backend.alive
    with socket.create_connection((backend.host, backend.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_until_eof(sock).endswith(b"hello from cp-1\n")


# --- the process helpers --------------------------------------------------------------


def test_restart_comes_back_on_the_same_port(backend):
    port = backend.port
    backend.kill()
    assert not backend.alive
    with pytest.raises(httpx.ConnectError):
        httpx.get(backend.url + "/", timeout=2)
    backend.restart()
    assert backend.port == port
    r = httpx.get(backend.url + "/stats", timeout=2)
    assert r.json()["requests"] == 1


def test_stop_is_graceful_and_context_manager_cleans_up(backend_factory):
    b = backend_factory("ctx")
    with b:
        assert httpx.get(b.url + "/", timeout=2).text == "hello from ctx\n"
    assert not b.alive
    assert b.returncode == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(b.url + "/", timeout=2)


def test_factory_starts_many_in_parallel(backend_factory):
    backends = backend_factory.many(3, zone="z2", prefix="p")
    names = set()
    for b in backends:
        r = httpx.get(b.url + "/", timeout=2)
        assert r.headers["x-zone"] == "z2"
        names.add(r.headers["x-backend"])
    assert names == {"p1", "p2", "p3"}
    assert len({b.port for b in backends}) == 3


def test_start_process_reports_output_when_it_dies():
    argv = [sys.executable, "-c", "import sys; print('about to fail'); sys.exit(3)"]
    with pytest.raises(ProcessError, match=r"(?s)status 3.*about to fail"):
        start_process(argv, r"never printed", timeout=5)


def test_start_process_times_out_with_output():
    argv = [sys.executable, "-c", "import time; print('working'); time.sleep(60)"]
    t0 = time.monotonic()
    with pytest.raises(ProcessError, match=r"(?s)not ready after.*working"):
        start_process(argv, r"ready", timeout=0.5)
    assert time.monotonic() - t0 < 5


def test_start_process_sees_ready_line_on_stderr_and_env():
    argv = [
        sys.executable,
        "-c",
        "import os, sys; print('up', os.environ['ZG_X'], file=sys.stderr)",
    ]
    proc = start_process(argv, r"up (?P<x>\w+)", timeout=5, env={"ZG_X": "yes"})
    assert proc.match["x"] == "yes"
    proc.kill()


def test_free_port_and_wait_port(backend):
    port = refused_port()  # held, not listening: nothing else can take it meanwhile
    assert free_port() != port
    with pytest.raises(TimeoutError):
        wait_port("127.0.0.1", port, timeout=0.2)
    wait_port(backend.host, backend.port, timeout=2)
