"""`zonegate backends FILE [--zone Z]`: the demo backends a topology names, so the
README's Quick start answers 200 instead of 502 (issue 12 item 23)."""

from __future__ import annotations

import signal
import socket
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.integration.lbharness import Topo, start_lb
from tests.peers.processes import Proc, free_port, retry_addr_in_use, start_process
from zonegate.lab.backend import BackendSpec, backends_of
from zonegate.topology.load import load_topology

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "two-zones.yaml"
READY = r"zonegate backends ready: (?P<n>\d+) backends: (?P<list>.*)$"


def test_backends_of_the_example_by_zone():
    topo = load_topology(str(EXAMPLE))
    assert backends_of(topo, "changping") == [
        BackendSpec("cp-1", "changping", "127.0.0.1", 8101),
        BackendSpec("cp-2", "changping", "127.0.0.1", 8102),
        BackendSpec("cp-3", "changping", "127.0.0.1", 8103),
    ]
    every = backends_of(topo)
    assert [b.name for b in every] == ["cp-1", "cp-2", "cp-3", "yq-1", "yq-2", "yq-3"]
    assert {b.zone for b in every[3:]} == {"yanqing"}


def write(path: Path, topo: Topo) -> Path:
    path.write_text(topo.text())
    return path


def test_backends_of_refuses_unknown_zones_and_host_names(tmp_path):
    topo = Topo().pool("web", [{"address": "127.0.0.1:8101", "name": "a"}], zone="z1")
    loaded = load_topology(str(write(tmp_path / "t.yaml", topo)))
    with pytest.raises(ValueError, match="no zone 'nope'"):
        backends_of(loaded, "nope")
    with pytest.raises(ValueError, match="zone 'z2' has no pool backends"):
        backends_of(loaded, "z2")
    named = Topo().pool("web", [{"address": "api.internal:80", "name": "a"}], zone="z1")
    loaded = load_topology(str(write(tmp_path / "n.yaml", named)))
    with pytest.raises(ValueError, match=r"api\.internal:80, a host name"):
        backends_of(loaded)


def test_an_address_in_two_pools_is_started_once(tmp_path):
    shared = {"address": "127.0.0.1:8101", "name": "a"}
    topo = Topo().pool("p1", [shared], zone="z1").pool("p2", [{**shared, "name": "b"}], zone="z1")
    loaded = load_topology(str(write(tmp_path / "t.yaml", topo)))
    assert backends_of(loaded) == [BackendSpec("a", "z1", "127.0.0.1", 8101)]


def start_backends_cmd(tmp_path: Path) -> tuple[Proc, Topo]:
    """`zonegate backends FILE --zone z1` on a file naming two z1 backends and one z2
    backend; ports picked again when one was taken before the command bound it."""

    def attempt() -> tuple[Proc, Topo]:
        def entry(name: str) -> dict[str, str]:
            return {"address": f"127.0.0.1:{free_port()}", "name": name}

        topo = Topo().pool("web", [entry("a1"), entry("a2")], zone="z1")
        topo.pool("other", [entry("o1")], zone="z2")
        path = write(tmp_path / "topology.yaml", topo)
        argv = [sys.executable, "-m", "zonegate", "backends", str(path), "--zone", "z1"]
        return start_process(argv, READY), topo

    return retry_addr_in_use(attempt)


def get(address: str, path: str = "/") -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as r:
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()


def test_backends_command_serves_the_zone_and_an_lb_in_front_answers_200(tmp_path):
    proc, topo = start_backends_cmd(tmp_path)
    try:
        assert proc.match is not None
        assert proc.match["n"] == "2"
        assert "o1=" not in proc.match["list"]
        entries = topo.pool_doc("web")["backends"]
        for b in entries:
            status, headers, body = get(b["address"])
            assert (status, body) == (200, f"hello from {b['name']}\n".encode())
            assert headers["x-zone"] == "z1"
            assert get(b["address"], "/healthz")[0] == 200
        # The Quick start: an LB in front of them answers 200, not 502.
        topo.listener("web", zone="z1")
        with start_lb(tmp_path, topo, zone="z1") as lb:
            served = {lb.get("/").headers["x-backend"] for _ in range(6)}
            assert served == {"a1", "a2"}
            assert {b["id"] for b in lb.status()["pools"]["web"]["backends"]} == {"a1", "a2"}
        proc.signal(signal.SIGTERM)
        assert proc.proc.wait(10) == 0
    finally:
        proc.kill()


def test_backends_command_names_a_taken_address_in_one_line(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        topo = Topo().pool("web", [{"address": f"127.0.0.1:{port}", "name": "a1"}], zone="z1")
        path = write(tmp_path / "topology.yaml", topo)
        argv = [sys.executable, "-m", "zonegate", "backends", str(path)]
        proc = Proc(argv).spawn()
        assert proc.proc.wait(20) == 1
    err = proc.stderr()
    assert err.strip().splitlines() == [
        f"zonegate backends: cannot listen on 127.0.0.1:{port} (a1): address already in use"
    ]


def test_readme_quick_start_starts_the_backends_before_the_lb():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in quick.splitlines() if ln.startswith(".venv/bin/zonegate")]
    backends = next(i for i, ln in enumerate(lines) if " backends " in ln)
    lb = next(i for i, ln in enumerate(lines) if " lb " in ln)
    assert backends < lb
    assert "--zone changping" in lines[backends]
