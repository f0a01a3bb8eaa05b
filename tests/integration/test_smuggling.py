"""Request smuggling and malformed requests, sent raw to a real `zonegate lb`.

Every request of the corpus must get 400 (505 for a bad version), the connection must
close, and the backend must not receive a request: its /stats counter, read over a
direct connection, moves only by the /stats request itself. Active health checks are
off so nothing else talks to the backend.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.lbharness import Lb, Topo, backend_requests, raw_exchange, start_lb
from tests.peers.processes import BackendProc, start_backend

pytestmark = pytest.mark.timeout(60)

H = b"Host: app.test\r\n"

CORPUS: dict[str, tuple[bytes, int]] = {
    "cl_and_te": (
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
        400,
    ),
    "te_and_cl": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
        b"0\r\n\r\n",
        400,
    ),
    "differing_duplicate_cl": (
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        400,
    ),
    "cl_list": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 4, 5\r\n\r\nabcde", 400),
    "cl_negative": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400),
    "cl_plus_sign": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +4\r\n\r\nabcd", 400),
    "te_chunked_then_gzip": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te_gzip": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\nabcd", 400),
    "te_two_fields_last_not_chunked": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: identity\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te_xchunked": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n", 400),
    "te_vertical_tab": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "invalid_chunk_size": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    "chunk_size_overflow": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
        b"10000000000000001\r\na\r\n0\r\n\r\n",
        400,
    ),
    "chunk_missing_crlf": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
        400,
    ),
    "obs_fold": (b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n", 400),
    "obs_fold_on_te": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "bare_lf_in_headers": (b"GET / HTTP/1.1\r\n" + H + b"X-A: a\nX-B: b\r\n\r\n", 400),
    "bare_lf_everywhere": (b"GET / HTTP/1.1\nHost: app.test\n\n", 400),
    "nul_in_header_value": (b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", 400),
    "nul_in_header_name": (b"GET / HTTP/1.1\r\n" + H + b"X-\x00A: a\r\n\r\n", 400),
    "bare_cr_in_header": (b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n", 400),
    "bare_cr_line_end": (b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\r\n\r\n", 400),
    "two_host_fields": (b"GET / HTTP/1.1\r\n" + H + b"Host: other.test\r\n\r\n", 400),
    "no_host_http11": (b"GET / HTTP/1.1\r\nX-A: a\r\n\r\n", 400),
    "te_in_http10": (
        b"POST / HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "space_before_colon": (b"GET / HTTP/1.1\r\nHost : app.test\r\n\r\n", 400),
    "space_before_colon_te": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "space_in_header_name": (b"GET / HTTP/1.1\r\n" + H + b"X A: a\r\n\r\n", 400),
    "http_2_0_request_line": (b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    "http_3_0_request_line": (b"GET / HTTP/3.0\r\n" + H + b"\r\n", 505),
    "http_0_9_request_line": (b"GET / HTTP/0.9\r\n" + H + b"\r\n", 505),
    "http_0_9_style": (b"GET /\r\n\r\n", 505),
    "lowercase_version": (b"GET / http/1.1\r\n" + H + b"\r\n", 400),
    "malformed_version": (b"GET / HTTP/1.x\r\n" + H + b"\r\n", 400),
    "target_not_origin_form": (b"GET app.test/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    "space_in_target": (b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400),
    "control_byte_in_method": (b"G\x01T / HTTP/1.1\r\n" + H + b"\r\n", 400),
    "header_without_colon": (b"GET / HTTP/1.1\r\n" + H + b"X-A a\r\n\r\n", 400),
    # issue 12 item 2: any coding but chunked alone would be lost when re-framed
    "te_gzip_chunked": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te_foo_chunked": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: foo, chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te_identity_chunked": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te_gzip_and_chunked_fields": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te_chunked_twice": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    # issue 12 item 3
    "absolute_form_userinfo": (b"GET http://user:pw@app.test/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    "absolute_form_other_scheme": (b"GET ftp://app.test/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    # issue 12 item 5: RFC 9112 §3.2
    "host_with_slash": (b"GET / HTTP/1.1\r\nHost: app.test/evil\r\n\r\n", 400),
    "host_with_space": (b"GET / HTTP/1.1\r\nHost: app.test evil.test\r\n\r\n", 400),
    "host_list": (b"GET / HTTP/1.1\r\nHost: app.test, evil.test\r\n\r\n", 400),
    "host_userinfo": (b"GET / HTTP/1.1\r\nHost: user@app.test\r\n\r\n", 400),
    # chunk extensions: BWS is fine (issue 12 item 6), bare CR/LF in them is not
    "chunk_ext_bare_lf": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
        b"3;a\nGET / HTTP/1.1\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    "extension_method_not_a_token": (b"FO(O / HTTP/1.1\r\n" + H + b"\r\n", 400),
    "smuggled_after_cl_zero_te": (
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nGET /\r\n0\r\n\r\n",
        400,
    ),
}


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
        .pool("web", [backend], health={"active": None})
        .listener(
            "web",
            limits={"request_line_bytes": 256, "header_bytes": 1024},
        )
    )
    with start_lb(tmp_path_factory.mktemp("smuggling"), topo) as lb:
        yield lb


def _status_of(reply: bytes) -> int:
    assert reply.startswith(b"HTTP/1.1 "), reply[:200]
    return int(reply[9:12])


def _assert_refused(lb: Lb, backend: BackendProc, data: bytes, want: int) -> bytes:
    before = backend_requests(backend)
    reply = raw_exchange(lb.port, data)
    after = backend_requests(backend)
    assert _status_of(reply) == want, reply[:300]
    # raw_exchange returned, so the LB closed the connection (it reads until EOF).
    assert b"connection: close" in reply.lower()
    assert reply.count(b"HTTP/1.1 ") == 1, reply
    assert after - before == 1, "the backend received a request"
    return reply


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_malformed_request_refused_and_not_forwarded(lb, backend, case):
    data, want = CORPUS[case]
    _assert_refused(lb, backend, data, want)


@pytest.mark.parametrize(
    "case",
    [
        "cl_and_te",
        "obs_fold",
        "two_host_fields",
        "bare_lf_in_headers",
        "invalid_chunk_size",
        "chunk_size_overflow",
        "http_2_0_request_line",
    ],
)
def test_malformed_request_pipelined_after_good_ones(lb, backend, case):
    """The valid requests before it are answered in order, then the error, then close.

    A pipelining client must not read the 400 as the answer to an earlier request.
    """
    data, want = CORPUS[case]
    good = b"GET /echo?n=%d HTTP/1.1\r\n" + H + b"\r\n"
    before = backend_requests(backend)
    reply = raw_exchange(lb.port, good % 1 + good % 2 + data)
    after = backend_requests(backend)
    statuses = [int(part[:3]) for part in reply.split(b"HTTP/1.1 ")[1:]]
    assert statuses == [200, 200, want], reply[:600]
    assert reply.index(b'"query":"n=1"') < reply.index(b'"query":"n=2"')
    assert after - before == 3, "only the good requests reach the backend"


def test_good_request_still_served(lb, backend):
    reply = raw_exchange(lb.port, b"GET / HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert b"hello from solo" in reply


def test_request_line_over_limit_414(lb, backend):
    target = b"/" + b"a" * 300
    _assert_refused(lb, backend, b"GET " + target + b" HTTP/1.1\r\n" + H + b"\r\n", 414)


def test_request_line_over_limit_without_end_414(lb, backend):
    """A target that never ends is refused as soon as it is too long."""
    target = b"/" + b"a" * 2000
    _assert_refused(lb, backend, b"GET " + target, 414)


def test_header_block_over_limit_431(lb, backend):
    headers = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"v" * 100) for i in range(12))
    _assert_refused(lb, backend, b"GET / HTTP/1.1\r\n" + H + headers + b"\r\n", 431)


def test_single_huge_header_without_end_431(lb, backend):
    """One header line that never ends is refused once it passes the limit."""
    _assert_refused(lb, backend, b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"v" * 5000, 431)


def test_headers_just_under_limits_pass(lb, backend):
    headers = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"v" * 100) for i in range(7))
    target = b"/" + b"a" * 200
    reply = raw_exchange(
        lb.port, b"GET " + target + b" HTTP/1.1\r\n" + H + headers + b"Connection: close\r\n\r\n"
    )
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:300]
