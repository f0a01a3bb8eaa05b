"""`zonegate lab up|drill|down` end to end, as root, with real namespaces and processes.

Each test uses its own namespace prefix (``zglt<pid>-``: not ``zglab-``, so a lab a
developer has up is never touched, and not ``zgl-``, so the VRRP tests' cleanup never
matches) and its own directory. A finalizer removes whatever a failed test left.
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

from zonegate.lab.lab import start_ticks
from zonegate.lab.netns import cleanup, list_namespaces

PREFIX = f"zglt{os.getpid()}-"


def lab(*args: str, timeout: float = 150.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zonegate", "lab", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, COLUMNS="150"),
    )


def ours() -> list[str]:
    return [ns for ns in list_namespaces() if ns.startswith(PREFIX)]


def recorded_pids(state: dict) -> list[tuple[int, int]]:
    return [(p["pid"], p["start_ticks"]) for p in state["processes"].values() if p["pid"]]


def assert_gone(pids: list[tuple[int, int]]) -> None:
    alive = [pid for pid, ticks in pids if start_ticks(pid) == ticks]
    assert not alive, f"processes still running: {alive}"
    assert not ours(), f"namespaces left: {ours()}"


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    yield
    cleanup(PREFIX)


def test_up_drill_down(tmp_path: Path):
    run_dir = tmp_path / "lab"
    up = lab("up", "--dir", str(run_dir), "--prefix", PREFIX)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "zonegate lab up: ready" in up.stdout
    assert f"ip netns exec {PREFIX}client dig" in up.stdout
    state = json.loads((run_dir / "state.json").read_text())
    assert state["ready"]
    assert state["vips"] == {"changping": "10.77.0.11", "yanqing": "10.77.0.12"}
    assert len(ours()) == 9
    pids = recorded_pids(state)
    assert len(pids) == 21

    drill = lab("drill", "--quick", "--dir", str(run_dir))
    report = json.loads((run_dir / "report.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert drill.returncode == 0, drill.stdout[-6000:] + drill.stderr[-3000:]
    assert report["ok"], [s["missed"] for s in report["steps"]]
    assert list(steps) == [
        "baseline",
        "kill-one",
        "kill-master",
        "partition",
        "heal",
        "cutover",
        "restore",
        "final",
    ]
    assert all(s["met"] for s in steps.values())
    assert "resolving through the GSLB DNS" in report["router"]

    # The VIP master's death: an outage the prober measured, within the bound.
    km = steps["kill-master"]
    assert km["failed"] == 0
    assert 0 < km["detect_s"] <= km["budget"]["max_detect_s"]
    outage = report["vip_outages"][0]
    assert outage["step"] == "kill-master"
    assert (outage["from"], outage["to"]) == ("lb-cp-1", "lb-cp-2")
    assert 0 < outage["outage_ms"] <= km["budget"]["max_detect_s"] * 1000
    assert outage["probes_lost"] > 0
    checks = {c["name"]: c for c in km["checks"]}
    assert checks["VIP outage measured and bounded"]["ok"]
    assert checks["lb-cp-2 took the VIP"]["ok"]

    # The partition: changping's clients on yanqing, nothing failed.
    part = steps["partition"]
    assert part["failed"] == 0
    assert part["routes"]["changping"]["yanqing"] > 0
    pchecks = {c["name"]: c for c in part["checks"]}
    assert pchecks["changping's devices on yanqing"]["ok"]
    assert pchecks["GSLB answers yanqing only"]["ok"]

    # Restored: the preferred node holds the VIP again, the split is back.
    assert {c["name"]: c["ok"] for c in steps["restore"]["checks"]}["lb-cp-1 holds the VIP again"]
    assert report["timeline"]
    assert report["lab"]["prefix"] == PREFIX
    page = (run_dir / "report.html").read_text()
    assert "zonegate lab: what clients saw" in page
    assert "<svg" in page

    # The drill's restarts are in the state file, so `down` finds them too.
    state = json.loads((run_dir / "state.json").read_text())
    pids += recorded_pids(state)
    down = lab("down", "--dir", str(run_dir))
    assert down.returncode == 0, down.stdout + down.stderr
    assert_gone(pids)
    assert not (run_dir / "state.json").exists()
    again = lab("down", "--dir", str(run_dir), "--prefix", PREFIX)
    assert again.returncode == 0
    assert "nothing to remove" in again.stdout


def test_failed_up_leaves_nothing(tmp_path: Path):
    """The DNS port set to the control plane's: `up` fails half-way and tears down."""
    run_dir = tmp_path / "lab"
    up = lab("up", "--dir", str(run_dir), "--prefix", PREFIX, "--dns-port", "9900")
    assert up.returncode == 2, up.stdout + up.stderr
    assert "dns exited" in up.stdout
    assert "tearing down" in up.stdout
    assert not (run_dir / "state.json").exists()
    assert not ours()
    down = lab("down", "--dir", str(run_dir), "--prefix", PREFIX)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "nothing to remove" in down.stdout


def test_down_after_a_killed_up(tmp_path: Path):
    """`up` SIGKILLed while starting processes: `down` finds and removes everything."""
    run_dir = tmp_path / "lab"
    proc = subprocess.Popen(
        [sys.executable, "-m", "zonegate", "lab", "up", "--dir", str(run_dir), "--prefix", PREFIX],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state_file = run_dir / "state.json"
    deadline = time.monotonic() + 60
    pids: list[tuple[int, int]] = []
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if state_file.exists():
                try:
                    pids = recorded_pids(json.loads(state_file.read_text()))
                except ValueError:
                    pids = []
                if len(pids) >= 5:
                    break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(pids) >= 5, "up never started processes"
    assert ours()
    down = lab("down", "--dir", str(run_dir), "--prefix", PREFIX)
    assert down.returncode == 0, down.stdout + down.stderr
    assert_gone(pids)
