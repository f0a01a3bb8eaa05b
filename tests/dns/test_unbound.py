"""`zonegate dns` behind a real recursive resolver: unbound as the LocalDNS.

unbound (Debian's, installed when missing) runs on 127.0.0.1 with its own config in
tmp_path: iterator module only (no validator, so no trust anchor), a stub zone
`example.test` pointing at `zonegate dns`, and `local-zone: "." refuse` (with
`example.test` transparent) so that nothing outside the stub zone is ever looked up;
the root hints name 127.0.0.1 only (unbound would fall back to its built-in hints on an
empty file), so even a priming query could not leave the machine.

The GSLB name `api.example.test` prefers zone z1 (`admin_order: [z1, z2]`); each
zone's health is a TCP check of a port this test opens and closes. Closing z1's port
fails z1; the recursive answer switches to z2's VIP once zonegate has seen the zone
down and unbound's cached answer (TTL 1 s) has expired. The switch time is printed
(`-s`): measured 1.1-1.9 s, zonegate itself switching after ~0.44 s.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.peers.processes import (
    Proc,
    ProcessError,
    addr_in_use,
    retry_addr_in_use,
    start_process,
)

pytestmark = pytest.mark.timeout(240)  # covers a first-time `apt-get install unbound`

VIP_A = "127.0.0.11"
VIP_B = "127.0.0.12"
WWW = "192.0.2.10"
GSLB_TTL = 1
CACHE_MAX_TTL = 2
SWITCH_BOUND = 6.0
"""Seconds the switch may take: zonegate sees the zone down (interval 200 ms x fall 2,
plus a probe timeout: ~0.4-0.6 s), then unbound's cached answer expires (TTL 1 s, but
unbound's clock counts whole seconds, so it lives 1-2 s); the rest is margin for a
loaded machine."""

TOPOLOGY = """\
zones:
  z1:
    vips: [{vip_a}]
    health: {{type: tcp, address: "127.0.0.1:{port_a}", interval: 200ms, timeout: 200ms}}
  z2:
    vips: [{vip_b}]
    health: {{type: tcp, address: "127.0.0.1:{port_b}", interval: 200ms, timeout: 200ms}}
dns:
  domains:
    example.test:
      ns: [ns1]
      ttl: 5m
      records:
        ns1: [{{type: A, value: 127.0.0.1}}]
        www: [{{type: A, value: {www}}}]
      gslb:
        api:
          zones: [z1, z2]
          preferred: [admin]
          admin_order: [z1, z2]
          fallback: all
          ttl: {ttl}s
          changing_ttl: {ttl}s
"""

ZG_READY = re.compile(
    r"zonegate dns ready: udp\+tcp (?P<host>[\d.]+):(?P<port>\d+), admin (?P<admin>\S+?),"
)


# --------------------------------------------------------------------------- unbound


def _unbound_binary() -> str | None:
    return shutil.which("unbound") or (
        "/usr/sbin/unbound" if os.access("/usr/sbin/unbound", os.X_OK) else None
    )


def _install_unbound() -> str:
    """apt-get install unbound without starting the distro service; '' when it worked."""
    if os.geteuid() != 0:
        return "unbound is not installed and the tests do not run as root to install it"
    if shutil.which("apt-get") is None:
        return "unbound is not installed and there is no apt-get to install it"
    policy = Path("/usr/sbin/policy-rc.d")
    created = False
    if not policy.exists():
        policy.write_text("#!/bin/sh\n# test_unbound: no service starts during install\nexit 101\n")
        policy.chmod(0o755)
        created = True
    try:
        r = subprocess.run(
            [
                "apt-get",
                "-o",
                "DPkg::Lock::Timeout=60",
                "install",
                "-y",
                "--no-install-recommends",
                "unbound",
            ],
            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=180,
        )
    except subprocess.TimeoutExpired:
        return "apt-get install unbound timed out after 180 s"
    finally:
        if created:
            policy.unlink(missing_ok=True)
    if r.returncode != 0:
        return f"apt-get install unbound failed (status {r.returncode}): {r.stderr.strip()[-500:]}"
    return ""


@pytest.fixture(scope="module")
def unbound_bin() -> str:
    path = _unbound_binary()
    if path is None:
        why = _install_unbound()
        path = _unbound_binary()
        if path is None:
            pytest.skip(why or "apt-get install unbound succeeded but no unbound binary found")
    return path


def _free_udp_tcp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 a moment ago."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no port free for both UDP and TCP")


ROOT_HINTS = """\
.                3600000  IN  NS  root.invalid.
root.invalid.    3600000  IN  A   127.0.0.1
"""

UNBOUND_CONF = """\
server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    do-tcp: yes
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "{dir}"
    pidfile: "{dir}/unbound.pid"
    use-syslog: no
    logfile: "{dir}/unbound.log"
    log-time-ascii: yes
    verbosity: 1
    num-threads: 1
    so-reuseport: no
    access-control: 127.0.0.0/8 allow
    # the stub server is on 127.0.0.1
    do-not-query-localhost: no
    # iterator only: no validator, hence no trust anchor and no root key to fetch
    module-config: "iterator"
    # nothing outside example.test: every other name refused, roots on loopback only
    root-hints: "{dir}/root.hints"
    local-zone: "." refuse
    local-zone: "example.test." transparent
    qname-minimisation: no
    harden-referral-path: no
    harden-glue: yes
    harden-below-nxdomain: no
    aggressive-nsec: no
    prefetch: no
    serve-expired: no
    minimal-responses: yes
    cache-min-ttl: 0
    cache-max-ttl: {cache_max_ttl}
    cache-max-negative-ttl: 1
    infra-host-ttl: 60

