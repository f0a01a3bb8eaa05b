"""`zonegate demo`: its pure parts (ports, layout, budgets), then whole runs as processes.

The whole runs start real backends and LBs on loopback; they check the exit status,
the JSON report, and that no process the demo started outlives it (the PIDs are
collected both from the report and by watching the demo's children while it runs).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import psutil
import pytest

from zonegate.lab import demo
from zonegate.lab.demo import (
    Budget,
    Check,
    Sample,
    Step,
    StepRun,
    evaluate,
    plan_layout,
    plan_ports,
    rewrite_topology,
)
from zonegate.topology.load import load_topology
from zonegate.topology.types import HostPort

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "two-zones.yaml"
STEP_NAMES = ["baseline", "kill-one", "drain", "kill-all", "restore", "final"]


# --- pure parts ---------------------------------------------------------------------


def test_plan_ports_keeps_a_free_layout():
    addrs = [HostPort("127.0.0.1", p) for p in (8080, 8101)]
    assert plan_ports(addrs, is_free=lambda a: True) == {}


def test_plan_ports_shifts_the_whole_layout_past_busy_ports():
    addrs = [HostPort("127.0.0.1", p) for p in (8080, 8101, 9901)]
    busy = {8080, 9080}  # the first shift (+1000) collides too

    moved = plan_ports(addrs, is_free=lambda a: a.port not in busy)

    assert moved == {a: HostPort("127.0.0.1", a.port + 2000) for a in addrs}


def test_plan_ports_falls_back_to_kernel_ports_for_the_busy_ones():
    addrs = [HostPort("127.0.0.1", p) for p in (8080, 8101)]

    moved = plan_ports(addrs, is_free=lambda a: a.port not in (8080,) and a.port < 9000)

    assert set(moved) == {addrs[0]}
    assert moved[addrs[0]].port not in (8080, 8101)


def test_rewrite_topology_moves_every_address(tmp_path):
    topo = load_topology(EXAMPLE)
    moved = {a: HostPort(a.host, a.port + 1000) for a in demo.topology_addresses(topo)}

    path, new = rewrite_topology(topo, moved, tmp_path / "t.yaml")

    assert path.is_file()
    assert sorted(a.port for a in demo.topology_addresses(new)) == sorted(
        a.port + 1000 for a in demo.topology_addresses(topo)
    )
    assert new.pools["web-cp"].backends[0].address == HostPort("127.0.0.1", 9101)
    assert new.zones["yanqing"].lb_admin == HostPort("127.0.0.1", 10902)
    # Everything else is unchanged.
    assert new.pools["web-cp"].health == topo.pools["web-cp"].health
    assert new.split == topo.split


def test_layout_of_the_example():
    layout = plan_layout(load_topology(EXAMPLE), EXAMPLE)

    scn = layout.scenario
    assert (scn.zone, scn.home, scn.backup) == ("changping", "web-cp", "web-yq")
    assert (scn.kill_one, scn.drain) == ("cp-3", "cp-2")
    assert [b.name for b in layout.backends] == ["cp-1", "cp-2", "cp-3", "yq-1", "yq-2", "yq-3"]
    assert [(lb.zone, lb.bind.port, lb.admin.port) for lb in layout.lbs] == [
        ("changping", 8080, 9901),
        ("yanqing", 8090, 9902),
    ]
    assert layout.shares == {"changping": 0.5, "yanqing": 0.5}
    assert [s.name for s in demo.default_steps(scn, quick=True)] == STEP_NAMES


def test_device_ids_follow_the_split_map():
    topo = load_topology(EXAMPLE)
    split = topo.split["api.example.test"]
    ids = demo.device_ids(topo, "api.example.test", "yanqing", ["changping", "yanqing"], 50)

    assert len(ids) == len(set(ids)) == 50
    for dev in ids:
        h = zlib.crc32(dev.encode()) % split.sharding
        assert split.zones["yanqing"].lower <= h < split.zones["yanqing"].upper


def test_layout_refuses_addresses_off_loopback(tmp_path):
    text = EXAMPLE.read_text().replace("127.0.0.1:8101", "10.0.0.1:8101")
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(demo.DemoError, match=r"loopback only; 10\.0\.0\.1:8101"):
        plan_layout(load_topology(path), path)


async def _nothing(d, run):
    pass


def _run(budget: Budget, fault: float | None = 1.0, detect: float | None = None) -> StepRun:
    run = StepRun(Step("s", "t", _nothing, 1.0, budget), start=0.0, end=10.0)
    run.fault = fault
    run.detect = detect
    return run


def ok(t: float, zone: str = "a", backend: str = "b1") -> Sample:
    return Sample(t, zone, backend, 200, 0.01, "")


def bad(t: float, zone: str = "a", error: str = "refused") -> Sample:
    return Sample(t, zone, "", 0, 0.01, error)


def test_evaluate_counts_and_percentiles():
    run = _run(Budget(max_failed=1))
    samples = [ok(0.1 * i) for i in range(98)] + [bad(5.0), Sample(6.0, "a", "b1", 502, 0.5, "")]

    evaluate(run, samples)

    assert (run.requests, run.failed, run.counted_failed) == (100, 2, 2)
    assert run.errors == {"refused": 1, "http_502": 1}
    assert run.p50 == pytest.approx(0.01)
    assert run.p99 == pytest.approx(0.01)
    assert run.answered == {"a": {"b1": 98}}
    assert not run.met
    assert run.missed == ["2 failed > 1"]


def test_evaluate_failures_after_detection_only():
    run = _run(Budget(max_failed=0, failed_after_detect=True), fault=1.0, detect=2.0)
    evaluate(run, [ok(0.5), bad(1.5), ok(2.5)])
    assert (run.failed, run.counted_failed, run.met) == (1, 0, True)

    undetected = _run(Budget(max_failed=0, failed_after_detect=True), fault=1.0, detect=None)
    evaluate(undetected, [ok(0.5), bad(1.5), ok(2.5)])
    assert (undetected.counted_failed, undetected.met) == (1, False)


def test_evaluate_recovery_is_the_first_matching_success_after_the_last_failure():
    run = _run(Budget(max_failed=5, max_recover=2.0), fault=1.0)
    run.watch_zone = "a"
    run.recover_when = lambda s: s.backend == "backup"
    samples = [
        ok(1.1, backend="backup"),
        bad(1.2),
        bad(1.3, zone="other"),  # not the watched zone: does not delay recovery
        ok(1.25, backend="local"),
        ok(1.4, backend="backup"),
    ]

    evaluate(run, samples)

    assert run.recover_s == pytest.approx(0.41)
    assert run.met


def test_evaluate_budget_times_and_checks():
    run = _run(Budget(max_detect=0.5, max_recover=1.0), fault=1.0, detect=2.0)
    run.checks.append(Check("advice", False, "x", required=False))
    run.late_checks.append(lambda ss: Check("late", len(ss) == 1, f"{len(ss)} samples"))

    evaluate(run, [ok(3.0)])

    assert [c.name for c in run.checks] == ["advice", "late"]
    assert run.missed == ["detect 1.00s > 0.5s", "no recover"]

    fine = _run(Budget(), fault=None)
    fine.checks.append(Check("advice", False, "x", required=False))
    evaluate(fine, [])
    assert fine.met


# --- whole runs ---------------------------------------------------------------------


def _run_demo(args: list[str], tmp_path: Path, timeout: float = 120.0):
    """Run `zonegate demo ARGS`, watching its children; return (proc, output, pids)."""
    env = dict(os.environ, ZONEGATE_DEMO_DIR=str(tmp_path / "run"), COLUMNS="140")
    proc = subprocess.Popen(
        [sys.executable, "-m", "zonegate", "demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO,
    )
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        parent = psutil.Process(proc.pid)
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                seen.update(c.pid for c in parent.children(recursive=True))
            except psutil.NoSuchProcess:
                break
            time.sleep(0.1)
        out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc, out.decode(errors="replace"), seen


def _assert_no_leftovers(pids: set[int]) -> None:
    time.sleep(0.2)
    alive = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE:
                alive.append((pid, p.cmdline()))
        except psutil.NoSuchProcess:
            pass
    assert not alive, f"processes left behind: {alive}"


def _report_pids(report: dict) -> set[int]:
    return {pid for pids in report["processes"].values() for pid in pids}


@pytest.mark.timeout(150)
def test_quick_demo_meets_every_budget(tmp_path):
    report_path = tmp_path / "tmp" / "report.json"

    proc, out, seen = _run_demo(["--quick", "--report", str(report_path)], tmp_path)

    assert proc.returncode == 0, out
    report = json.loads(report_path.read_text())
    assert report["ok"] is True
    assert [s["name"] for s in report["steps"]] == STEP_NAMES
    for step in report["steps"]:
        assert step["met"], (step["name"], step["missed"], out)
        assert step["requests"] > 100
        assert step["failed_counted"] == 0
    by_name = {s["name"]: s for s in report["steps"]}
    # The backup pool answered changping's clients while web-cp was down.
    spilled = by_name["kill-all"]["answered"]["changping"]
    assert sum(n for b, n in spilled.items() if b.startswith("yq-")) > 0
    # The drained backend took nothing new; the restored ones took traffic again.
    assert by_name["restore"]["recover_s"] is not None
    assert set(by_name["final"]["answered"]["changping"]) == {"cp-1", "cp-2", "cp-3"}
    # Every backend, both LBs, and the three restarted backends: 11 processes.
    pids = _report_pids(report)
    assert len(pids) >= 11
    assert seen <= pids  # the report names every process the demo started
    _assert_no_leftovers(pids | seen)
    assert "every budget met" in out
    assert (tmp_path / "run" / "lb-changping.log").is_file()


@pytest.mark.timeout(150)
def test_demo_moves_its_ports_when_8080_is_taken(tmp_path):
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", 8080))
        holder.listen()
    except OSError:
        holder.close()
        holder = None  # someone else holds 8080: the precondition holds anyway
    try:
        report_path = tmp_path / "report.json"
        proc, out, seen = _run_demo(["--quick", "--report", str(report_path)], tmp_path)
    finally:
        if holder is not None:
            holder.close()

    assert proc.returncode == 0, out
    assert "ports busy" in out
    assert "127.0.0.1:8080" in out
    report = json.loads(report_path.read_text())
    assert report["ok"] is True
    rewritten = Path(report["topology"])
    assert rewritten.parent == tmp_path / "run"
    topo = load_topology(rewritten)
    assert topo.listeners["http-cp"].bind.port != 8080
    _assert_no_leftovers(_report_pids(report) | seen)


def test_demo_fails_cleanly_when_a_backend_cannot_start(tmp_path):
    # A port the topology names is taken, and the demo is told all ports are free:
    # the backend on it exits, the demo reports why and stops what it started.
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    ports = {8101: taken, **{p: demo.free_port() for p in (8102, 8103, 8201, 8202, 8203)}}
    ports |= {p: demo.free_port() for p in (8080, 8090, 9901, 9902)}
    text = EXAMPLE.read_text()
    for old, new in ports.items():
        text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
    topo_path = tmp_path / "t.yaml"
    topo_path.write_text(text)
    report_path = tmp_path / "report.json"
    script = textwrap.dedent(
        f"""
        import sys
        from zonegate.lab import demo
        demo.port_is_free = lambda addr: True
        sys.exit(demo.run_demo({str(topo_path)!r}, True, {str(report_path)!r}))
        """
    )
    env = dict(os.environ, ZONEGATE_DEMO_DIR=str(tmp_path / "run"))
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
        )
    finally:
        holder.close()

    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "cp-1 exited" in proc.stdout
    report = json.loads(report_path.read_text())
    assert report["ok"] is False
    assert "cp-1" in report["error"]
    _assert_no_leftovers(_report_pids(report))


def test_demo_without_a_topology_says_what_to_do(tmp_path):
    script = "import sys; from zonegate.lab import demo; " + (
        "demo.find_default_topology = lambda: None; sys.exit(demo.run_demo(None, True, None))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, ZONEGATE_DEMO_DIR=str(tmp_path)),
    )
    assert proc.returncode == 2
    assert "--topology" in proc.stdout
