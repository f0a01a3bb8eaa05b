"""TLS with HTTP/2 and HTTP/1.1 by ALPN, and WebSocket, through `zonegate lb --engine
haproxy` (issue 13 items 7 and 8), with real clients: httpx (h2), the ssl module, and
the websockets library.

The certificate comes from a CA made in the test (trustme); the backends are the demo
backends (`/echo` answers the request it got, headers included) and a websockets echo
server on port 0.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.lbharness import Topo
from tests.integration.test_haproxy_engine import HAPROXY, haproxy_lb

trustme = pytest.importorskip("trustme")
pytest.importorskip("h2", reason="httpx[http2] (the test extras) is not installed")

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(
        HAPROXY is None, reason="HAProxy is not installed (apt-get install haproxy)"
    ),
]

API = "api.example.test"


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def _tls(ca: trustme.CA, tmp_path: Path, **kw: object) -> dict[str, object]:
    """A listener's `tls` section: a certificate for 127.0.0.1 and API from `ca`."""
    cert = ca.issue_cert("127.0.0.1", "localhost", API)
    chain, key = tmp_path / "server.crt", tmp_path / "server.key"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key))
    return {"certificate": str(chain), "key": str(key), **kw}


def _client_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def _echo(r: httpx.Response) -> dict[str, str]:
    """The request headers the backend got, from its /echo answer (lower-case names)."""
    assert r.status_code == 200, r.text
    return {name.lower(): value for name, value in json.loads(r.content)["headers"]}


def _haproxy_topo() -> Topo:
    topo = Topo()
    # TLS and Upgrade are settings of a haproxy zone (`zonegate check` refuses TLS on
    # builtin), whatever --engine says.
    topo.doc["zones"]["z1"]["lb_engine"] = "haproxy"
    return topo


