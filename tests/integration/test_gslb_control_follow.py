"""`zonegate dns` and `zonegate httpdns` with `--control URL` follow the control plane:
zone admin states (both) and split maps (httpdns), within 200 ms on loopback with
SQLite, the last good copy when the control plane is gone, the cache at start."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.message
import dns.query
import httpx
import pytest

from tests.dns.conftest import HealthTarget
from tests.peers.processes import CONTROL_OPERATOR, Proc, start_control, start_process
from zonegate.balance.shard import shard_of

pytestmark = pytest.mark.timeout(120)

TOPOLOGY = """\
zones:
  z1:
    vips: [127.0.0.11]
    health: {{type: tcp, address: "127.0.0.1:{z1}", interval: 200ms, timeout: 200ms}}
  z2:
    vips: [127.0.0.12]
    health: {{type: tcp, address: "127.0.0.1:{z2}", interval: 200ms, timeout: 200ms}}
dns:
  domains:
    example.test:
      ns: [ns1]
      records:
        ns1: [{{type: A, value: 192.0.2.1}}]
      gslb:
        api: {{preferred: [weight], answers: 2, ttl: 30s}}
        api-z1: {{zones: [z1], preferred: [all]}}
        api-z2: {{zones: [z2], preferred: [all]}}
split:
  api.example.test:
    sharding: 100
    zones:
      z1: {{lower: 0, upper: 50, domain: api-z1.example.test}}
      z2: {{lower: 50, upper: 100, domain: api-z2.example.test}}
"""


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Path]:
    z1, z2 = HealthTarget(), HealthTarget()
    path = tmp_path / "topology.yaml"
    path.write_text(TOPOLOGY.format(z1=z1.port, z2=z2.port))
    yield path
    z1.close()
    z2.close()


def _write(url: str, path: str, **kw) -> int:
    headers = {"Authorization": f"Bearer {CONTROL_OPERATOR}", "X-Reason": "test"}
    r = httpx.post(f"{url}{path}", headers=headers, timeout=5, **kw)
    assert r.status_code == 200, r.text
    return r.json()["version"]


def _wait(what: str, check: Callable[[], bool], since: float, within: float = 5.0) -> float:
    """Poll `check` every 2 ms until true; the seconds from `since` to then."""
    while not check():
        assert time.monotonic() < since + within, f"not seen within {within} s: {what}"
        time.sleep(0.002)
    took = time.monotonic() - since
    print(f"\n{what}: {took * 1000:.0f} ms after the write")
    return took


# --- zonegate dns --------------------------------------------------------------------


def _start_dns(path: Path, *control: str) -> tuple[Proc, int]:
    """Start `zonegate dns` on port 0 (it binds it itself); returns it and its port."""
    argv = [
        sys.executable, "-m", "zonegate", "dns", str(path), "--listen", "127.0.0.1:0",
        "--admin", "127.0.0.1:0", *control,
    ]  # fmt: skip
    ready = r"zonegate dns ready: udp\+tcp 127\.0\.0\.1:(?P<port>\d+),"
    proc = start_process(argv, ready, timeout=20, env={"ZONEGATE_BUG_RAISE": "0"})
    assert proc.match is not None
    return proc, int(proc.match["port"])


def _vips(port: int) -> set[str]:
    q = dns.message.make_query("api.example.test", "A")
    r = dns.query.udp(q, "127.0.0.1", port=port, timeout=2)
    return {rd.address for rrset in r.answer for rd in rrset}


def test_dns_follows_zone_admin_states(topology: Path, tmp_path: Path) -> None:
    control, url = start_control(tmp_path, topology)
    cache = tmp_path / "dns-cache.json"
    args = ("--control", url, "--control-cache", str(cache))
    srv, port = _start_dns(topology, *args)
    try:
        assert "control version 1" in srv.stdout()
        assert _vips(port) == {"127.0.0.11", "127.0.0.12"}

        t0 = time.monotonic()
        assert _write(url, "/v1/zones/z1/disable") == 2
        took = _wait(
            "zone z1 disabled: DNS answers z2 only", lambda: _vips(port) == {"127.0.0.12"}, t0
        )
        assert took < 5

        # The control plane dies: DNS keeps the last version it had.
        control.kill()
        time.sleep(0.3)
        assert _vips(port) == {"127.0.0.12"}
    finally:
        srv.stop()
        control.kill()

    # Started while the control plane is down: the cached copy, z1 still disabled.
    srv, port = _start_dns(topology, *args)
    try:
        assert _vips(port) == {"127.0.0.12"}
        assert "control version 2" in srv.stdout()
    finally:
        srv.stop()


# --- zonegate httpdns ----------------------------------------------------------------


def _start_httpdns(path: Path, *control: str) -> tuple[Proc, str]:
    argv = [
        sys.executable, "-m", "zonegate", "httpdns", str(path), "--listen", "127.0.0.1:0",
        *control,
    ]  # fmt: skip
    proc = start_process(
        argv,
        r"zonegate httpdns ready: listening on (?P<addr>\S+),",
        timeout=20,
        env={"ZONEGATE_BUG_RAISE": "0"},
    )
    assert proc.match is not None
    return proc, f"http://{proc.match['addr']}"


def _device_in(zone_shards: range) -> str:
    return next(f"dev-{i}" for i in range(1000) if shard_of(f"dev-{i}", 100) in zone_shards)


def test_httpdns_follows_cutover_and_restore(topology: Path, tmp_path: Path) -> None:
    control, url = start_control(tmp_path, topology)
    cache = tmp_path / "httpdns-cache.json"
    args = ("--control", url, "--control-cache", str(cache))
    srv, base = _start_httpdns(topology, *args)
    device = _device_in(range(0, 50))  # z1's half of the split

    def answer() -> tuple[int, dict]:
        r = httpx.get(f"{base}/d", params={"host": "api.example.test", "device_id": device})
        assert r.status_code == 200, r.text
        return int(r.headers["x-zonegate-version"]), r.json()["answers"][0]

    try:
        version, a = answer()
        assert version == 1
        assert a["split"]["zone"] == "z1"
        assert a["ips"] == ["127.0.0.11"]

        t0 = time.monotonic()
        v = _write(url, "/v1/cutover/api.example.test", json={"to": "z2"})
        took = _wait(
            "cut-over to z2 on HTTPDNS answers", lambda: answer()[1]["split"]["zone"] == "z2", t0
        )
        assert took < 5
        version, a = answer()
        assert version == v
        assert a["split"]["domain"] == "api-z2.example.test"
        assert a["ips"] == ["127.0.0.12"]

        # A drained zone is down for the GSLB: its own name falls back (fallback: all).
        _write(url, "/v1/zones/z2/drain")
        _write(url, "/v1/restore/api.example.test")
        _wait(
            "restore on HTTPDNS answers",
            lambda: answer()[1]["split"]["zone"] == "z1",
            time.monotonic(),
        )
        status = httpx.get(f"{base}/status").json()
        assert status["version"] == answer()[0]
        assert status["zones"]["z2"]["up"] is False
        assert "admin: drain" in status["zones"]["z2"]["reason"]
    finally:
        srv.stop()
        control.kill()

    # Started while the control plane is down: the cached split (restored to z1).
    srv, base = _start_httpdns(topology, *args)
    try:
        version, a = answer()
        assert version == 4
        assert a["split"]["zone"] == "z1"
    finally:
        srv.stop()
