"""The pure HTTP/1.1 head checks and builders of the proxy."""

from __future__ import annotations

import httptools
import pytest
from hypothesis import given
from hypothesis import strategies as st

from zonegate.errors import HttpParseError
from zonegate.lb import http1
from zonegate.lb.http1 import (
    BODY_CHUNKED,
    BODY_LENGTH,
    BODY_NONE,
    BODY_UNTIL_CLOSE,
    ChunkedDecoder,
    ResponseHead,
    build_request_head,
    build_response_head,
    check_request,
    check_response,
    simple_response,
)


def req(headers, *, method=b"GET", target=b"/", version="1.1", keep_alive=True):
    return check_request(method, target, version, headers, keep_alive)


def test_plain_get():
    r = req([(b"Host", b"API.example.test:8080")])
    assert r.host == "api.example.test"
    assert r.path == b"/"
    assert r.body == BODY_NONE
    assert r.idempotent


def test_path_excludes_query_and_target_keeps_it():
    r = req([(b"Host", b"a")], target=b"/x/y?z=1")
    assert r.path == b"/x/y"
    assert r.target == b"/x/y?z=1"


@pytest.mark.parametrize(
    ("headers", "version", "hint"),
    [
        ([(b"Host", b"a"), (b"Host", b"b")], "1.1", 400),
        ([], "1.1", 400),
        ([(b"Host", b"a"), (b"Transfer-Encoding", b"chunked")], "1.0", 400),
        ([(b"Host", b"a")], "2.0", 505),
        ([(b"Host", b"a")], "0.9", 505),
    ],
)
def test_rejections(headers, version, hint):
    with pytest.raises(HttpParseError) as e:
        req(headers, version=version)
    assert e.value.hint == hint


def test_connect_refused():
    with pytest.raises(HttpParseError) as e:
        req([(b"Host", b"a:443")], method=b"CONNECT", target=b"a:443")
    assert e.value.hint == 405


def test_http10_without_host_is_fine():
    r = req([], version="1.0", keep_alive=False)
    assert r.host == ""
    assert r.http10


def test_absolute_form_authority_wins():
    r = req([(b"Host", b"other")], target=b"http://api.example.test:80/v1?q")
    assert r.host == "api.example.test"
    assert r.target == b"/v1?q"
    assert (b"Host", b"api.example.test:80") in r.headers
    assert (b"Host", b"other") not in r.headers


def test_hop_by_hop_and_connection_named_fields_removed():
    r = req(
        [
            (b"Host", b"a"),
            (b"Connection", b"keep-alive, X-Secret"),
            (b"Keep-Alive", b"timeout=5"),
            (b"TE", b"trailers"),
            (b"Upgrade", b"websocket"),
            (b"X-Secret", b"1"),
            (b"Proxy-Authorization", b"x"),
            (b"X-Kept", b"yes"),
        ]
    )
    names = [k.lower() for k, _ in r.headers]
    assert names == [b"host", b"x-kept"]


def test_upstream_head_has_forwarding_fields_and_framing():
    r = req(
        [
            (b"Host", b"a"),
            (b"X-Forwarded-For", b"9.9.9.9"),
            (b"Via", b"1.0 edge"),
            (b"Content-Length", b"5"),
        ],
        method=b"POST",
    )
    assert r.body == BODY_LENGTH
    head = build_request_head(
        r, client_ip=b"10.0.0.1", proto=b"http", forwarded=True, via=b"1.1 zonegate"
    )
    assert head.startswith(b"POST / HTTP/1.1\r\n")
    assert b"X-Forwarded-For: 9.9.9.9, 10.0.0.1\r\n" in head
    assert b"X-Forwarded-Proto: http\r\n" in head
    assert b"Via: 1.0 edge, 1.1 zonegate\r\n" in head
    assert head.count(b"Content-Length: 5\r\n") == 1
    assert head.endswith(b"\r\n\r\n")


def test_forwarding_off_keeps_client_xff_untouched():
    r = req([(b"Host", b"a"), (b"X-Forwarded-For", b"9.9.9.9")])
    head = build_request_head(r, client_ip=b"10.0.0.1", proto=b"http", forwarded=False, via=b"v")
    assert b"X-Forwarded-For: 9.9.9.9\r\n" in head
    assert b"Via" not in head


