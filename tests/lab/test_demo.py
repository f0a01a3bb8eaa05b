"""`zonegate demo`: its pure parts (ports, layout, budgets), then whole runs as processes.

The whole runs start real backends, LBs, DNS, HTTPDNS and the control plane on
loopback; they check the exit status, the JSON and HTML reports, and that no process
the demo started outlives it (the PIDs are collected both from the report and by
watching the demo's children while it runs). With ZONEGATE_UPDATE_SCREENSHOTS=1 the
quick run's report.html is also shot in headless Chromium into docs/demo-report.png.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from tests.peers.processes import ProcessError, addr_in_use, free_port, retry_addr_in_use
from zonegate.balance.shard import zone_for
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
STEP_NAMES = [
    "baseline",
    "kill-one",
    "drain",
    "kill-all",
    "kill-lb",
    "cutover",
    "restore",
    "final",
]


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
    assert new.dns.listen == HostPort("127.0.0.1", 6353)
    assert new.dns.admin == HostPort("127.0.0.1", 10953)
    assert new.dns.httpdns_listen == HostPort("127.0.0.1", 9053)
    # Everything else is unchanged.
    assert new.pools["web-cp"].health == topo.pools["web-cp"].health
    assert new.split == topo.split


def test_layout_of_the_example():
    layout = plan_layout(load_topology(EXAMPLE), EXAMPLE)

    scn = layout.scenario
    assert (scn.zone, scn.home, scn.backup, scn.other) == (
        "changping",
        "web-cp",
        "web-yq",
        "yanqing",
    )
    assert scn.host == "api.example.test"
    assert (layout.dns.port, layout.dns_admin.port, layout.httpdns.port) == (5353, 9953, 8053)
    assert layout.control == HostPort("127.0.0.1", 9900)
    assert (scn.kill_one, scn.drain) == ("cp-3", "cp-2")
    assert [b.name for b in layout.backends] == ["cp-1", "cp-2", "cp-3", "yq-1", "yq-2", "yq-3"]
    assert [(lb.zone, lb.bind.port, lb.admin.port) for lb in layout.lbs] == [
        ("changping", 8080, 9901),
        ("yanqing", 8090, 9902),
    ]
    assert layout.shares == {"changping": 0.5, "yanqing": 0.5}
    assert [s.name for s in demo.default_steps(scn, quick=True)] == STEP_NAMES


def test_layout_engine_is_the_zones_unless_the_demo_says_otherwise(tmp_path):
    text = EXAMPLE.read_text()
    # changping keeps the default (builtin); yanqing asks for haproxy in the file.
    text = text.replace("  yanqing:\n", "  yanqing:\n    lb_engine: haproxy\n", 1)
    path = tmp_path / "t.yaml"
    path.write_text(text)
    topo = load_topology(path)
    assert topo.zones["yanqing"].lb_engine == "haproxy"
    engines = {lb.zone: lb.engine for lb in plan_layout(topo, path).lbs}
    assert engines == {"changping": "builtin", "yanqing": "haproxy"}
    for engine in ("builtin", "haproxy"):
        layout = plan_layout(topo, path, engine=engine)
        assert {lb.engine for lb in layout.lbs} == {engine}


def test_population_spreads_over_the_zones_by_the_shard_hash():
    split = load_topology(EXAMPLE).split["api.example.test"]
    ids = demo.population(2000)

    assert len(ids) == len(set(ids)) == 2000
    zones = [zone_for(dev, split)[0] for dev in ids]
    # 50/50 split: each zone gets about half of the devices.
    assert 850 < zones.count("changping") < 1150


def test_the_example_addresses_include_the_gslb():
    ports = sorted(a.port for a in demo.topology_addresses(load_topology(EXAMPLE)))
    assert ports == [5353, 8053, 8080, 8090, 8101, 8102, 8103, 8201, 8202, 8203, 9901, 9902, 9953]


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


# --- the live view and the summary at small sizes (issue 12 item 26) ----------------


class _Proc:
    """Stands in for a started process: only whether it runs is shown."""

    def __init__(self, alive: bool) -> None:
        self.alive = alive


class _Load:
    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples


class _Client:
    name = "zonegate.client SDK (40 devices, one AsyncTransport each)"
    version = 3


def _drill_mid_step(tmp_path: Path, width: int, height: int, backends: int = 3):
    """A Drill of the example (or of `backends` per zone) in its kill-all step, with
    errors, a drained and an ejected backend, recorded on a console of that size."""
    topo = load_topology(EXAMPLE)
    pools = dict(topo.pools)
    for name, prefix in (("web-cp", "cp"), ("web-yq", "yq")):
        first = pools[name].backends[0]
        extra = [
            first.model_copy(
                update={
                    "name": f"{prefix}-{i}",
                    "address": HostPort("127.0.0.1", first.address.port + 10 + i),
                }
            )
            for i in range(4, backends + 1)
        ]
        pools[name] = pools[name].model_copy(update={"backends": [*pools[name].backends, *extra]})
    topo = topo.model_copy(update={"pools": pools})
    layout = plan_layout(topo, EXAMPLE)
    assert len(layout.backends) == 2 * backends
    console = Console(width=width, height=height, record=True, force_terminal=True)
    steps = demo.default_steps(layout.scenario, quick=True)
    drill = demo.Drill(layout, steps, tmp_path, console)
    drill.backends = {b.name: _Proc(b.name != "cp-3") for b in layout.backends}
    drill.lbs = {lb.zone: _Proc(True) for lb in layout.lbs}
    drill.services = {n: _Proc(True) for n in ("control", "dns", "httpdns")}
    samples = []
    for i in range(600):
        zone = ("changping", "yanqing")[i % 2]
        backend = [b.name for b in layout.backends if b.zone == zone][i % backends]
        if i % 50 == 0:
            samples.append(Sample(i / 300, zone, "", 0, 0.2, "connect_refused", home=zone))
        else:
            samples.append(Sample(i / 300, zone, backend, 200, 0.1234, "", home=zone))
    drill.load = _Load(samples)
    drill.router = _Client()
    run = StepRun(steps[3], drill.now())
    drill.runs, drill.current = [*(StepRun(s, 0.0) for s in steps[:3]), run], run
    backend = {"health": "up", "admin": "enabled", "available": True}
    drill.status["changping"] = {
        "pools": {
            "web-cp": {
                "backends": [
                    {**backend, "id": "cp-1"},
                    {**backend, "id": "cp-2", "admin": "drain", "available": False},
                    {**backend, "id": "cp-3", "health": "down", "ejected_for": 4.2},
                ]
            }
        }
    }
    return drill, console


def _shown(console: Console) -> list[str]:
    return console.export_text().rstrip("\n").splitlines()


@pytest.mark.parametrize(("width", "height"), [(80, 24), (80, 16), (100, 30)])
def test_live_view_fits_a_small_terminal(tmp_path, width, height):
    drill, console = _drill_mid_step(tmp_path, width, height)

    console.print(drill.render())

    lines = _shown(console)
    assert len(lines) <= height
    assert all(len(line) <= width for line in lines)
    assert not any("…" in line for line in lines), "\n".join(lines)
    text = "\n".join(lines)
    assert "changping" in text
    assert "yanqing" in text
    assert "connect_refused" in text  # errors move under the table, not dropped
    assert "cp-3" in text


def test_live_view_compact_layout_has_a_legend_and_every_column(tmp_path):
    drill, console = _drill_mid_step(tmp_path, 80, 24)

    console.print(drill.render())

    lines = _shown(console)
    header = next(line for line in lines if line.startswith("zone "))
    assert header.split() == ["zone", "LB", "req/s", "dev/s", "reqs", "f/o", "failed", "p99", "1s"]
    assert any(line.startswith("dev/s: ") for line in lines)  # the legend of the short names
    assert any(line.startswith("cp-3 ") and "dead" in line for line in lines)


def test_live_view_many_backends_falls_back_to_one_line_per_zone(tmp_path):
    drill, console = _drill_mid_step(tmp_path, 80, 24, backends=8)

    console.print(drill.render())

    lines = _shown(console)
    assert len(lines) <= 24
    assert not any("…" in line for line in lines)
    assert any(line.startswith("changping: cp-1 up") for line in lines)


def test_live_view_keeps_the_full_layout_on_a_large_terminal(tmp_path):
    drill, console = _drill_mid_step(tmp_path, 140, 40)

    console.print(drill.render())

    text = console.export_text()
    assert "devices req/s" in text
    assert "127.0.0.1:8080 up" in text
    assert "…" not in text


def test_natural_width_is_what_rich_measures(tmp_path):
    # The live view sizes its tables without rich's (slow) measurement; they must agree.
    drill, console = _drill_mid_step(tmp_path, 80, 24)
    tables = [
        part
        for compact in (False, True)
        for part in drill._view(compact, per_zone=False).renderables
        if isinstance(part, Table)
    ]
    tables.append(demo.summary_table(_finished_runs()))
    wide = console.options.update_width(10_000)
    for table in tables:
        assert demo._natural_width(table) == Measurement.get(console, wide, table).maximum


def _finished_runs() -> list[StepRun]:
    layout = plan_layout(load_topology(EXAMPLE), EXAMPLE)
    runs = []
    for step in demo.default_steps(layout.scenario, quick=True):
        run = StepRun(step, 0.0, end=3.0, fault=1.0, detect=1.34)
        samples = [ok(0.01 * i) for i in range(1200)] + [bad(2.0) for _ in range(12)]
        samples += [Sample(2.5, "a", "b1", 200, 1.2345, "")] * 20
        evaluate(run, samples)
        runs.append(run)
    return runs


@pytest.mark.parametrize("width", [80, 100])
def test_summary_table_fits_80_columns(width):
    console = Console(width=width, record=True, force_terminal=True)

    demo.print_summary(console, _finished_runs())

    lines = _shown(console)
    assert not any("…" in line for line in lines), "\n".join(lines)
    header = next(line for line in lines if line.startswith("step "))
    short = ["step", "reqs", "failed", "f/o", "p50", "p99", "detect", "recover", "met"]
    assert header.split() == short
    kill_all = next(line for line in lines if line.startswith("kill-all "))
    assert "12 (12 after)" in kill_all
    assert "1234ms" in kill_all  # the p99, short form
    # the budgets, left out of the table, are under it
    assert any("budget:  fail<=0 after det det<=6s rec<=6s" in line for line in lines)


def test_summary_table_is_whole_on_a_wide_terminal():
    console = Console(width=140, record=True, force_terminal=True)

    demo.print_summary(console, _finished_runs())

    text = console.export_text()
    assert "…" not in text
    assert "fail<=0 after det det<=6s rec<=6s" in text
    assert "failovers" in text
    assert "budget:" not in text


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
    proc, out, seen = _run_demo(["--quick"], tmp_path)

    assert proc.returncode == 0, out
    # By default both reports go to the run directory, and the demo says where.
    run_dir = tmp_path / "run"
    report_path, html_path = run_dir / "report.json", run_dir / "report.html"
    assert str(report_path) in out
    assert str(html_path) in out
    report = json.loads(report_path.read_text())
    assert report["ok"] is True
    assert [s["name"] for s in report["steps"]] == STEP_NAMES
    for step in report["steps"]:
        assert step["met"], (step["name"], step["missed"], out)
        assert step["requests"] > 100
        assert step["failed_counted"] == 0
    by_name = {s["name"]: s for s in report["steps"]}
    # The GSLB answered as the client routes.
    assert {c["name"]: c["ok"] for c in by_name["baseline"]["checks"]} == {
        "httpdns agrees": True,
        "dns answers": True,
        "every backend answers": True,
    }
    # The backup pool answered changping's clients while web-cp was down.
    spilled = by_name["kill-all"]["answered"]["changping"]
    assert sum(n for b, n in spilled.items() if b.startswith("yq-")) > 0
    # kill-lb: changping's devices moved to yanqing's LB in the client, losing nothing.
    kill_lb = by_name["kill-lb"]
    assert kill_lb["routes"]["changping"].get("yanqing", 0) > 0
    assert kill_lb["failovers"] > 0
    assert kill_lb["recover_s"] is not None
    assert kill_lb["recover_s"] <= kill_lb["budget"]["max_recover_s"]
    moved = next(c for c in kill_lb["checks"] if c["name"] == "changping's devices on yanqing")
    assert moved["ok"], moved
    # cutover: once the client follows the new version, everything goes to yanqing.
    cutover = by_name["cutover"]
    assert cutover["detect_s"] is not None
    after = next(c for c in cutover["checks"] if c["name"] == "all traffic on yanqing")
    assert after["ok"], after
    versions = [v["version"] for v in report["versions"]]
    assert versions == sorted(versions)
    assert len(versions) >= 4
    # The drained backend took nothing new; the restored ones took traffic again, and
    # the split is back: each zone serves its own devices.
    assert by_name["restore"]["recover_s"] is not None
    assert set(by_name["final"]["answered"]["changping"]) == {"cp-1", "cp-2", "cp-3"}
    assert by_name["final"]["routes"] == {
        "changping": {"changping": by_name["final"]["routes"]["changping"]["changping"]},
        "yanqing": {"yanqing": by_name["final"]["routes"]["yanqing"]["yanqing"]},
    }
    # The timeline covers the run, both zones.
    tl = report["timeline"]
    assert set(tl["ok"]) == {"changping", "yanqing"}
    assert sum(tl["ok"]["changping"]) > 0
    assert sum(tl["errors"]["changping"]) == 0
    # Issue 12 item 27: the timeline also counts by the zone whose backends served (the
    # backends' X-Zone). From a second after kill-all's detection to its end,
    # changping's LB still answers, but only yanqing's backends serve.
    kill_all = by_name["kill-all"]
    first = kill_all["fault_s"] + kill_all["detect_s"] + 1.0
    window = slice(
        math.ceil((first - tl["start_s"]) / tl["bucket_s"]),
        math.floor((kill_all["end_s"] - tl["start_s"]) / tl["bucket_s"]),
    )
    assert sum(tl["ok"]["changping"][window]) > 0
    assert sum(tl["served"]["changping"][window]) == 0
    assert sum(tl["served"]["yanqing"][window]) >= sum(tl["ok"]["changping"][window])
    assert sum(tl["served"]["changping"]) > 0
    # Six backends, control, dns, httpdns, two LBs; the three restarted backends and
    # the restarted LB: 15 PIDs.
    pids = _report_pids(report)
    assert len(pids) >= 15
    assert set(report["processes"]) >= {"control", "dns", "httpdns", "lb changping", "cp-1"}
    assert seen <= pids  # the report names every process the demo started
    _assert_no_leftovers(pids | seen)
    assert "every budget met" in out
    for log in ("lb-changping.log", "control.log", "dns.log", "httpdns.log"):
        assert (run_dir / log).is_file()

    page = html_path.read_text()
    assert "<svg" in page
    assert "<script" not in page
    for name in STEP_NAMES:
        assert f'data-step="{name}"' in page
    assert page.count('class="fault"') == 5  # kill-one, drain, kill-all, kill-lb, cutover
    _screenshot(html_path, tmp_path)


def _screenshot(html_path: Path, tmp_path: Path) -> None:
    """Shoot the report in headless Chromium; copy it to docs/ on request."""
    if os.environ.get("ZONEGATE_UPDATE_SCREENSHOTS") != "1":
        return
    from tests.control.test_dashboard import CHROMIUM_ARGS, _chromium

    playwright_sync = pytest.importorskip("playwright.sync_api")
    chromium = _chromium()
    shot = tmp_path / "demo-report.png"
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            page.goto(html_path.as_uri())
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    shutil.copyfile(shot, REPO / "docs" / "demo-report.png")


@pytest.mark.timeout(120)
def test_ctrl_c_stops_every_process(tmp_path):
    env = dict(os.environ, ZONEGATE_DEMO_DIR=str(tmp_path / "run"), COLUMNS="140")
    proc = subprocess.Popen(
        [sys.executable, "-m", "zonegate", "demo", "--quick"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO,
    )
    seen: set[int] = set()
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 60
        # Wait until every process runs (the client has read the control plane).
        while time.monotonic() < deadline and proc.poll() is None:
            seen.update(c.pid for c in parent.children(recursive=True))
            log = tmp_path / "run" / "httpdns.log"
            if len(seen) >= 11 and log.is_file() and "ready" in log.read_text():
                break
            time.sleep(0.1)
        time.sleep(1.5)
        seen.update(c.pid for c in parent.children(recursive=True))
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.decode(errors="replace")
    assert proc.returncode == 130, text
    assert "SIGINT" in text
    assert "every process stopped" in text
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["interrupted"] == "SIGINT"
    assert report["ok"] is False
    assert len(seen) >= 11
    assert seen <= _report_pids(report)
    _assert_no_leftovers(seen | _report_pids(report))


@pytest.mark.timeout(150)
def test_demo_moves_its_ports_when_one_is_taken(tmp_path):
    # The example with changping's listener on a port this test holds (not 8080
    # itself: another program may take or free 8080 at any moment).
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    topo_path = tmp_path / "t.yaml"
    topo_path.write_text(EXAMPLE.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{taken}"))
    try:
        report_path = tmp_path / "report.json"
        args = ["--quick", "--topology", str(topo_path), "--report", str(report_path)]
        proc, out, seen = _run_demo(args, tmp_path)
    finally:
        holder.close()

    assert proc.returncode == 0, out
    assert "ports busy" in out
    assert f"127.0.0.1:{taken}" in out
    report = json.loads(report_path.read_text())
    assert report["ok"] is True
    assert report_path.with_suffix(".html").is_file()
    rewritten = Path(report["topology"])
    assert rewritten.parent == tmp_path / "run"
    topo = load_topology(rewritten)
    assert topo.listeners["http-cp"].bind.port != taken
    _assert_no_leftovers(_report_pids(report) | seen)


def test_demo_fails_cleanly_when_a_backend_cannot_start(tmp_path):
    # A port the topology names is taken, and the demo is told all ports are free:
    # the backend on it exits, the demo reports why and stops what it started.
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    topo_path = tmp_path / "t.yaml"
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

    def run() -> subprocess.CompletedProcess[str]:
        # The other ports are picked free; when one of them was taken before the demo
        # bound it (another failure than cp-1's), pick them again and rerun.
        ports = {8101: taken, **{p: free_port() for p in (8102, 8103, 8201, 8202, 8203)}}
        ports |= {p: free_port() for p in (8080, 8090, 9901, 9902, 5353, 9953, 8053)}
        # One pass: a new port may start with an old one (53535 and 5353).
        text = re.sub(
            r"127\.0\.0\.1:(\d+)\b",
            lambda m: f"127.0.0.1:{ports.get(int(m[1]), m[1])}",
            EXAMPLE.read_text(),
        )
        topo_path.write_text(text)
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
        )
        if "cp-1 exited" not in done.stdout and addr_in_use(done.stdout + done.stderr):
            raise ProcessError(done.stdout + done.stderr)
        return done

    try:
        proc = retry_addr_in_use(run)
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


HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")


@pytest.mark.skipif(HAPROXY is None, reason="HAProxy is not installed (apt-get install haproxy)")
@pytest.mark.timeout(150)
def test_quick_demo_on_the_haproxy_engine_meets_every_budget(tmp_path):
    """Issue 13 item 8: the same drills and budgets with HAProxy moving the bytes."""
    proc, out, seen = _run_demo(["--quick", "--engine", "haproxy"], tmp_path)

    assert proc.returncode == 0, out
    run_dir = tmp_path / "run"
    report = json.loads((run_dir / "report.json").read_text())
    assert report["ok"] is True
    assert report["engines"] == {"changping": "haproxy", "yanqing": "haproxy"}
    assert [s["name"] for s in report["steps"]] == STEP_NAMES
    for step in report["steps"]:
        assert step["met"], (step["name"], step["missed"], out)
        assert step["requests"] > 100
        assert step["failed_counted"] == 0
        assert all(c["ok"] for c in step["checks"]), (step["name"], step["checks"])
    by_name = {s["name"]: s for s in report["steps"]}
    spilled = by_name["kill-all"]["answered"]["changping"]
    assert sum(n for b, n in spilled.items() if b.startswith("yq-")) > 0
    assert by_name["kill-lb"]["failovers"] > 0
    assert set(by_name["final"]["answered"]["changping"]) == {"cp-1", "cp-2", "cp-3"}
    assert "(haproxy engine)" in out
    for zone in ("changping", "yanqing"):
        assert "engine haproxy (pid" in (run_dir / f"lb-{zone}.log").read_text()
    # pytest's run directory is too long for HAProxy's sockets: the demo put its state
    # directories under /tmp, said where, and removed them at the end.
    dirs = re.findall(r"HAProxy in\s+(/tmp/zg-lb-\w+)", out)
    assert len(dirs) == 2, out
    assert not any(Path(d).exists() for d in dirs)
    # The processes the demo did not start itself are HAProxy's (masters and workers,
    # children of the LBs); none outlives the demo, the SIGKILLed LB's included.
    pids = _report_pids(report)
    extra = seen - pids
    names = set()
    for pid in extra:
        try:
            names.add(psutil.Process(pid).name())
        except psutil.NoSuchProcess:
            pass
    assert names <= {"haproxy"}, names
    _assert_no_leftovers(pids | seen)
    assert "every budget met" in out


def test_demo_on_the_haproxy_engine_without_haproxy_says_so(tmp_path):
    env = dict(
        os.environ,
        ZONEGATE_DEMO_DIR=str(tmp_path / "run"),
        ZONEGATE_HAPROXY=str(tmp_path / "no-haproxy"),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "zonegate", "demo", "--quick", "--engine", "haproxy"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "the haproxy engine needs HAProxy" in proc.stdout
    assert "apt-get install haproxy" in proc.stdout
    assert not (tmp_path / "run" / "lb-changping.log").exists()  # nothing was started
