"""Gratuitous ARP after a link flap, seen on the wire (issue 12 item 16). Root only.

Two namespaces joined by a veth pair: the sender side ``a`` (``GarpSender`` alone, or a
``zonegate vrrp`` agent) and the peer ``b``, where `arpcap.py` (an AF_PACKET socket,
our tcpdump) prints every ARP frame. The link of ``a`` is flapped with ``ip link set
veth0 down`` / ``up``; with a socket bound to ETH_P_ARP the kernel left ENETDOWN
pending on it and the first ARP after the flap was lost (with ``garp.count: 1``, the
only one). The namespaces are named ``zgg-<pid>-a`` / ``-b`` and always deleted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.processes import Proc, start_process

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates network namespaces"),
    pytest.mark.timeout(120),
]

PREFIX = f"zgg-{os.getpid()}-"
VIP = "10.78.0.100"
ARPCAP = Path(__file__).with_name("arpcap.py")
TOPO = """
zones:
  lab:
    vips: [{vip}]
vrrp:
  instances:
    n1:
      zone: lab
      interface: veth0
      vrid: 78
      priority: 150
      advert_interval: 100ms
      vips: [{vip}/24]
      garp: {{count: 1, spacing: 20ms, repeat: 0s, refresh: 0s}}
      admin: 127.0.0.1:9961
"""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=10)


def in_ns(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


@pytest.fixture
def pair() -> Iterator[tuple[str, str]]:
    """Namespaces a (10.78.0.1) and b (10.78.0.2), each with veth0, linked."""
    a, b = PREFIX + "a", PREFIX + "b"
    try:
        ip("netns", "add", a)
        ip("netns", "add", b)
        ip("link", "add", "zgga", "netns", a, "type", "veth", "peer", "zggb", "netns", b)
        for ns, dev, addr in ((a, "zgga", "10.78.0.1/24"), (b, "zggb", "10.78.0.2/24")):
            ip("-n", ns, "link", "set", dev, "name", "veth0")
            ip("-n", ns, "addr", "add", addr, "dev", "veth0")
            ip("-n", ns, "link", "set", "veth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield a, b
    finally:
        for ns in (a, b):
            ip("netns", "del", ns, check=False)


@pytest.fixture
def capture(pair) -> Iterator[Proc]:
    """arpcap.py on b's veth0, for at most 90 s."""
    _, b = pair
    proc = start_process(
        in_ns(b, sys.executable, str(ARPCAP), "veth0", "--duration", "90"),
        r"arpcap ready",
        timeout=20,
    )
    try:
        yield proc
    finally:
        proc.kill()


def garps(capture: Proc, mac: str, since: float) -> list[dict]:
    """Gratuitous ARPs for the VIP from `mac` captured after monotonic time `since`."""
    out = []
    for line in capture.stdout().splitlines():
        if not line.startswith("{"):
            continue
        ev = json.loads(line)
        if (
            ev.get("sender_ip") == VIP
            and ev.get("target_ip") == VIP
            and ev.get("src_mac") == mac
            and ev["t"] >= since
        ):
            out.append(ev)
    return out


def mac_of(ns: str) -> str:
    return json.loads(ip("-n", ns, "-j", "link", "show", "veth0").stdout)[0]["address"]


def wait_for(cond, timeout: float = 15.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


SENDER = """
import asyncio, subprocess, sys
from ipaddress import IPv4Address
from zonegate.vrrp.vip import GarpSender

mac = bytes.fromhex(sys.argv[1].replace(":", ""))
vip = IPv4Address(sys.argv[2])
sender = GarpSender("veth0", mac)

async def burst():
    sender.burst((vip,), 1, 0.0)

asyncio.run(burst())
for state in ("down", "up"):
    subprocess.run(["ip", "link", "set", "veth0", state], check=True)
asyncio.run(burst())
print(f"sent {sender.sent} failed {sender.failed}", flush=True)
"""


def test_garp_sender_first_frame_after_a_link_flap_goes_out(pair, capture):
    """The socket level: one ARP, flap, one ARP; both on the wire, no send failed."""
    a, _ = pair
    mac = mac_of(a)
    t0 = time.monotonic()
    res = subprocess.run(
        in_ns(a, sys.executable, "-c", SENDER, mac, VIP),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "sent 2 failed 0", res.stdout + res.stderr
    wait_for(lambda: len(garps(capture, mac, t0)) == 2, timeout=5, what="2 ARPs captured")


def test_agent_sends_its_single_garp_after_a_link_flap(pair, capture, tmp_path):
    """The agent level, with ``garp.count: 1``: master, link down (FAULT, VIP dropped),
    link up (Backup, then Master again): exactly one GARP on the wire after the flap."""
    a, _ = pair
    mac = mac_of(a)
    topo = tmp_path / "vrrp.yaml"
    topo.write_text(TOPO.format(vip=VIP))
    n1 = start_process(
        in_ns(a, sys.executable, "-m", "zonegate", "vrrp", str(topo), "--instance", "n1"),
        r"zonegate vrrp ready",
        timeout=20,
    )
    try:
        t0 = time.monotonic()
        wait_for(lambda: garps(capture, mac, t0), what="the GARP of the first takeover")
        ip("-n", a, "link", "set", "veth0", "down")
        wait_for(lambda: "link veth0 down" in n1.output(), what="the agent to see the link down")
        wait_for(lambda: "Master -> Fault" in n1.output(), what="FAULT")
        t_up = time.monotonic()
        ip("-n", a, "link", "set", "veth0", "up")
        wait_for(lambda: n1.output().count("-> Master") >= 2, what="Master again after the flap")
        wait_for(lambda: garps(capture, mac, t_up), timeout=5, what="the GARP after the flap")
        time.sleep(0.3)  # nothing more is due: count 1, no repeat, no refresh
        assert len(garps(capture, mac, t_up)) == 1, capture.stdout()
        assert "gratuitous ARP" not in n1.output(), n1.output()
    finally:
        n1.kill()
