"""HTTP/1.1 message heads and request bodies for a reverse proxy (pure: bytes in, bytes out).

httptools (llhttp in strict mode) parses request heads and already refuses the classic
smuggling vectors: Content-Length with Transfer-Encoding, duplicate Content-Length,
a Transfer-Encoding whose last coding is not chunked, obs-fold, bare LF or CR, and NUL
or other control bytes in the header block. This module adds the checks llhttp leaves
to the application (RFC 9112 §3.2, §6.1, RFC 9110 §7.6.1) and builds the heads we send
on: hop-by-hop fields removed, the body re-framed by us, forwarding fields added.

Request bodies are framed here, not by llhttp: the proxy feeds llhttp one head at a
time and reads the body itself (Content-Length by count, chunked with
`ChunkedDecoder`). So the end of every request is known exactly, whatever llhttp does
after an Upgrade head (it skips the body), and the chunk grammar is RFC 9112 §7.1's,
BWS included, which llhttp refuses.

Accepts: HTTP/1.0 and HTTP/1.x (x >= 1, processed as 1.1, RFC 9110 §2.5) requests in
origin-form or absolute-form, with any method token (RFC 9110 §9.1).
Rejects (HttpParseError with .hint): other versions (505), no Host in HTTP/1.1, more
than one Host or an invalid one (400), a Transfer-Encoding other than exactly
`chunked` (400), Transfer-Encoding in HTTP/1.0 (400), userinfo or another scheme than
http/https in an absolute-form target (400), CONNECT (405).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from zonegate.errors import HttpParseError

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
"""Fields that describe one connection and are never forwarded (RFC 9110 §7.6.1)."""

# Fields we always replace with our own values.
_REPLACED = frozenset({b"x-forwarded-proto", b"content-length"})

# Fields a Connection listing never removes: Host (RFC 9112 §3.2 requires it) and the
# forwarding fields the proxy adds or extends (RFC 9110 §7.6.1 lets a sender list any
# field; honouring it for these would let a client strip what the backend relies on).
_NEVER_DROPPED = frozenset({b"host", b"x-forwarded-for", b"x-forwarded-proto", b"via"})

LLHTTP_METHODS = frozenset(
    b"DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE COPY LOCK MKCOL MOVE PROPFIND "
    b"PROPPATCH SEARCH UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE "
    b"M-SEARCH NOTIFY SUBSCRIBE UNSUBSCRIBE PATCH PURGE MKCALENDAR LINK UNLINK SOURCE "
    b"QUERY".split()
)
"""The methods llhttp knows; any other token is passed to it as GET and restored."""
METHOD_PLACEHOLDER = b"GET"
MAX_METHOD = 64
"""Longest extension method accepted (a bound, not a protocol limit)."""

_TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_TOKEN = re.compile(_TCHAR + rb"+")
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
# RFC 9112 §7.1: chunk-size [ chunk-ext ] CRLF, chunk-ext = *( BWS ";" BWS name
# [ BWS "=" BWS value ] ). Trailing whitespace before CRLF is tolerated (HAProxy and
# nginx do too); sizes over 16 hex digits are an overflow.
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[ \t]*%b+(?:[ \t]*=[ \t]*(?:%b+|%b))?)*[ \t]*\r\n"
    % (_TCHAR, _TCHAR, _QUOTED)
)
# A trailer field line (RFC 9112 §7.1.2): no obs-fold, no control bytes but HTAB.
_TRAILER_LINE = re.compile(rb"%b+:[\t \x21-\x7e\x80-\xff]*\r\n" % _TCHAR)
# uri-host [ ":" port ] (RFC 9110 §7.2, RFC 3986 §3.2.2) without the comma, which only
# a list of hosts would carry; an IP-literal is checked by ipaddress.
_REG_NAME_PORT = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+;=]|%[0-9A-Fa-f]{2})*(?::[0-9]*)?")
_IP_LITERAL_PORT = re.compile(rb"\[([0-9A-Fa-f:.]+)\](?::[0-9]*)?")
_SCHEME = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*:")

IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})

BODY_NONE = 0
BODY_LENGTH = 1
BODY_CHUNKED = 2
BODY_UNTIL_CLOSE = 3

REASONS = {
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}


@dataclass(slots=True)
class RequestHead:
    """A checked client request head, ready to route and forward."""

    method: bytes
    target: bytes
    host: str
    """Lower-case host without port ('' when HTTP/1.0 sent none)."""
    path: bytes
    headers: list[tuple[bytes, bytes]]
    """Forwardable end-to-end fields, names as received."""
    body: int
    """BODY_NONE, BODY_LENGTH or BODY_CHUNKED."""
    content_length: int
    keep_alive: bool
    http10: bool
    expect_continue: bool
    forwarded_for: bytes | None = None
    """X-Forwarded-For as the client sent it (joined), None when absent."""
    upgrade: bytes | None = None
    """The Upgrade field of a request asking to switch protocols (RFC 9110 §7.8):
    HTTP/1.1, Upgrade present and `upgrade` listed in Connection. None otherwise."""

    @property
    def idempotent(self) -> bool:
        return self.method in IDEMPOTENT_METHODS

    def header(self, name: bytes) -> bytes | None:
        """The first value of a field (name in lower case), or None."""
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None


def parser_error_status(message: str) -> int:
    """The status answering a request llhttp refused, from its error message.

    llhttp refuses a version it cannot read with "Invalid HTTP version": that is a
    request in a version we do not speak, 505 (RFC 9110 §15.6.6), as check_request
    answers for the versions llhttp lets through (2.0, 0.9). Everything else,
    including a malformed version ("Invalid minor version"), is 400.
    """
    return 505 if message == "Invalid HTTP version" else 400


def is_token(value: bytes) -> bool:
    """Whether `value` is an RFC 9110 §5.6.2 token (a method, a field name)."""
    return _TOKEN.fullmatch(value) is not None


def _connection_tokens(value: bytes) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


def _http_version(version: str) -> bool:
    """Whether the request is HTTP/1.0 (else 1.1); refuses versions we do not speak.

    A higher minor version of 1 is processed as 1.1 (RFC 9110 §2.5); our answer
    stays HTTP/1.1.
    """
    if version == "1.1":
        return False
    if version == "1.0":
        return True
    major, _, minor = version.partition(".")
    if major == "1" and minor.isdigit():
        return False
    raise HttpParseError(f"HTTP version {version} not supported", hint=505)


def check_request(
    method: bytes,
    target: bytes,
    version: str,
    raw_headers: list[tuple[bytes, bytes]],
    keep_alive: bool,
) -> RequestHead:
    """Check a parsed request head and split its fields (one pass over them).

    Body framing is read from the fields llhttp already validated: Transfer-Encoding
    (which must be exactly `chunked`) or Content-Length.

    Args:
        method, target, version: from the request line ("1.1" style version).
        raw_headers: every field as received.
        keep_alive: what the parser derived from version and Connection.

    Raises:
        HttpParseError: the request must be refused; `.hint` is the status.
    """
    http10 = _http_version(version)
    if method == b"CONNECT":
        raise HttpParseError("CONNECT is not supported", hint=405)
    host: bytes | None = None
    drop: set[bytes] = set()
    headers: list[tuple[bytes, bytes]] = []
    expect_continue = False
    codings: list[bytes] = []
    upgrade: list[bytes] = []
    content_length = -1
    xff: list[bytes] = []
    for name, value in raw_headers:
        lname = name.lower()
        if lname == b"host":
            if host is not None:
                raise HttpParseError("more than one Host field")
            host = value
            headers.append((name, value))
        elif lname in HOP_BY_HOP:
            if lname == b"connection":
                drop |= _connection_tokens(value)
            elif lname == b"transfer-encoding":
                if http10:
                    raise HttpParseError("Transfer-Encoding in an HTTP/1.0 request")
                codings += (c.strip().lower() for c in value.split(b","))
            elif lname == b"upgrade":
                upgrade.append(value)
        elif lname in _REPLACED:
            if lname == b"content-length":
                content_length = int(value)
        elif lname == b"x-forwarded-for":
            xff.append(value)
        elif lname == b"expect":
            if value.strip().lower() == b"100-continue":
                expect_continue = True
            headers.append((name, value))
        else:
            headers.append((name, value))
    if codings and [c for c in codings if c] != [b"chunked"]:
        # Forwarding other codings would need them decoded or passed on as received;
        # we re-frame bodies, so anything but chunked alone is refused (RFC 9112 §6.1).
        raise HttpParseError("Transfer-Encoding other than chunked alone is not supported")
    if drop:
        drop -= _NEVER_DROPPED
        headers = [(k, v) for k, v in headers if k.lower() not in drop]
    if target[:1] != b"/" and _SCHEME.match(target):
        authority, target = _absolute_form(target)
        # The authority in the target replaces Host (RFC 9112 §3.2.2).
        host = authority
        headers = [(k, v) for k, v in headers if k.lower() != b"host"]
        headers.insert(0, (b"Host", authority))
    elif host is None and not http10:
        raise HttpParseError("missing Host field")
    if not target.startswith(b"/") and not (target == b"*" and method == b"OPTIONS"):
        raise HttpParseError("request target must be an absolute path")
    host_name = _host_without_port(host) if host else ""
    if codings:
        body = BODY_CHUNKED
    elif content_length > 0:
        body = BODY_LENGTH
    else:
        body = BODY_NONE
    path = target
    q = path.find(b"?")
    if q >= 0:
        path = path[:q]
    return RequestHead(
        method=method,
        target=target,
        host=host_name,
        path=path,
        headers=headers,
        body=body,
        content_length=max(content_length, 0),
        keep_alive=keep_alive,
        http10=http10,
        expect_continue=expect_continue,
        forwarded_for=b", ".join(xff) if xff else None,
        upgrade=b", ".join(upgrade) if upgrade and b"upgrade" in drop and not http10 else None,
    )


def _absolute_form(target: bytes) -> tuple[bytes, bytes]:
    """Split an absolute-form target (RFC 9112 §3.2.2) into authority and origin-form.

    The scheme is case-insensitive and must be http or https; the authority ends at
    the first "/", "?" or "#" (RFC 3986 §3.2) and must be a valid host; userinfo is
    refused (RFC 9110 §4.2.4); a fragment is dropped, an empty path becomes "/".
    """
    try:
        url = urlsplit(target.decode("latin-1"))
    except ValueError as e:  # urlsplit refuses some authorities itself ("[1:2:3]")
        raise HttpParseError(f"invalid Host in the request target: {e}") from None
    if url.scheme not in ("http", "https"):
        raise HttpParseError(f"unsupported scheme in the request target: {url.scheme!r}")
    authority = url.netloc.encode("latin-1")
    if b"@" in authority:
        raise HttpParseError("userinfo in the request target")
    if not authority:
        raise HttpParseError("no authority in an absolute-form request target")
    _host_without_port(authority)
    origin = (url.path or "/") + (f"?{url.query}" if url.query else "")
    return authority, origin.encode("latin-1")


_HOSTS: dict[bytes, str | None] = {}
"""Host field -> normalized host (None: invalid); a handful of values serve most requests."""


def _host_without_port(host: bytes) -> str:
    """The normalized host of a Host value; HttpParseError when it is not a valid one."""
    try:
        name = _HOSTS[host]
    except KeyError:
        name = _normalize_host(host)
        if len(_HOSTS) >= 4096:  # clients choose Host: keep the memo bounded
            _HOSTS.clear()
        _HOSTS[host] = name
    if name is None:
        raise HttpParseError(f"invalid Host: {host.decode('latin-1')[:100]!r}")
    return name


def _normalize_host(host: bytes) -> str | None:
    """Lower-case host without port, or None when `host` is not uri-host [":" port]."""
    lit = _IP_LITERAL_PORT.fullmatch(host)
    if lit is not None:
        try:
            ipaddress.IPv6Address(lit.group(1).decode())
        except ValueError:
            return None
        return "[" + lit.group(1).decode().lower() + "]"
    if _REG_NAME_PORT.fullmatch(host) is None:
        return None
    text = host.decode("latin-1").lower()
    colon = text.rfind(":")
    if colon >= 0:
        text = text[:colon]
    return text.rstrip(".")


class ChunkedDecoder:
    """Reads one chunked request body (RFC 9112 §7.1) out of a byte stream.

    Feed it the bytes that follow the head, as they arrive; it returns the chunk data
    and where the body ended, so the bytes after it (the next request, or a tunnel
    after an Upgrade) are never read as body. Chunk extensions (with BWS) and trailer
    fields are checked and dropped; the caller re-frames the data.

    Rejects (HttpParseError, 400): a size that is not hex or has more than 16 digits,
    a line not ended by CRLF, bare CR or LF or control bytes in a size or trailer line,
    a chunk not followed by CRLF, a line longer than `max_line`, trailers over
    `max_trailers` bytes.
    """

    __slots__ = ("left", "line", "max_line", "max_trailers", "state", "trailer_bytes")

    SIZE, DATA, DATA_END, TRAILER, DONE = range(5)

    def __init__(self, *, max_line: int = 4096, max_trailers: int = 8192) -> None:
        self.state = self.SIZE
        self.left = 0
        self.line = b""
        self.max_line = max_line
        self.max_trailers = max_trailers
        self.trailer_bytes = 0

    @property
    def done(self) -> bool:
        return self.state == self.DONE

    def feed(self, data: bytes, pos: int = 0) -> tuple[list[bytes], int]:
        """Decode from `data[pos:]`.

        Returns:
            The chunk data found, and the offset where reading stopped: the end of
            `data`, or the first byte after the body once `done`.

        Raises:
            HttpParseError: the body is malformed.
        """
        out: list[bytes] = []
        end = len(data)
        while pos < end and self.state != self.DONE:
            if self.state == self.DATA:
                take = min(self.left, end - pos)
                out.append(data[pos : pos + take])
                pos += take
                self.left -= take
                if not self.left:
                    self.state = self.DATA_END
                continue
            nl = data.find(b"\n", pos)
            if nl < 0:
                self.line += data[pos:]
                if len(self.line) > self.max_line:
                    raise HttpParseError("chunk size or trailer line too long")
                return out, end
            line = self.line + data[pos : nl + 1] if self.line else data[pos : nl + 1]
            self.line = b""
            pos = nl + 1
            if len(line) > self.max_line:
                raise HttpParseError("chunk size or trailer line too long")
            self._line(line)
        return out, pos

    def _line(self, line: bytes) -> None:
        if self.state == self.DATA_END:
            if line != b"\r\n":
                raise HttpParseError("chunk data not followed by CRLF")
            self.state = self.SIZE
        elif self.state == self.SIZE:
            m = _CHUNK_LINE.fullmatch(line)
            if m is None:
                raise HttpParseError("invalid chunk size line")
            self.left = int(m.group(1), 16)
            self.state = self.DATA if self.left else self.TRAILER
        elif line == b"\r\n":
            self.state = self.DONE
        else:
            self.trailer_bytes += len(line)
            if self.trailer_bytes > self.max_trailers:
                raise HttpParseError("trailer section too large")
            if _TRAILER_LINE.fullmatch(line) is None:
                raise HttpParseError("invalid trailer field")


def build_request_head(
    req: RequestHead,
    *,
    client_ip: bytes,
    proto: bytes,
    forwarded: bool,
    via: bytes,
) -> bytes:
    """Serialize the head we send upstream (always HTTP/1.1, keep-alive).

    The body is framed by us: Content-Length as received, chunked re-encoded. An
    Upgrade request keeps its Upgrade field, with `Connection: Upgrade`.
    """
    parts = [req.method, b" ", req.target, b" HTTP/1.1\r\n"]
    for name, value in req.headers:
        if forwarded and len(name) == 3 and name.lower() == b"via":
            via = value + b", " + via
            continue
        parts += (name, b": ", value, b"\r\n")
    xff = req.forwarded_for
    if forwarded:
        xff = client_ip if xff is None else xff + b", " + client_ip
        parts += (b"X-Forwarded-Proto: ", proto, b"\r\nVia: ", via, b"\r\n")
    if xff is not None:
        parts += (b"X-Forwarded-For: ", xff, b"\r\n")
    if req.body == BODY_LENGTH:
        parts += (b"Content-Length: ", str(req.content_length).encode(), b"\r\n")
    elif req.body == BODY_CHUNKED:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif req.method in (b"POST", b"PUT", b"PATCH"):
        parts.append(b"Content-Length: 0\r\n")
    if req.upgrade is not None:
        parts += (b"Connection: Upgrade\r\nUpgrade: ", req.upgrade, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


@dataclass(slots=True)
class ResponseHead:
    """A checked upstream response head."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: int
    """BODY_NONE, BODY_LENGTH, BODY_CHUNKED or BODY_UNTIL_CLOSE."""
    content_length: int
    upstream_keep_alive: bool


