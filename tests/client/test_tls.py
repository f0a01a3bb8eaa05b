"""TLS through the SDK: the request goes to the zone's address, and TLS sends the zone
domain as SNI and verifies the certificate against it (docs/client.md, "Connecting by
address, keeping the name").

The peer is a real HTTPS server on loopback (Python's ssl module over a real socket)
whose certificate, issued by a test CA (trustme), names only the zone domain; it
records the SNI each handshake carried and the Host of each request.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import trustme

import zonegate.client as zc

pytestmark = pytest.mark.timeout(60)

ZONE_DOMAIN = "api-cp.example.test"
SPLIT = {
    "api.example.test": {
        "sharding": 100,
        "zones": {"cp": {"lower": 0, "upper": 100, "domain": ZONE_DOMAIN}},
    }
}


class HttpsPeer:
    """An HTTPS server on 127.0.0.1 serving a certificate for `names`."""

    def __init__(self, ca: trustme.CA, *names: str) -> None:
        self.sni: list[str | None] = []
        self.hosts: list[str] = []
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names).configure_cert(ctx)
        ctx.sni_callback = self._sni
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                peer.hosts.append(self.headers.get("Host", ""))
                body = json.dumps({"path": self.path}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _sni(self, sock: ssl.SSLSocket, name: str | None, ctx: ssl.SSLContext) -> None:
        self.sni.append(name)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


@pytest.fixture
def peer(ca: trustme.CA) -> Iterator[HttpsPeer]:
    p = HttpsPeer(ca, ZONE_DOMAIN)
    yield p
    p.close()


def sdk(peer: HttpsPeer, ctx: ssl.SSLContext, asynchronous: bool = False) -> Any:
    """The SDK's transport for one device, the zone domain pinned to `peer`."""
    cls, inner = (
        (zc.AsyncTransport, httpx.AsyncHTTPTransport)
        if asynchronous
        else (zc.Transport, httpx.HTTPTransport)
    )
    return cls(
        device_id="device-1",
        split=SPLIT,
        cache_path=False,
        resolver=None,
        hosts={ZONE_DOMAIN: f"127.0.0.1:{peer.port}"},
        transport=inner(verify=ctx),
    )


def test_tls_sends_the_zone_domain_as_sni_and_verifies_it(peer, client_ctx):
    with httpx.Client(transport=sdk(peer, client_ctx)) as c:
        r = c.get(f"https://api.example.test:{peer.port}/hello")
    assert r.status_code == 200
    assert r.json() == {"path": "/hello"}
    assert peer.sni == [ZONE_DOMAIN]
    assert peer.hosts == [f"{ZONE_DOMAIN}:{peer.port}"]
    assert str(r.request.url) == f"https://api.example.test:{peer.port}/hello"


def test_a_certificate_for_another_name_is_refused(ca, client_ctx):
    """The check is against the zone domain, not the address and not the split domain:
    a certificate for the split domain alone does not pass."""
    other = HttpsPeer(ca, "api.example.test")
    try:
        with (
            httpx.Client(transport=sdk(other, client_ctx)) as c,
            pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
        ):
            c.get(f"https://api.example.test:{other.port}/")
        assert other.sni[:1] == [ZONE_DOMAIN]
        assert other.hosts == []
    finally:
        other.close()


async def test_async_transport_does_the_same(peer, client_ctx):
    async with httpx.AsyncClient(transport=sdk(peer, client_ctx, asynchronous=True)) as c:
        r = await c.get(f"https://api.example.test:{peer.port}/async")
    assert r.json() == {"path": "/async"}
    assert peer.sni == [ZONE_DOMAIN]
