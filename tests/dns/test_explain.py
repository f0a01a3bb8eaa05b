"""`zonegate dns explain` as a user runs it, against a real `zonegate control` and a
real `zonegate dns` following it (issue 12 items 14 and 28): with a zone drained through
the control plane, `explain --control URL` predicts what the server answers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import httpx
import pytest

from tests.dns.conftest import READY, DnsProc, HealthTarget
from tests.peers.processes import CONTROL_OPERATOR, start_control, start_process

pytestmark = pytest.mark.timeout(120)

TOPOLOGY = """\
zones:
  z1:
    region: north
    vips: [127.0.0.11]
    health: {{type: tcp, address: "127.0.0.1:{z1}", interval: 200ms, timeout: 200ms}}
  z2:
    region: south
    vips: [127.0.0.12]
    health: {{type: tcp, address: "127.0.0.1:{z2}", interval: 200ms, timeout: 200ms}}
dns:
  regions:
    north: {{prefixes: [10.1.0.0/16]}}
    south: {{prefixes: [10.2.0.0/16]}}
  domains:
    example.test:
      ns: [ns1]
      records:
        ns1: [{{type: A, value: 192.0.2.1}}]
      gslb:
        api: {{preferred: [admin], admin_order: [z1, z2], alternate: []}}
        geo: {{preferred: [topology], alternate: [admin], admin_order: [z2, z1]}}
"""


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Path]:
    z1, z2 = HealthTarget(), HealthTarget()
    path = tmp_path / "topology.yaml"
    path.write_text(TOPOLOGY.format(z1=z1.port, z2=z2.port))
    yield path
    z1.close()
    z2.close()


def explain(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zonegate", "dns", "explain", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "ZONEGATE_BUG_RAISE": "0"},
    )


def answer_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("answer: "))


def served(srv: DnsProc, name: str = "api.example.test") -> list[str]:
    q = dns.message.make_query(name, "A")
    r = dns.query.udp(q, "127.0.0.1", port=srv.port, timeout=2)
    return [rd.address for rrset in r.answer for rd in rrset]


def test_explain_applies_the_control_planes_admin_states(topology: Path, tmp_path: Path) -> None:
    control, url = start_control(tmp_path, topology)
    argv = [
        sys.executable, "-m", "zonegate", "dns", str(topology), "--listen", "127.0.0.1:0",
        "--admin", "127.0.0.1:0", "--control", url,
    ]  # fmt: skip
    srv = DnsProc(start_process(argv, READY, 20, env={"ZONEGATE_BUG_RAISE": "0"}), topology)
    try:
        assert served(srv) == ["127.0.0.11"]
        headers = {"Authorization": f"Bearer {CONTROL_OPERATOR}", "X-Reason": "test"}
        r = httpx.post(f"{url}/v1/zones/z1/drain", headers=headers, timeout=5)
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 10
        while served(srv) != ["127.0.0.12"]:
            assert time.monotonic() < deadline, "the server did not follow the drain"
            time.sleep(0.02)

        out = explain(str(topology), "api.example.test", "--client", "192.0.2.9", "--control", url)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == "control version 2: admin states z1 drain"
        assert "z1 down: 1/1 backends healthy (admin: drain, control version 2)" in out.stdout
        assert answer_line(out.stdout) == "answer: A 127.0.0.12 (z2), ttl 30s"
        # The server and its own /explain agree with the prediction.
        assert served(srv) == ["127.0.0.12"]
        live = httpx.get(
            f"{srv.admin_url}/explain",
            params={"name": "api.example.test", "client": "192.0.2.9"},
            timeout=5,
        ).text
        assert answer_line(live) == answer_line(out.stdout)

        # Without --control, explain shows the file's view (z1 is enabled there).
        plain = explain(str(topology), "api.example.test", "--client", "192.0.2.9")
        assert plain.returncode == 0, plain.stderr
        assert answer_line(plain.stdout) == "answer: A 127.0.0.11 (z1), ttl 30s"
        assert not plain.stdout.startswith("control version")

        # No control plane answers, no cache: refused, not a silent wrong prediction.
        control.kill()
        gone = explain(str(topology), "api.example.test", "--client", "192.0.2.9", "--control", url)
        assert gone.returncode == 1
        assert "no control plane answered" in gone.stderr
    finally:
        srv.proc.stop()
        control.kill()


def test_explain_help_subnet_and_each_fact_once(topology: Path) -> None:
    """`zonegate dns explain --help` is explain's own help; --subnet is the ECS subnet a
    resolver at --client sends; a zone's verdict is said once."""
    h = explain("--help")
    assert h.returncode == 0
    assert h.stdout.startswith("usage: zonegate dns explain")
    assert "--subnet NET" in h.stdout
    assert "--control URL" in h.stdout
    assert "--listen" not in h.stdout  # not the server's help

    out = explain(
        str(topology), "geo.example.test", "--client", "192.0.2.9", "--subnet", "10.1.2.0/24"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("geo.example.test A for 192.0.2.9 (ECS 10.1.2.0/24)")
    assert "client 10.1.2.0/24 -> region north (prefix 10.1.0.0/16) -> zones z1" in out.stdout
    assert answer_line(out.stdout) == "answer: A 127.0.0.11 (z1), ttl 30s, ECS scope /24"
    assert "z1 up: 1/1 backends healthy; z2 up: 1/1 backends healthy" in out.stdout
    assert "(up:" not in out.stdout

    bad = explain(str(topology), "geo.example.test", "--client", "192.0.2.9", "--subnet", "x")
    assert bad.returncode == 2
    assert "zonegate dns explain:" in bad.stderr
    missing = explain(str(topology), "geo.example.test")
    assert missing.returncode == 2
    assert "--client" in missing.stderr