def check_response(
    status: int,
    raw_headers: list[tuple[bytes, bytes]],
    *,
    request_method: bytes,
    keep_alive: bool,
) -> ResponseHead:
    """Split an upstream response head into forwardable fields and body framing.

    Framing follows RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304; chunked when
    chunked is the last transfer coding; until close for any other coding; else
    Content-Length; else until close. llhttp has already refused conflicting fields.
    """
    drop: set[bytes] = set()
    headers: list[tuple[bytes, bytes]] = []
    content_length = -1
    te: bytes | None = None
    for name, value in raw_headers:
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname == b"connection":
                drop |= _connection_tokens(value)
            elif lname == b"transfer-encoding":
                te = value if te is None else te + b"," + value
            continue
        if lname == b"content-length":
            content_length = int(value.strip())
            continue
        headers.append((name, value))
    if drop:
        headers = [(k, v) for k, v in headers if k.lower() not in drop]
    if request_method == b"HEAD" or status in (204, 304) or 100 <= status < 200:
        body = BODY_NONE
        # HEAD and 304 keep the length the full response would have (RFC 9110 §8.6)
        if content_length >= 0 and status != 204 and not 100 <= status < 200:
            headers.append((b"Content-Length", str(content_length).encode()))
        content_length = 0
    elif te is not None:
        if te.rsplit(b",", 1)[-1].strip().lower() == b"chunked":
            body = BODY_CHUNKED
        else:
            body = BODY_UNTIL_CLOSE
            keep_alive = False
    elif content_length >= 0:
        body = BODY_LENGTH
    else:
        body = BODY_UNTIL_CLOSE
        keep_alive = False
    return ResponseHead(status, headers, body, max(content_length, 0), keep_alive)


