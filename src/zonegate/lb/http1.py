"""HTTP/1.1 message heads for a reverse proxy (pure: bytes and values in, bytes out).

httptools (llhttp in strict mode) parses the wire and already refuses the classic
smuggling vectors: Content-Length with Transfer-Encoding, duplicate Content-Length,
a Transfer-Encoding whose last coding is not chunked, invalid chunk sizes, obs-fold,
bare LF or CR, and NUL or other control bytes in the header block. This module adds
the checks llhttp leaves to the application (RFC 9112 §3.2, §6.1, RFC 9110 §7.6.1)
and builds the heads we send on: hop-by-hop fields removed, the body re-framed by us,
forwarding fields added.

Accepts: HTTP/1.0 and HTTP/1.1 requests in origin-form or absolute-form.
Rejects (HttpParseError with .hint): other versions (505), no Host in HTTP/1.1 or more
than one Host (400), Transfer-Encoding in HTTP/1.0 (400), CONNECT (405).
"""

from __future__ import annotations

from dataclasses import dataclass

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

    llhttp (strict) refuses every version but 1.0 and 1.1 with "Invalid HTTP version":
    that is a well-formed request in a version we do not speak, 505 (RFC 9110 §15.6.6),
    as check_request answers for the versions llhttp lets through (2.0). Everything
    else, including a malformed version ("Invalid minor version"), is 400.
    """
    return 505 if message == "Invalid HTTP version" else 400


def _connection_tokens(value: bytes) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


def check_request(
    method: bytes,
    target: bytes,
    version: str,
    raw_headers: list[tuple[bytes, bytes]],
    keep_alive: bool,
) -> RequestHead:
    """Check a parsed request head and split its fields (one pass over them).

    Body framing is read from the fields llhttp already validated: Transfer-Encoding
    (whose last coding llhttp requires to be chunked) or Content-Length.

    Args:
        method, target, version: from the request line ("1.1" style version).
        raw_headers: every field as received.
        keep_alive: what the parser derived from version and Connection.

    Raises:
        HttpParseError: the request must be refused; `.hint` is the status.
    """
    if version == "1.1":
        http10 = False
    elif version == "1.0":
        http10 = True
    else:
        raise HttpParseError(f"HTTP version {version} not supported", hint=505)
    if method == b"CONNECT":
        raise HttpParseError("CONNECT is not supported", hint=405)
    host: bytes | None = None
    drop: set[bytes] = set()
    headers: list[tuple[bytes, bytes]] = []
    expect_continue = False
    chunked = False
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
                chunked = True
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
    if drop:
        headers = [(k, v) for k, v in headers if k.lower() not in drop]
    if host is None and not http10 and not target.startswith((b"http://", b"https://")):
        raise HttpParseError("missing Host field")
    if target.startswith((b"http://", b"https://")):
        # absolute-form: the authority in the target wins over Host (RFC 9112 §3.2.2)
        rest = target.split(b"://", 1)[1]
        slash = rest.find(b"/")
        authority = rest if slash < 0 else rest[:slash]
        path = b"/" if slash < 0 else rest[slash:]
        host = authority
        headers = [(k, v) for k, v in headers if k.lower() != b"host"]
        headers.insert(0, (b"Host", authority))
        target = path
    else:
        path = target
    if not target.startswith(b"/") and not (target == b"*" and method == b"OPTIONS"):
        raise HttpParseError("request target must be an absolute path")
    host_name = _host_without_port(host) if host else ""
    if chunked:
        body = BODY_CHUNKED
    elif content_length > 0:
        body = BODY_LENGTH
    else:
        body = BODY_NONE
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
    )


_HOSTS: dict[bytes, str] = {}
"""Host field -> normalized host: a handful of distinct values serve most requests."""


def _host_without_port(host: bytes) -> str:
    name = _HOSTS.get(host)
    if name is None:
        name = _normalize_host(host)
        if len(_HOSTS) >= 4096:  # clients choose Host: keep the memo bounded
            _HOSTS.clear()
        _HOSTS[host] = name
    return name


def _normalize_host(host: bytes) -> str:
    text = host.decode("latin-1").strip().lower()
    if text.startswith("["):
        end = text.find("]")
        return text[: end + 1] if end > 0 else text
    colon = text.rfind(":")
    if colon >= 0 and text[colon + 1 :].isdigit():
        text = text[:colon]
    return text.rstrip(".")


def build_request_head(
    req: RequestHead,
    *,
    client_ip: bytes,
    proto: bytes,
    forwarded: bool,
    via: bytes,
) -> bytes:
    """Serialize the head we send upstream (always HTTP/1.1, keep-alive).

    The body is framed by us: Content-Length as received, chunked re-encoded.
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
