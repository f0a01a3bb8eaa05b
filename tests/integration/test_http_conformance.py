"""What the origin receives for requests HAProxy and nginx accept (issue 12 items 3-6).

Each request goes raw through a real `zonegate lb` to an h11 origin that records what
it read (tests/integration/origin.py): absolute-form targets, Connection listings that
name Host or the forwarding fields, extension methods, HTTP/1.2, BWS in chunk
extensions, and heads cut at awkward places.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests.integration.lbharness import Lb, Topo, raw_exchange, start_lb
from tests.integration.origin import Received, RecordingOrigin

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def origin() -> Iterator[RecordingOrigin]:
    with RecordingOrigin() as o:
        yield o


@pytest.fixture(scope="module")
def lb(tmp_path_factory, origin) -> Iterator[Lb]:
    topo = Topo().pool("web", [origin.address], health={"active": None}).listener("web")
    with start_lb(tmp_path_factory.mktemp("conformance"), topo) as lb:
        yield lb


def _through(lb: Lb, origin: RecordingOrigin, data: bytes, want: int = 1):
    """Send raw bytes; return the reply and the requests the origin read meanwhile."""
    before = len(origin.requests)
    reply = raw_exchange(lb.port, data)
    deadline = time.monotonic() + 5
    while len(origin.requests) < before + want and time.monotonic() < deadline:
        time.sleep(0.01)
    got: list[Received] = origin.requests[before:]
    assert not [r.error for r in got if r.error], origin.errors
    return reply, got


CLOSE = b"Connection: close\r\n"


@pytest.mark.parametrize(
    ("target", "path", "host"),
    [
        (b"http://h.test?q=/p", b"/?q=/p", b"h.test"),
        (b"HTTP://h.test/a", b"/a", b"h.test"),
        (b"http://h.test:8080/a/b?c=d", b"/a/b?c=d", b"h.test:8080"),
        (b"http://h.test/p#frag", b"/p", b"h.test"),
    ],
)
def test_absolute_form_target_and_host(lb, origin, target, path, host):
    """Item 3: the authority ends at / ? #; it replaces Host (RFC 9112 §3.2.2)."""
    reply, got = _through(
        lb, origin, b"GET " + target + b" HTTP/1.1\r\nHost: other.test\r\n" + CLOSE + b"\r\n"
    )
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
    assert [(r.target, r.field(b"host")) for r in got] == [(path, [host])]


def test_absolute_form_userinfo_never_reaches_host(lb, origin):
    reply, got = _through(
        lb, origin, b"GET http://user:pw@h.test/ HTTP/1.1\r\nHost: h.test\r\n\r\n", want=0
    )
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:200]
    assert got == []