def build_response_head(
    resp: ResponseHead,
    reason: bytes,
    *,
    client_keep_alive: bool,
    http10_client: bool,
    extra: list[tuple[bytes, bytes]],
) -> tuple[bytes, bool]:
    """Serialize the head sent to the client.

    Returns:
        The head bytes and whether the body goes out chunked (re-encoded by the caller).
        A read-until-close body goes to HTTP/1.1 clients chunked, so the client
        connection can stay open; HTTP/1.0 clients get it until close.
    """
    parts = [b"HTTP/1.1 ", str(resp.status).encode(), b" ", reason or b"", b"\r\n"]
    for name, value in resp.headers:
        parts += (name, b": ", value, b"\r\n")
    for name, value in extra:
        parts += (name, b": ", value, b"\r\n")
    chunk_out = False
    if resp.body == BODY_LENGTH:
        parts += (b"Content-Length: ", str(resp.content_length).encode(), b"\r\n")
    elif resp.body in (BODY_CHUNKED, BODY_UNTIL_CLOSE):
        if http10_client:
            client_keep_alive = False
        else:
            parts.append(b"Transfer-Encoding: chunked\r\n")
            chunk_out = True
    if not client_keep_alive:
        parts.append(b"Connection: close\r\n")
    elif http10_client:
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return b"".join(parts), chunk_out