def test_tls_h2_and_http1_by_alpn(tmp_path, backend_factory, ca):
    web = backend_factory(name="web", zone="z1")
    api = backend_factory(name="api", zone="z1")
    routes = [{"host": API, "pool": "api"}, {"pool": "web"}]
    topo = (
        _haproxy_topo()
        .pool("web", [web])
        .pool("api", [api])
        .listener(routes=routes, tls=_tls(ca, tmp_path))
    )
    ctx = _client_context(ca)
    with haproxy_lb(tmp_path, topo) as lb:
        base = f"https://127.0.0.1:{lb.port}"
        seen = {}
        for http2 in (True, False):
            with httpx.Client(http2=http2, verify=ctx, timeout=10) as client:
                r = client.get(f"{base}/echo", headers={"Host": API})
                seen[http2] = r.http_version
                assert r.headers["x-backend"] == "api"
                assert r.headers["x-zonegate-version"] == "1"
                got = _echo(r)
                assert got["x-forwarded-proto"] == "https"
                assert got["x-forwarded-for"] == "127.0.0.1"
                assert got["host"] == API
                r = client.get(f"{base}/", headers={"Host": "www.example.test"})
                assert (r.status_code, r.headers["x-backend"]) == (200, "web")
                assert r.http_version == seen[http2]
                assert r.headers["x-zonegate-version"] == "1"
                # Many requests on one connection (streams on h2, keep-alive on 1.1).
                for _ in range(20):
                    r = client.get(f"{base}/", headers={"Host": API})
                    assert (r.status_code, r.headers["x-backend"]) == (200, "api")
        print(f"\nTLS listener: httpx http2=True got {seen[True]}, http2=False got {seen[False]}")
        assert seen == {True: "HTTP/2", False: "HTTP/1.1"}
        # The server's choice by ALPN, seen with the ssl module alone.
        for offered, chosen in ((["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")):
            assert _alpn(lb.port, ctx, offered) == chosen
        # Plain HTTP on the TLS port is no request: the handshake fails, nothing is served.
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{lb.port}/", timeout=5)


def test_tls_listener_offers_only_http1_when_alpn_says_so(tmp_path, backend_factory, ca):
    web = backend_factory(name="web", zone="z1")
    tls = _tls(ca, tmp_path, alpn=["http/1.1"])
    topo = _haproxy_topo().pool("web", [web]).listener("web", tls=tls)
    ctx = _client_context(ca)
    with haproxy_lb(tmp_path, topo) as lb:
        assert _alpn(lb.port, ctx, ["h2", "http/1.1"]) == "http/1.1"
        with httpx.Client(http2=True, verify=ctx, timeout=10) as client:
            r = client.get(f"https://127.0.0.1:{lb.port}/")
        assert (r.status_code, r.http_version) == (200, "HTTP/1.1")


def _alpn(port: int, ctx: ssl.SSLContext, offered: list[str]) -> str | None:
    import socket

    ctx.set_alpn_protocols(offered)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.selected_alpn_protocol()


# --- WebSocket ----------------------------------------------------------------------


@pytest.fixture
def ws_echo() -> Iterator[int]:
    """A websockets echo server on port 0 (it answers plain HTTP with 426)."""
    ws_server = pytest.importorskip("websockets.sync.server")

    def echo(conn) -> None:
        for message in conn:
            conn.send(message)

    with ws_server.serve(echo, "127.0.0.1", 0) as server:
        t = threading.Thread(target=server.serve_forever, daemon=True)
        t.start()
        yield server.socket.getsockname()[1]
        server.shutdown()
        t.join(5)


def _ws_topo(ws_port: int, web_address: str, **listener: object) -> Topo:
    routes = [{"path_prefix": "/ws/", "pool": "ws"}, {"pool": "web"}]
    return (
        _haproxy_topo()
        # The websockets server answers a plain GET with 426: check it over TCP.
        .pool("ws", [f"127.0.0.1:{ws_port}"], health={"active": {"type": "tcp"}})
        .pool("web", [web_address])
        .listener(routes=routes, **listener)
    )


def _echo_session(url: str, ssl_context: ssl.SSLContext | None = None) -> None:
    ws_client = pytest.importorskip("websockets.sync.client")
    kw = {"ssl": ssl_context} if ssl_context is not None else {}
    with ws_client.connect(url, open_timeout=5, **kw) as ws:
        for message in ["hello", "zonegate", "x" * 100_000]:
            ws.send(message)
            assert ws.recv(timeout=5) == message
        ws.send(b"\x00\x01binary")
        assert ws.recv(timeout=5) == b"\x00\x01binary"
        assert ws.ping().wait(timeout=5)
        assert ws.response is not None
        assert ws.response.headers["X-Zonegate-Version"] == "1"


def test_websocket_echo_then_plain_http_on_the_same_lb(tmp_path, backend_factory, ws_echo):
    web = backend_factory(name="web", zone="z1")
    topo = _ws_topo(ws_echo, web.address)
    with haproxy_lb(tmp_path, topo) as lb:
        _echo_session(f"ws://127.0.0.1:{lb.port}/ws/chat")
        # Two sessions at once: each tunnel is its own.
        errors: list[BaseException] = []

        def session(i: int) -> None:
            try:
                _echo_session(f"ws://127.0.0.1:{lb.port}/ws/{i}")
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=session, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors
        r = lb.get("/")
        assert (r.status, r.headers["x-backend"]) == (200, "web")
        assert r.headers["x-zonegate-version"] == "1"
        # A plain GET to the WebSocket route reaches the ws server, which wants an Upgrade.
        assert lb.get("/ws/chat").status == 426


def test_websocket_over_the_tls_listener(tmp_path, backend_factory, ws_echo, ca):
    web = backend_factory(name="web", zone="z1")
    topo = _ws_topo(ws_echo, web.address, tls=_tls(ca, tmp_path))
    ctx = _client_context(ca)
    with haproxy_lb(tmp_path, topo) as lb:
        _echo_session(f"wss://127.0.0.1:{lb.port}/ws/chat", ctx)
        with httpx.Client(http2=True, verify=ctx, timeout=10) as client:
            r = client.get(f"https://127.0.0.1:{lb.port}/")
        assert (r.status_code, r.http_version, r.headers["x-backend"]) == (200, "HTTP/2", "web")
