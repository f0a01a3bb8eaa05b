"""The L4 TCP listener: splice, failover on connect errors, idle timeout."""

from __future__ import annotations

import socket
import time

import pytest

from tests.integration.lbharness import Topo, start_lb

pytestmark = pytest.mark.timeout(60)

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def _tcp_topo(backends, *, idle="60s"):
    health = {"active": {"type": "tcp", "interval": "200ms", "rise": 1, "fall": 1}}
    topo = Topo()
    topo.pool("p", backends, health=health)
    topo.listener("p", name="tcp", protocol="tcp", timeouts={"client_idle": idle})
    return topo


def _exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)  # the half-close must reach the backend
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def test_tcp_listener_splices_bytes_untouched(backend_factory, tmp_path):
    b = backend_factory(name="t1")
    lb = start_lb(tmp_path, _tcp_topo([b]), listener="tcp")
    try:
        reply = _exchange(lb.port, REQUEST)
        assert reply.startswith(b"HTTP/1.1 200"), lb.proc.output()[-3000:]
        assert b"hello from t1" in reply
        assert b"X-Zonegate-Version" not in reply  # L4: nothing added
        assert lb.status()["pools"]["p"]["backends"][0]["available"]
    finally:
        lb.stop()


def test_tcp_connect_failure_is_retried_on_another_backend(backend_factory, tmp_path):
    good = backend_factory(name="good")
    bad = backend_factory(name="bad")
    lb = start_lb(tmp_path, _tcp_topo([bad, good]), listener="tcp")
    try:
        bad.kill()
        for _ in range(20):
            assert b"hello from good" in _exchange(lb.port, REQUEST)
    finally:
        lb.stop()


def test_tcp_idle_connection_is_closed(backend_factory, tmp_path):
    b = backend_factory(name="t1")
    lb = start_lb(tmp_path, _tcp_topo([b], idle="500ms"), listener="tcp")
    try:
        with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as s:
            t0 = time.monotonic()
            assert s.recv(10) == b""
            assert time.monotonic() - t0 < 3
    finally:
        lb.stop()