def build_switch_head(
    reason: bytes,
    raw_headers: list[tuple[bytes, bytes]],
    *,
    extra: list[tuple[bytes, bytes]],
) -> bytes:
    """The 101 head sent to the client when the backend switched protocols.

    End-to-end fields of the backend's 101 go on (hop-by-hop and Connection-listed
    ones removed), with the backend's Upgrade and `Connection: Upgrade`.
    """
    drop: set[bytes] = set()
    upgrade: list[bytes] = []
    kept: list[tuple[bytes, bytes]] = []
    for name, value in raw_headers:
        lname = name.lower()
        if lname == b"connection":
            drop |= _connection_tokens(value)
        elif lname == b"upgrade":
            upgrade.append(value)
        elif lname not in HOP_BY_HOP and lname != b"content-length":
            kept.append((name, value))
    parts = [b"HTTP/1.1 101 ", reason or b"Switching Protocols", b"\r\n"]
    for name, value in kept:
        if name.lower() not in drop:
            parts += (name, b": ", value, b"\r\n")
    for name, value in extra:
        parts += (name, b": ", value, b"\r\n")
    parts += (b"Connection: Upgrade\r\nUpgrade: ", b", ".join(upgrade), b"\r\n\r\n")
    return b"".join(parts)


def simple_response(status: int, message: str, *, close: bool, extra: bytes = b"") -> bytes:
    """A complete short response generated by the proxy itself (errors, admin)."""
    body = f"{status} {REASONS.get(status, b'').decode()}: {message}\n".encode()
    head = (
        b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
        % (status, REASONS.get(status, b"Error"), len(body))
    )
    if close:
        head += b"Connection: close\r\n"
    return head + extra + b"\r\n" + body
