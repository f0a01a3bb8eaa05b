"""The small HTTP/1.1 server behind every admin endpoint (lb, dns).

One request per connection, read with httptools, answered by a handler that returns
(status, content type, body). Not for traffic: the data planes have their own servers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from http import HTTPStatus

import httptools

MAX_REQUEST = 64 * 1024
READ_TIMEOUT = 10.0

Handler = Callable[[str, bytes], Awaitable[tuple[int, str, bytes]]]
"""handler(method, raw request target) -> (status, content type, body)."""


class _Request:
    def __init__(self) -> None:
        self.url = b""
        self.done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        self.done = True


async def serve_connection(
    handler: Handler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Read one request, answer it with `handler`, close."""
    try:
        req = _Request()
        parser = httptools.HttpRequestParser(req)
        size = 0
        while not req.done:
            data = await asyncio.wait_for(reader.read(65536), READ_TIMEOUT)
            if not data:
                writer.close()
                return
            size += len(data)
            if size > MAX_REQUEST:
                raise ValueError("request too large")
            parser.feed_data(data)
        status, ctype, body = await handler(parser.get_method().decode(), req.url)
    except (httptools.HttpParserError, ValueError, TimeoutError) as e:
        status, ctype, body = 400, "text/plain", f"bad request: {e}\n".encode()
    except ConnectionError:
        writer.close()
        return
    try:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def start_server(handler: Handler, host: str, port: int) -> asyncio.Server:
    """Listen on host:port and answer every connection with `handler`."""
    return await asyncio.start_server(
        lambda r, w: serve_connection(handler, r, w), host, port, reuse_address=True
    )