def test_chunked_request_is_reframed_chunked():
    r = req([(b"Host", b"a"), (b"Transfer-Encoding", b"chunked")], method=b"PUT")
    assert r.body == BODY_CHUNKED
    head = build_request_head(r, client_ip=b"1", proto=b"http", forwarded=True, via=b"v")
    assert head.count(b"Transfer-Encoding: chunked\r\n") == 1


def test_post_without_body_gets_zero_length():
    r = req([(b"Host", b"a")], method=b"POST")
    head = build_request_head(r, client_ip=b"1", proto=b"http", forwarded=False, via=b"v")
    assert b"Content-Length: 0\r\n" in head


@pytest.mark.parametrize(
    ("status", "method", "headers", "body", "keep"),
    [
        (200, b"GET", [(b"Content-Length", b"3")], BODY_LENGTH, True),
        (200, b"GET", [(b"Transfer-Encoding", b"chunked")], BODY_CHUNKED, True),
        (200, b"GET", [(b"Transfer-Encoding", b"gzip")], BODY_UNTIL_CLOSE, False),
        (200, b"GET", [], BODY_UNTIL_CLOSE, False),
        (200, b"HEAD", [(b"Content-Length", b"30")], BODY_NONE, True),
        (204, b"GET", [], BODY_NONE, True),
        (304, b"GET", [(b"Content-Length", b"30")], BODY_NONE, True),
    ],
)
def test_response_framing(status, method, headers, body, keep):
    r = check_response(status, headers, request_method=method, keep_alive=True)
    assert r.body == body
    assert r.upstream_keep_alive is keep


def test_head_response_keeps_content_length():
    r = check_response(200, [(b"Content-Length", b"30")], request_method=b"HEAD", keep_alive=True)
    head, chunked = build_response_head(
        r, b"OK", client_keep_alive=True, http10_client=False, extra=[]
    )
    assert b"Content-Length: 30\r\n" in head
    assert not chunked


def test_response_hop_by_hop_removed_and_extra_added():
    r = check_response(
        200,
        [
            (b"Connection", b"close, X-Hop"),
            (b"X-Hop", b"1"),
            (b"Keep-Alive", b"5"),
            (b"X-App", b"2"),
            (b"Content-Length", b"0"),
        ],
        request_method=b"GET",
        keep_alive=True,
    )
    head, _ = build_response_head(
        r, b"OK", client_keep_alive=True, http10_client=False, extra=[(b"X-Zonegate-Version", b"7")]
    )
    assert b"X-Hop" not in head
    assert b"Keep-Alive" not in head
    assert b"X-App: 2\r\n" in head
    assert b"X-Zonegate-Version: 7\r\n" in head
    assert b"Connection" not in head


def test_until_close_body_goes_chunked_to_http11_and_closes_http10():
    r = ResponseHead(200, [], BODY_UNTIL_CLOSE, 0, False)
    head, chunked = build_response_head(
        r, b"OK", client_keep_alive=True, http10_client=False, extra=[]
    )
    assert chunked
    assert b"Transfer-Encoding: chunked\r\n" in head
    head, chunked = build_response_head(
        r, b"OK", client_keep_alive=True, http10_client=True, extra=[]
    )
    assert not chunked
    assert b"Connection: close\r\n" in head


def test_simple_response_is_well_formed():
    data = simple_response(503, "no backend", close=True)

    class P:
        body = b""
        done = False

        def on_body(self, b):
            self.body += b

        def on_message_complete(self):
            self.done = True

    p = P()
    parser = httptools.HttpResponseParser(p)
    parser.feed_data(data)
    assert parser.get_status_code() == 503
    assert p.done
    assert b"no backend" in p.body


header_name = st.from_regex(rb"\A[A-Za-z][A-Za-z0-9-]{0,20}\Z", fullmatch=True)
header_value = st.from_regex(rb"\A[ -~]{0,40}\Z", fullmatch=True).map(bytes.strip)


