"""`zonegate lb` with a taken port: one line naming the address, non-zero exit (item 24)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.integration.lbharness import Topo
from tests.peers.processes import free_port

pytestmark = pytest.mark.timeout(90)


def _run_lb(tmp_path, topo: Topo, workers: int, admin: int | None) -> subprocess.CompletedProcess:
    path = topo.write(tmp_path / "topology.yaml")
    argv = [sys.executable, "-m", "zonegate", "lb", str(path), "--zone", "z1"]
    argv += ["--workers", str(workers)]
    if admin is not None:
        argv += ["--admin", f"127.0.0.1:{admin}"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _taken() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s


def _assert_one_line(r: subprocess.CompletedProcess, address: str, what: str) -> None:
    print(f"\nexit {r.returncode}; stderr tail:\n{r.stderr[-600:]}")
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert "never retrieved" not in r.stderr
    assert "zonegate lb ready" not in r.stdout
    errors = [line for line in r.stderr.splitlines() if line.startswith("zonegate lb:")]
    assert errors == [f"zonegate lb: cannot listen on {address} ({what}): Address already in use"]


@pytest.mark.parametrize("workers", [1, 2])
def test_taken_listener_port(tmp_path, backend_factory, workers):
    (b,) = backend_factory.many(1, zone="z1")
    with _taken() as held:
        port = held.getsockname()[1]
        topo = Topo().pool("web", [b]).listener("web", port=port)
        r = _run_lb(tmp_path, topo, workers, admin=None)
    _assert_one_line(r, f"127.0.0.1:{port}", "listener http")


@pytest.mark.parametrize("workers", [1, 2])
def test_taken_admin_port(tmp_path, backend_factory, workers):
    (b,) = backend_factory.many(1, zone="z1")
    with _taken() as held:
        admin = held.getsockname()[1]
        for _ in range(3):  # the listener's free port may be taken by then: try another
            topo = Topo().pool("web", [b]).listener("web", port=free_port())
            r = _run_lb(tmp_path, topo, workers, admin=admin)
            if "(listener http)" not in r.stderr:
                break
    _assert_one_line(r, f"127.0.0.1:{admin}", "admin endpoint")