def test_connection_listing_cannot_strip_host_or_forwarding_fields(lb, origin):
    """Item 4: Host, X-Forwarded-For, X-Forwarded-Proto and Via always reach the origin."""
    reply, got = _through(
        lb,
        origin,
        b"GET /c HTTP/1.1\r\nHost: h.test\r\n"
        b"Connection: close, Host, X-Forwarded-For, X-Forwarded-Proto, Via, X-Secret\r\n"
        b"X-Forwarded-For: 203.0.113.9\r\nVia: 1.0 edge\r\nX-Secret: s\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
    (r,) = got
    assert r.field(b"host") == [b"h.test"]
    assert r.field(b"x-forwarded-for") == [b"203.0.113.9, 127.0.0.1"]
    assert r.field(b"x-forwarded-proto") == [b"http"]
    assert r.field(b"via") == [b"1.0 edge, 1.1 zonegate"]
    assert r.field(b"x-secret") == []


@pytest.mark.parametrize(
    "host", [b"h.test/evil", b"h.test evil.test", b"h.test, evil.test", b"user@h.test"]
)
def test_invalid_host_400_not_forwarded(lb, origin, host):
    """Item 5 (RFC 9112 §3.2; nginx refuses them too)."""
    reply, got = _through(lb, origin, b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n", want=0)
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:200]
    assert b"connection: close" in reply.lower()
    assert got == []


def test_extension_methods_forwarded_even_pipelined(lb, origin):
    """Item 6: methods are tokens (RFC 9110 §9.1), known to llhttp or not."""
    reply, got = _through(
        lb,
        origin,
        b"FOO /a HTTP/1.1\r\nHost: h.test\r\n\r\n"
        b"BAR-baz /b HTTP/1.1\r\nHost: h.test\r\nContent-Length: 3\r\n\r\nxyz"
        b"GET /c HTTP/1.1\r\nHost: h.test\r\n\r\n"
        b"PURGE /d HTTP/1.1\r\nHost: h.test\r\n" + CLOSE + b"\r\n",
        want=4,
    )
    assert reply.count(b"HTTP/1.1 200 ") == 4, reply
    assert [(r.method, r.target, r.body) for r in got] == [
        (b"FOO", b"/a", b""),
        (b"BAR-baz", b"/b", b"xyz"),
        (b"GET", b"/c", b""),
        (b"PURGE", b"/d", b""),
    ]
    assert reply.index(b"ok FOO /a") < reply.index(b"ok BAR-baz /b") < reply.index(b"ok PURGE")


def test_http_1_2_processed_as_1_1(lb, origin):
    """Item 6: a higher minor version is read as 1.1 (RFC 9110 §2.5), answered in 1.1."""
    reply, got = _through(lb, origin, b"GET /v HTTP/1.2\r\nHost: h.test\r\n" + CLOSE + b"\r\n")
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
    assert [(r.target, r.http_version) for r in got] == [(b"/v", b"1.1")]


@pytest.mark.parametrize("size_line", [b"3 ; a=b", b"3\t;a = b", b'3 ;a="x y"', b"3;a"])
def test_bws_before_chunk_extension_accepted(lb, origin, size_line):
    """Item 6: BWS around ";" and "=" in a chunk extension (RFC 9112 §7.1.1)."""
    reply, got = _through(
        lb,
        origin,
        b"POST /chunks HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n"
        + CLOSE
        + b"\r\n"
        + size_line
        + b"\r\nabc\r\n2 ; last\r\nde\r\n0\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
    assert [(r.target, r.body) for r in got] == [(b"/chunks", b"abcde")]


def test_heads_cut_anywhere_are_read_whole(lb, origin):
    """The proxy finds each head's end itself: one byte per read, extension method,
    the end of a head straddling two reads, then a pipelined request."""
    data = (
        b"FOO /split HTTP/1.1\r\nHost: h.test\r\nContent-Length: 2\r\n\r\nhi"
        b"GET /next HTTP/1.1\r\nHost: h.test\r\n" + CLOSE + b"\r\n"
    )
    before = len(origin.requests)
    with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(data)):
            s.sendall(data[i : i + 1])
            time.sleep(0.002)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.count(b"HTTP/1.1 200 ") == 2, reply
    got = origin.requests[before:]
    assert [(r.method, r.target, r.body) for r in got] == [
        (b"FOO", b"/split", b"hi"),
        (b"GET", b"/next", b""),
    ]


def test_chunked_bodies_pipelined_end_where_they_end(lb, origin):
    """A request that looks like the end of a chunked body is the next request."""
    reply, got = _through(
        lb,
        origin,
        b"POST /one HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\n0\r\n\r\n\r\n3;x=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n"
        b"GET /two HTTP/1.1\r\nHost: h.test\r\n" + CLOSE + b"\r\n",
        want=2,
    )
    assert reply.count(b"HTTP/1.1 200 ") == 2, reply
    assert [(r.target, r.body) for r in got] == [(b"/one", b"0\r\n\r\nabc"), (b"/two", b"")]


def test_bad_chunk_after_the_request_was_sent_400_and_backend_unblamed(lb, origin):
    """Bad client framing mid-body: the client gets 400; the origin sees an abandoned
    request (its connection closed), never a next request read as that body."""
    before = len(origin.requests)
    with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as s:
        s.sendall(
            b"POST /bad HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
        )
        time.sleep(0.2)  # the request is on its way to the origin
        s.sendall(b"3 x\r\nGET /hidden HTTP/1.1\r\n\r\n")
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400 "), reply
    nxt, _ = _through(lb, origin, b"GET /after HTTP/1.1\r\nHost: h.test\r\n" + CLOSE + b"\r\n")
    assert nxt.startswith(b"HTTP/1.1 200 ")
    targets = origin.targets()[before:]
    assert b"/hidden" not in targets
    assert targets[-1] == b"/after"
    assert lb.backend("web", origin.address)["available"]