@given(st.lists(st.tuples(header_name, header_value), max_size=12))
def test_built_head_reparses_and_never_forwards_hop_by_hop(extra):
    headers = [(b"Host", b"h"), *[(k, v) for k, v in extra if k.lower() != b"host"]]
    try:
        r = req(headers)
    except HttpParseError:
        return
    head = build_request_head(
        r, client_ip=b"1.2.3.4", proto=b"http", forwarded=True, via=b"1.1 zonegate"
    )

    class P:
        def __init__(self):
            self.headers = []
            self.done = False

        def on_header(self, k, v):
            self.headers.append((k.lower(), v))

        def on_message_complete(self):
            self.done = True

    p = P()
    try:
        httptools.HttpRequestParser(p).feed_data(head)
    except httptools.HttpParserUpgrade:
        assert r.upgrade is not None
    assert p.done
    names = {k for k, _ in p.headers}
    hop = {b"connection", b"keep-alive", b"te", b"upgrade", b"transfer-encoding", b"trailer"}
    if r.upgrade is not None:
        # An Upgrade request keeps its Upgrade, with our own `Connection: Upgrade`.
        hop -= {b"connection", b"upgrade"}
        assert (b"connection", b"Upgrade") in p.headers
    assert not names & hop
    assert (b"x-forwarded-for", b"1.2.3.4") in p.headers or any(
        k == b"x-forwarded-for" and v.endswith(b"1.2.3.4") for k, v in p.headers
    )


@pytest.mark.parametrize(
    ("message", "status"),
    [
        ("Invalid HTTP version", 505),
        ("Invalid minor version", 400),
        ("Duplicate Content-Length", 400),
    ],
)
def test_parser_error_status(message, status):
    from zonegate.lb.http1 import parser_error_status

    assert parser_error_status(message) == status


# request bodies: ChunkedDecoder (issue 12 items 1 and 6)


def _decode_all(data: bytes, splits: list[int] | None = None):
    d = ChunkedDecoder()
    out = []
    pieces = [data]
    if splits:
        cuts = sorted({min(c, len(data)) for c in splits})
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    rest = b""
    for piece in pieces:
        if d.done:
            rest += piece
            continue
        parts, pos = d.feed(piece)
        out += parts
        if d.done:
            rest += piece[pos:]
    return b"".join(out), d.done, rest