stub-zone:
    name: "example.test."
    stub-addr: 127.0.0.1@{zg_port}
    stub-prime: no
    stub-first: no

remote-control:
    control-enable: no
"""


def _query(
    port: int, name: str, rdtype: str = "A", *, rd: bool = True, timeout: float = 1.0
) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    if not rd:
        q.flags &= ~dns.flags.RD
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=timeout)


def _addresses(msg: dns.message.Message) -> list[str]:
    return [rd.address for rrset in msg.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset]


class HealthPort:
    """A TCP port on 127.0.0.1 that accepts (zone up) until `close()` (zone down)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.close()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._thread.join(2.0)
        self.sock.close()  # a connect to the port is refused from now on


@dataclass
class Stack:
    zonegate: Proc
    zg_port: int
    zg_admin: str
    unbound: Proc
    ub_port: int
    zone_a: HealthPort
    zone_b: HealthPort
    tmp: Path


def _wait_answer(port: int, name: str, deadline: float, *, rd: bool) -> dns.message.Message:
    last: Exception | str = "no answer"
    while time.monotonic() < deadline:
        try:
            msg = _query(port, name, rd=rd, timeout=0.5)
        except (dns.exception.Timeout, OSError) as e:
            last = e
            time.sleep(0.05)
            continue
        if msg.rcode() == dns.rcode.NOERROR and msg.answer:
            return msg
        last = f"rcode {dns.rcode.to_text(msg.rcode())}, answer {msg.answer}"
        time.sleep(0.05)
    raise AssertionError(f"no answer for {name} on port {port}: {last}")


@pytest.fixture
def stack(unbound_bin: str, tmp_path: Path) -> Iterator[Stack]:
    zone_a, zone_b = HealthPort(), HealthPort()
    procs: list[Proc] = []
    try:
        topo = tmp_path / "topology.yaml"
        topo.write_text(
            TOPOLOGY.format(
                vip_a=VIP_A,
                vip_b=VIP_B,
                port_a=zone_a.port,
                port_b=zone_b.port,
                www=WWW,
                ttl=GSLB_TTL,
            )
        )
        zg = start_process(
            [
                sys.executable,
                "-m",
                "zonegate",
                "dns",
                str(topo),
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
            ],
            ZG_READY,
            timeout=20.0,
            env={"ZONEGATE_BUG_RAISE": "0"},
        )
        procs.append(zg)
        assert zg.match is not None
        zg_port = int(zg.match["port"])

        ub_dir = tmp_path / "unbound"
        ub_dir.mkdir()
        (ub_dir / "root.hints").write_text(ROOT_HINTS)

        def start_unbound() -> tuple[Proc, int]:
            # unbound's port is in its config: pick it, and pick again if unbound
            # found it taken (it exits saying "Address already in use").
            ub_port = _free_udp_tcp_port()
            conf = ub_dir / "unbound.conf"
            conf.write_text(
                UNBOUND_CONF.format(
                    port=ub_port, dir=ub_dir, cache_max_ttl=CACHE_MAX_TTL, zg_port=zg_port
                )
            )
            check = subprocess.run(
                [str(Path(unbound_bin).with_name("unbound-checkconf")), str(conf)],
                capture_output=True,
                text=True,
                timeout=20,
            )
            assert check.returncode == 0, f"unbound-checkconf: {check.stdout}{check.stderr}"
            (ub_dir / "unbound.log").unlink(missing_ok=True)
            ub = Proc([unbound_bin, "-d", "-c", str(conf)], None).spawn()
            procs.append(ub)
            deadline = time.monotonic() + 15.0
            while True:
                try:
                    _wait_answer(ub_port, "ns1.example.test", time.monotonic() + 0.5, rd=True)
                    return ub, ub_port
                except AssertionError as e:
                    if ub.alive and time.monotonic() < deadline:
                        continue
                    log_path = ub_dir / "unbound.log"
                    log = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
                    ub.stop(timeout=3.0)
                    what = f"{e}\n{ub.describe()}\n--- unbound.log ---\n{log}"
                    if addr_in_use(what):
                        raise ProcessError(what) from None
                    raise AssertionError(what) from None

        ub, ub_port = retry_addr_in_use(start_unbound)
        yield Stack(zg, zg_port, zg.match["admin"], ub, ub_port, zone_a, zone_b, ub_dir)
    finally:
        for p in reversed(procs):
            p.stop(timeout=3.0)
        zone_a.close()
        zone_b.close()


