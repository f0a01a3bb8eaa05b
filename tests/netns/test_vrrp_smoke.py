"""Smoke test of the real agent: two `zonegate vrrp` in two namespaces joined by a veth pair.

Root only. The namespaces are named `zgv1-<pid>-a` / `-b` and deleted in a finalizer
whatever happens. The agents run with a 100 ms advert interval so that a takeover
takes about 0.35 s; nothing here asserts a speed, only states and addresses.
"""

from __future__ import annotations

import json
import os
import signal
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

PREFIX = f"zgv1-{os.getpid()}-"
VIP = "10.77.0.100"
TOPO = """
zones:
  lab:
    vips: [{vip}]
vrrp:
  instances:
    n1: &node
      zone: lab
      interface: veth0
      vrid: 77
      priority: 150
      advert_interval: 100ms
      vips: [{vip}/24]
      garp: {{count: 2, spacing: 20ms, repeat: 1s, refresh: 2s}}
      admin: 127.0.0.1:9960
    n2:
      <<: *node
      priority: 100
"""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=10)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    a, b = PREFIX + "a", PREFIX + "b"
    try:
        ip("netns", "add", a)
        ip("netns", "add", b)
        ip("link", "add", "zgv1a", "netns", a, "type", "veth", "peer", "zgv1b", "netns", b)
        for ns, dev, addr in ((a, "zgv1a", "10.77.0.1/24"), (b, "zgv1b", "10.77.0.2/24")):
            ip("-n", ns, "link", "set", dev, "name", "veth0")
            ip("-n", ns, "addr", "add", addr, "dev", "veth0")
            ip("-n", ns, "link", "set", "veth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield a, b
    finally:
        for ns in (a, b):
            ip("netns", "del", ns, check=False)


def zonegate(ns: str, *args: str) -> list[str]:
    """argv running `zonegate ARGS` in namespace `ns`."""
    return ["ip", "netns", "exec", ns, sys.executable, "-m", "zonegate", *args]


def agent(ns: str, topo: Path, name: str, env: dict[str, str] | None = None) -> Proc:
    return start_process(
        zonegate(ns, "vrrp", str(topo), "--instance", name),
        r"zonegate vrrp ready",
        timeout=20,
        env=env,
    )


def has_vip(ns: str) -> bool:
    return f"inet {VIP}/" in ip("-n", ns, "addr", "show", "dev", "veth0").stdout


def fetch(ns: str, path: str) -> str:
    code = (
        "import sys, urllib.request;"
        "print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
    )
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code, f"http://127.0.0.1:9960{path}"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return out.stdout


def status(ns: str) -> dict:
    return json.loads(fetch(ns, "/status"))


def wait_for(cond, timeout: float = 15.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_master_elected_then_takeover_after_sigkill(pair, tmp_path):
    a, b = pair
    topo = tmp_path / "vrrp.yaml"
    topo.write_text(TOPO.format(vip=VIP))
    n1 = agent(a, topo, "n1")
    n2 = agent(b, topo, "n2")
    try:
        wait_for(lambda: has_vip(a), what="n1 to hold the VIP")
        wait_for(lambda: status(a)["state"] == "Master", what="n1 Master")
        wait_for(lambda: status(b)["adverts_received"] > 3, what="n2 to hear adverts")
        s2 = status(b)
        assert s2["state"] == "Backup"
        assert s2["master_ip"] == "10.77.0.1"
        assert not has_vip(b)
        assert "state Backup -> Master" in n1.output()
        s1 = status(a)
        assert s1["adverts_sent"] > 0
        assert s1["drops"]["bad_checksum"] == 0
        metrics = fetch(a, "/metrics")
        assert 'zonegate_vrrp_state{instance="n1",vrid="77"} 2.0' in metrics
        assert "zonegate_vrrp_adverts_sent_total" in metrics
        assert 'zonegate_vrrp_drops_total{instance="n1",reason="bad_ttl",vrid="77"}' in metrics

        n1.kill()  # SIGKILL: a crash (the VIP stays in n1's namespace, as with keepalived)
        wait_for(lambda: has_vip(b), what="n2 to take the VIP over")
        wait_for(lambda: status(b)["state"] == "Master", what="n2 Master")
        assert "state Backup -> Master" in n2.output()
    finally:
        n1.kill()
        n2.kill()


def test_graceful_stop_hands_over_and_removes_vip(pair, tmp_path):
    a, b = pair
    topo = tmp_path / "vrrp.yaml"
    topo.write_text(TOPO.format(vip=VIP))
    n1 = agent(a, topo, "n1")
    n2 = agent(b, topo, "n2")
    try:
        wait_for(lambda: has_vip(a), what="n1 to hold the VIP")
        wait_for(lambda: status(b)["adverts_received"] > 3, what="n2 to hear adverts")
        n1.signal(signal.SIGTERM)
        n1.proc.wait(timeout=10)
        assert n1.returncode == 0, n1.describe()
        assert not has_vip(a)
        wait_for(lambda: has_vip(b), timeout=5, what="n2 to hold the VIP")
        assert "handoff" in n1.output()
    finally:
        n1.kill()
        n2.kill()


QUORUM = """
      quorum: {control: ["http://10.77.0.1:9900"], lease_ttl: 1s, token_env: ZG_VRRP_TOKEN}
"""


def test_quorum_mode_holds_vip_only_with_the_lease(pair, tmp_path):
    """At-most-one: the master holds the VIP once it has the lease, hands the lease
    over on a graceful stop, and drops the VIP when the control plane goes away."""
    import hashlib

    a, b = pair
    topo = tmp_path / "vrrp.yaml"
    text = TOPO.format(vip=VIP)
    text = text.replace("      admin: 127.0.0.1:9960\n", "      admin: 127.0.0.1:9960" + QUORUM)
    topo.write_text(text)
    tokens = tmp_path / "tokens.yaml"
    digest = hashlib.sha256(b"vrrp-secret").hexdigest()
    tokens.write_text(f"tokens: [{{name: vrrp, role: operator, sha256: {digest}}}]\n")
    args = ["--store", "memory://", "--listen", "10.77.0.1:9900", "--tokens", str(tokens)]
    control = start_process(
        zonegate(a, "control", str(topo), *args),
        r"zonegate control ready",
        timeout=20,
    )
    env = {"ZG_VRRP_TOKEN": "vrrp-secret"}
    n1 = agent(a, topo, "n1", env)
    n2 = agent(b, topo, "n2", env)
    try:
        # The control plane refuses new holders for 10 s after it starts (restart guard).
        wait_for(lambda: has_vip(a), timeout=30, what="n1 to get the lease and the VIP")
        assert status(a)["state"] == "Master"
        assert status(a)["quorum"] == {"lease": "held"}
        assert not has_vip(b)
        # A planned switch: n1 hands over, releases the lease, n2 takes lease and VIP.
        n1.signal(signal.SIGTERM)
        n1.proc.wait(timeout=10)
        assert not has_vip(a)
        wait_for(lambda: has_vip(b), timeout=10, what="n2 to get the lease and the VIP")
        assert status(b)["quorum"] == {"lease": "held"}
        # The control plane goes away: n2 gives the VIP up once its lease runs out.
        control.kill()
        wait_for(lambda: not has_vip(b), timeout=10, what="n2 to drop the VIP without lease")
        assert status(b)["state"] == "Backup"
    finally:
        n1.kill()
        n2.kill()
        control.kill()


def test_tracked_command_moves_vip_and_notify_runs(pair, tmp_path):
    a, b = pair
    ok = tmp_path / "ok"
    ok.touch()
    log = tmp_path / "notify.log"
    hook = tmp_path / "notify.sh"
    hook.write_text(f'#!/bin/sh\necho "$1 $2" >> {log}\n')
    hook.chmod(0o755)
    extra = (
        f"      notify: {hook}\n"
        f'      track: [{{type: command, command: "test -f {ok}", weight: 60, '
        "interval: 100ms, rise: 1, fall: 1}]\n"
    )
    text = TOPO.format(vip=VIP).replace(
        "      admin: 127.0.0.1:9960\n", "      admin: 127.0.0.1:9960\n" + extra, 1
    )
    text = text.replace("      <<: *node\n", "      <<: *node\n      track: []\n")  # n2: none
    topo = tmp_path / "vrrp.yaml"
    topo.write_text(text)
    n1 = agent(a, topo, "n1")
    n2 = agent(b, topo, "n2")
    try:
        wait_for(lambda: has_vip(a), what="n1 to hold the VIP")
        ok.unlink()  # n1's check fails: 150 - 60 = 90 < 100
        wait_for(lambda: has_vip(b), what="n2 to take the VIP")
        wait_for(lambda: not has_vip(a), what="n1 to drop the VIP")
        assert status(a)["effective_priority"] == 90
        ok.touch()
        wait_for(lambda: has_vip(a), what="n1 to preempt back")
        wait_for(lambda: not has_vip(b), what="n2 to drop the VIP")
        wait_for(lambda: log.read_text().count("Master n1") >= 2, what="notify hooks")
        lines = [line for line in log.read_text().splitlines() if line.endswith(" n1")]
        assert lines[:4] == ["Backup n1", "Master n1", "Backup n1", "Master n1"]
    finally:
        n1.kill()
        n2.kill()