def test_chunked_body_ends_exactly_where_it_ends():
    body, done, rest = _decode_all(b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n")
    assert (body, done, rest) == (b"abc", True, b"GET / HTTP/1.1\r\n")


@pytest.mark.parametrize(
    "line",
    [b"3 ; a=b", b"3;a=b", b"3\t;\ta\t=\tb", b"3 ;a", b'3 ; a="x y" ; c', b"3 ", b"0003"],
)
def test_chunk_extensions_with_bws_accepted(line):
    """RFC 9112 §7.1.1: BWS around ";" and "=" (llhttp refuses `3 ; a=b`)."""
    body, done, _ = _decode_all(line + b"\r\nabc\r\n0\r\n\r\n")
    assert (body, done) == (b"abc", True)


@pytest.mark.parametrize(
    "data",
    [
        b"zz\r\nabc\r\n0\r\n\r\n",  # not hex
        b"10000000000000001\r\na\r\n0\r\n\r\n",  # 17 digits: overflow
        b"3\r\nabcX\r\n0\r\n\r\n",  # no CRLF after the data
        b"3\nabc\r\n0\r\n\r\n",  # bare LF
        b"3;a\nb\r\nabc\r\n0\r\n\r\n",  # bare LF in an extension
        b"3;a\rb\r\nabc\r\n0\r\n\r\n",  # bare CR in an extension
        b"3;=b\r\nabc\r\n0\r\n\r\n",  # no extension name
        b"-3\r\nabc\r\n0\r\n\r\n",
        b"0x3\r\nabc\r\n0\r\n\r\n",
        b" 3\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabc\r\n0\r\n folded: x\r\n\r\n",  # obs-fold in a trailer
        b"3\r\nabc\r\n0\r\nX: a\x00b\r\n\r\n",
    ],
)
def test_malformed_chunked_body_refused(data):
    with pytest.raises(HttpParseError):
        _decode_all(data)


def test_chunked_trailers_checked_and_dropped():
    body, done, rest = _decode_all(b"1\r\na\r\n0\r\nX-Sum: 1\r\nY: 2\r\n\r\nnext")
    assert (body, done, rest) == (b"a", True, b"next")


def test_overlong_size_line_refused_without_end():
    d = ChunkedDecoder(max_line=64)
    with pytest.raises(HttpParseError):
        d.feed(b"3;" + b"a" * 100)


@given(
    st.lists(st.binary(min_size=1, max_size=40), max_size=6),
    st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    st.sampled_from([b"", b" ; a=b", b";x", b'\t;q="v"']),
    st.binary(max_size=20),
)
def test_chunked_decoder_round_trip_any_split(chunks, splits, ext, after):
    """Encoded chunks come back whole however the stream is cut, and not a byte more."""
    wire = b"".join(b"%x%b\r\n%b\r\n" % (len(c), ext, c) for c in chunks) + b"0\r\n\r\n"
    body, done, rest = _decode_all(wire + after, splits)
    assert done
    assert body == b"".join(chunks)
    assert rest == after


@given(st.binary(max_size=60))
def test_chunked_decoder_never_accepts_what_llhttp_refuses_as_framing(data):
    """On any bytes it either refuses, waits, or agrees with llhttp on the body."""
    try:
        body, done, _ = _decode_all(data)
    except HttpParseError:
        return
    if not done:
        return

    class P:
        def __init__(self):
            self.body = b""
            self.done = False

        def on_body(self, b):
            self.body += b

        def on_message_complete(self):
            self.done = True

    p = P()
    parser = httptools.HttpRequestParser(p)
    parser.set_dangerous_leniencies(lenient_spaces_after_chunk_size=True)
    head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    try:
        parser.feed_data(head + data)
    except httptools.HttpParserError:
        return  # llhttp is stricter on extensions (BWS after ";")
    if p.done:
        assert p.body == body


# issue 12 items 2-6: head checks


@pytest.mark.parametrize(
    "fields",
    [
        [b"gzip, chunked"],
        [b"foo, chunked"],
        [b"identity, chunked"],
        [b"gzip", b"chunked"],
        [b"chunked, chunked"],
        [b"chunked", b"chunked"],
        [b""],
    ],
)
def test_transfer_coding_other_than_chunked_alone_refused(fields):
    """docs/lb.md: 400 for any coding but chunked alone (it would be lost when re-framed)."""
    headers = [(b"Host", b"a"), *[(b"Transfer-Encoding", f) for f in fields]]
    with pytest.raises(HttpParseError) as e:
        req(headers, method=b"POST")
    assert e.value.hint == 400


@pytest.mark.parametrize("value", [b"chunked", b"Chunked", b" chunked ", b"chunked,"])
def test_chunked_alone_accepted(value):
    r = req([(b"Host", b"a"), (b"Transfer-Encoding", value)], method=b"POST")
    assert r.body == BODY_CHUNKED


@pytest.mark.parametrize(
    ("target", "host", "origin", "host_field"),
    [
        (b"http://h.test?q=/p", "h.test", b"/?q=/p", b"h.test"),
        (b"http://h.test#frag/x", "h.test", b"/", b"h.test"),
        (b"HTTP://h.test/", "h.test", b"/", b"h.test"),
        (b"hTTpS://H.test:8443/a/b?c=d", "h.test", b"/a/b?c=d", b"H.test:8443"),
        (b"http://[::1]:8080/v", "[::1]", b"/v", b"[::1]:8080"),
    ],
)
def test_absolute_form_authority_ends_at_slash_query_or_fragment(target, host, origin, host_field):
    r = req([(b"Host", b"other.test")], target=target)
    assert r.host == host
    assert r.target == origin
    assert [v for k, v in r.headers if k.lower() == b"host"] == [host_field]


@pytest.mark.parametrize(
    "target",
    [
        b"http://user:pw@h.test/",
        b"http://user@h.test/",
        b"http:///p",
        b"http:/p",
        b"ftp://h.test/",
        b"http://h.test evil/",
        b"http://h.test,evil.test/",
        b"http://[1:2:3]/",  # urlsplit itself refuses it (ValueError)
        b"http://[::1/",
    ],
)
def test_absolute_form_without_valid_authority_refused(target):
    with pytest.raises(HttpParseError) as e:
        req([(b"Host", b"h.test")], target=target)
    assert e.value.hint == 400


def test_connection_listing_never_drops_host_or_forwarding_fields():
    r = req(
        [
            (b"Host", b"h.test"),
            (b"Connection", b"Host, X-Forwarded-For, X-Forwarded-Proto, Via, X-Secret"),
            (b"X-Forwarded-For", b"9.9.9.9"),
            (b"Via", b"1.0 edge"),
            (b"X-Secret", b"1"),
        ]
    )
    head = build_request_head(
        r, client_ip=b"10.0.0.1", proto=b"http", forwarded=True, via=b"1.1 zonegate"
    )
    assert b"\r\nHost: h.test\r\n" in head
    assert b"X-Forwarded-For: 9.9.9.9, 10.0.0.1\r\n" in head
    assert b"X-Forwarded-Proto: http\r\n" in head
    assert b"Via: 1.0 edge, 1.1 zonegate\r\n" in head
    assert b"X-Secret" not in head


@pytest.mark.parametrize(
    "host",
    [
        b"h.test/evil",
        b"h.test evil.test",
        b"h.test, evil.test",
        b"h.test,evil.test",
        b"user@h.test",
        b"h.test:80x",
        b"h.test:80:90",
        b"[::1",
        b"[zz::1]",
        b"h.test\\evil",
        b'h"test',
    ],
)
def test_invalid_host_refused(host):
    """RFC 9112 §3.2: a Host with an invalid value is a 400, not forwarded."""
    with pytest.raises(HttpParseError) as e:
        req([(b"Host", host)])
    assert e.value.hint == 400


@pytest.mark.parametrize(
    ("host", "name"),
    [
        (b"h.test", "h.test"),
        (b"H.Test.:8080", "h.test"),
        (b"h.test:", "h.test"),
        (b"127.0.0.1:80", "127.0.0.1"),
        (b"[2001:DB8::1]:443", "[2001:db8::1]"),
        (b"xn--bcher-kva.test", "xn--bcher-kva.test"),
        (b"a_b-c~d.test", "a_b-c~d.test"),
        (b"", ""),
    ],
)
def test_valid_host_normalized(host, name):
    assert req([(b"Host", host)]).host == name


@pytest.mark.parametrize(("version", "http10"), [("1.1", False), ("1.2", False), ("1.9", False)])
def test_higher_minor_version_processed_as_11(version, http10):
    """RFC 9110 §2.5: HTTP/1.2 is read as 1.1 (we answer in HTTP/1.1)."""
    r = req([(b"Host", b"a")], version=version)
    assert r.http10 is http10


@pytest.mark.parametrize("method", [b"FOO", b"BAR-baz", b"get", b"X!#$%&'*+.^_`|~"])
def test_extension_methods_are_tokens(method):
    assert http1.is_token(method)
    r = req([(b"Host", b"a")], method=method)
    assert r.method == method
    assert not r.idempotent  # never retried after a byte was sent
    head = build_request_head(r, client_ip=b"1", proto=b"http", forwarded=False, via=b"v")
    assert head.startswith(method + b" / HTTP/1.1\r\n")


@pytest.mark.parametrize("method", [b"", b"G T", b"G\x01T", b"G(T", b"GET:"])
def test_non_token_methods(method):
    assert not http1.is_token(method)


def test_upgrade_needs_connection_upgrade_and_http11():
    up = [(b"Host", b"a"), (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")]
    assert req(up).upgrade == b"websocket"
    assert req(up[:2]).upgrade is None
    assert req(up, version="1.0", keep_alive=False).upgrade is None


def test_switch_head_relays_the_backends_101():
    head = http1.build_switch_head(
        b"Switching Protocols",
        [
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade, X-Hop"),
            (b"X-Hop", b"1"),
            (b"Sec-WebSocket-Accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            (b"Keep-Alive", b"5"),
        ],
        extra=[(b"X-Zonegate-Version", b"3")],
    )
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert head.endswith(b"\r\n\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head
    assert b"Connection: Upgrade\r\nUpgrade: websocket\r\n" in head
    assert b"X-Zonegate-Version: 3\r\n" in head
    assert b"X-Hop" not in head
    assert b"Keep-Alive" not in head


def test_upgrade_request_head_keeps_upgrade_and_body_framing():
    r = req(
        [
            (b"Host", b"a"),
            (b"Upgrade", b"h2c"),
            (b"Connection", b"Upgrade, HTTP2-Settings"),
            (b"HTTP2-Settings", b"AAMAAABkAAQCAAAAAAIAAAAA"),
            (b"Content-Length", b"5"),
        ],
        method=b"POST",
    )
    head = build_request_head(r, client_ip=b"1", proto=b"http", forwarded=True, via=b"v")
    assert b"Content-Length: 5\r\n" in head
    assert b"Connection: Upgrade\r\nUpgrade: h2c\r\n" in head
    assert b"HTTP2-Settings" not in head  # listed in Connection: hop-by-hop