def _responses(admin: str) -> int:
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://{admin}/status", timeout=2) as r:
        return int(json.load(r)["responses"])


def test_static_name_through_unbound_is_cached(stack: Stack) -> None:
    direct = _query(stack.zg_port, "www.example.test", rd=False)
    assert direct.flags & dns.flags.AA
    assert _addresses(direct) == [WWW]

    before = _responses(stack.zg_admin)
    first = _query(stack.ub_port, "www.example.test")
    assert first.rcode() == dns.rcode.NOERROR
    assert first.flags & dns.flags.RA
    assert not first.flags & dns.flags.AA  # a recursive answer
    assert _addresses(first) == [WWW]
    # The 5 min record TTL is capped by unbound's cache-max-ttl.
    assert 0 < first.answer[0].ttl <= CACHE_MAX_TTL
    asked = _responses(stack.zg_admin) - before
    assert asked >= 1  # unbound asked zonegate

    mid = _responses(stack.zg_admin)
    for _ in range(5):
        again = _query(stack.ub_port, "www.example.test")
        assert _addresses(again) == [WWW]
    # Answered from unbound's cache (unless the 2 s cap ran out on a slow machine).
    assert _responses(stack.zg_admin) - mid <= 1

    # Outside the stub zone nothing is looked up: refused locally.
    other = _query(stack.ub_port, "example.com")
    assert other.rcode() == dns.rcode.REFUSED


def test_gslb_switch_through_unbound(stack: Stack) -> None:
    first = _query(stack.ub_port, "api.example.test")
    assert first.rcode() == dns.rcode.NOERROR
    assert _addresses(first) == [VIP_A]
    assert first.answer[0].ttl <= GSLB_TTL
    assert _addresses(_query(stack.zg_port, "api.example.test", rd=False)) == [VIP_A]

    # Fail zone A: its health port refuses connections from now on.
    t0 = time.monotonic()
    stack.zone_a.close()
    direct_switch: float | None = None
    recursive_switch: float | None = None
    seen: list[tuple[float, str, str]] = []
    deadline = t0 + SWITCH_BOUND + 4.0
    for _ in range(2000):  # bounded by count and by time
        now = time.monotonic()
        if now > deadline or (direct_switch is not None and recursive_switch is not None):
            break
        if direct_switch is None:
            d = _addresses(_query(stack.zg_port, "api.example.test", rd=False))
            if d == [VIP_B]:
                direct_switch = time.monotonic() - t0
        if recursive_switch is None:
            r = _addresses(_query(stack.ub_port, "api.example.test"))
            seen.append((round(time.monotonic() - t0, 3), "unbound", ",".join(r)))
            if r == [VIP_B]:
                recursive_switch = time.monotonic() - t0
        time.sleep(0.02)

    print(
        f"\nGSLB switch after zone z1 failed: zonegate answers {VIP_B} after "
        f"{direct_switch if direct_switch is None else f'{direct_switch:.3f}'} s, "
        f"unbound (recursive, ttl {GSLB_TTL} s) after "
        f"{recursive_switch if recursive_switch is None else f'{recursive_switch:.3f}'} s"
    )
    assert direct_switch is not None, "zonegate never answered zone z2"
    assert recursive_switch is not None, f"unbound never answered zone z2: {seen[-10:]}"
    assert recursive_switch >= direct_switch - 0.05  # the resolver cannot be ahead
    assert recursive_switch <= SWITCH_BOUND

    # And it stays on z2: no stale z1 answer comes back.
    for _ in range(10):
        assert _addresses(_query(stack.ub_port, "api.example.test")) == [VIP_B]
        time.sleep(0.05)
