"""DNS test helpers: the test topology, a health target, and the server process."""

from __future__ import annotations

import re
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.processes import Proc, refused_port, start_process

BIG_TXT = "x" * 200
MEDIUM_TXT = "m" * 150

TOPOLOGY = """\
zones:
  z1:
    region: north
    vips: [127.0.0.11, "fd00::11"]
    health: {{type: tcp, address: "127.0.0.1:{z1_port}", interval: 200ms, timeout: 200ms}}
  z2:
    region: south
    vips: [127.0.0.12, "fd00::12"]
    health: {{type: tcp, address: "127.0.0.1:{z2_port}", interval: 200ms, timeout: 200ms}}
dns:
  regions:
    north: {{prefixes: [10.1.0.0/16]}}
    south: {{prefixes: [10.2.0.0/16, "2001:db8:2::/48"]}}
  rrl: {rrl}
  rrl_slip: {rrl_slip}
  tcp_max_connections: {tcp_max}
  tcp_idle: {tcp_idle}
  domains:
    example.test:
      ns: [ns1, ns2]
      records:
        "@":
          - {{type: MX, value: "10 mail"}}
          - {{type: TXT, value: "v=spf1 -all"}}
        ns1: [{{type: A, value: 192.0.2.1}}]
        ns2: [{{type: A, value: 192.0.2.2}}, {{type: AAAA, value: "2001:db8::2"}}]
        www: [{{type: CNAME, value: web}}]
        web:
          - {{type: A, value: {web_ip}}}
          - {{type: AAAA, value: "2001:db8::10"}}
          - {{type: TXT, value: "hello world"}}
        mail: [{{type: A, value: 192.0.2.25}}]
        a.b.deep: [{{type: TXT, value: deep}}]
        big: [{big}]
        medium: [{medium}]
        alias: [{{type: CNAME, value: api}}]
        "*.wild": [{{type: A, value: 192.0.2.99}}]
        sub: [{{type: NS, value: ns.sub}}]
        ns.sub: [{{type: A, value: 192.0.2.53}}]
      gslb:
        api:
          ttl: 30s
          ecs_scope: 20
          preferred: [topology]
          alternate: [weight]
"""


def topology_text(
    *,
    z1_port: int,
    z2_port: int,
    rrl: int = 0,
    rrl_slip: int = 2,
    tcp_max: int = 1000,
    tcp_idle: str = "10s",
    web_ip: str = "192.0.2.10",
) -> str:
    big = ", ".join(f'{{type: TXT, value: "{i}{BIG_TXT}"}}' for i in range(10))
    medium = ", ".join(f'{{type: TXT, value: "{i}{MEDIUM_TXT}"}}' for i in range(3))
    return TOPOLOGY.format(
        z1_port=z1_port,
        z2_port=z2_port,
        rrl=rrl,
        rrl_slip=rrl_slip,
        tcp_max=tcp_max,
        tcp_idle=tcp_idle,
        web_ip=web_ip,
        big=big,
        medium=medium,
    )


class HealthTarget:
    """A TCP port that accepts (zone up) until `close()` (zone down)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.close()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def closed_port() -> int:
    """A port where connections are refused (held by `refused_port`)."""
    return refused_port()


READY = re.compile(
    r"zonegate dns ready: udp\+tcp \[?(?P<host>[\da-f.:]+?)\]?:(?P<port>\d+), admin (?P<admin>\S+?),"
)


class DnsProc:
    """A running `zonegate dns` process and its addresses."""

    def __init__(self, proc: Proc, path: Path) -> None:
        self.proc = proc
        self.path = path
        assert proc.match is not None
        self.port = int(proc.match["port"])
        self.admin = proc.match["admin"]

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin}"


def start_dns(path: Path, timeout: float = 15.0, listen: str = "127.0.0.1:0") -> DnsProc:
    argv = [
        sys.executable,
        "-m",
        "zonegate.dns.server",
        str(path),
        "--listen",
        listen,
        "--admin",
        "127.0.0.1:0",
    ]
    proc = start_process(argv, READY, timeout, env={"ZONEGATE_BUG_RAISE": "0"})
    return DnsProc(proc, path)


@pytest.fixture
def health_targets() -> Iterator[tuple[HealthTarget, HealthTarget]]:
    a, b = HealthTarget(), HealthTarget()
    try:
        yield a, b
    finally:
        a.close()
        b.close()
