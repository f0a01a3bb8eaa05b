#!/usr/bin/env python3
"""VRRP failover benchmark: the outage a client sees, zonegate vrrp against keepalived.

Root only: every run builds a fresh lab in network namespaces (`zonegate.lab.vrrplab`:
a bridge, nodes n1/n2/n3 with priorities 150/100/50, a client), starts one VRRP
daemon per node (all zonegate or all keepalived, the same VRID, VIP, priorities,
advert interval and preemption), waits until n1 holds the VIP and answers, and
starts a prober in the client namespace that sends a UDP probe to the VIP every
10 ms (an answer names the node). Then one fault, and the prober's longest outage
after it is the figure:

  crash       SIGKILL the master's daemon; its service and VIP go with it (a dead box)
  stop        SIGTERM the master's daemon: a graceful stop (zonegate: handoff off)
  linkdown    the master's port on the bridge goes down (a pulled cable)
  handoff     graceful stop with zonegate's graceful_handoff on (keepalived: plain stop)
  splitbrain  nftables drops VRRP (protocol 112) in and out of n1 and n2 until both
              are master and n2 (the lower priority, the last to send gratuitous ARPs)
              holds the client; then the rules go: the outage after the heal (a
              neighbour entry left on the node that gives up is a blackhole)

each at advert 1 s and 0.1 s, `--runs` times (default 5); the table shows the median
(min-max) per daemon and the zonegate/keepalived ratio of the medians.

`--handoffs N` measures something else instead: N graceful handoffs in a row between
two zonegate nodes (`VrrpLab.handoff_series`: SIGTERM the master, the backup takes
over, the stopped node comes back as the backup, repeat) under one prober, per advert
interval; the figure is the number of probes that failed (goal: 0; issue 12 item 17).

This is a report, not a test: it exits 0 whatever the figures, 2 when not root or
keepalived is missing. Every wait is bounded (a run gives up after ~60 s).

    sudo .venv/bin/python bench/vrrp_bench.py                 # full: 5 runs each, ~15 min
    sudo .venv/bin/python bench/vrrp_bench.py --quick         # 1 run each, advert 0.1 s only
    sudo .venv/bin/python bench/vrrp_bench.py --impl keepalived --scenario stop --runs 3
    sudo .venv/bin/python bench/vrrp_bench.py --json out.json
    sudo .venv/bin/python bench/vrrp_bench.py --handoffs 20 --advert 1 --advert 0.1
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from benchlib import cpu_model  # bench/benchlib.py

from zonegate.lab.netns import cleanup, run_prefix
from zonegate.lab.vrrplab import VrrpLab, VrrpSettings, keepalived_version

IMPLS = ("keepalived", "zonegate")
SCENARIOS = ("crash", "stop", "linkdown", "handoff", "splitbrain")
ADVERTS = (1.0, 0.1)
BLACKHOLE = 1.0  # seconds: an outage after a heal longer than this is counted as one
RECOVERY_TIMEOUT = 60.0  # seconds to wait for the VIP to answer again after a fault


def machine_info() -> dict[str, Any]:
    """Date, CPUs, kernel, Python and keepalived versions."""
    model = cpu_model()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "keepalived": keepalived_version() or "not installed",
    }


def run_once(impl: str, scenario: str, advert: float, workdir: Path) -> dict[str, Any]:
    """One run: fresh lab, daemons, prober, fault; returns the outage and details."""
    settings = VrrpSettings(advert=advert, graceful_handoff=scenario == "handoff")
    nodes_used = ("n1", "n2") if scenario == "splitbrain" else ("n1", "n2", "n3")
    down_wait = 3 * advert + 5.0
    with VrrpLab(workdir) as lab:
        daemons = lab.start_vrrp(impl, settings, nodes_used)  # type: ignore[arg-type]
        lab.wait_holders({"n1"}, timeout=down_wait)
        with lab.probe(duration=RECOVERY_TIMEOUT + 30) as run:
            run.wait_node("n1", timeout=5, stable=0.2)
            result: dict[str, Any] = {}
            t = time.monotonic()
            if scenario == "crash":
                daemons["n1"].crash()
            elif scenario in ("stop", "handoff"):
                # The stop blocks while a handoff lasts; the prober runs meanwhile.
                threading.Thread(target=daemons["n1"].stop, daemon=True).start()
            elif scenario == "linkdown":
                lab.link("n1", up=False)
            elif scenario == "splitbrain":
                for n in nodes_used:
                    lab.block_vrrp(n)
                lab.wait_holders(set(nodes_used), timeout=down_wait)
                # Let both be master for a while, then heal while n2 (which sent the
                # latest gratuitous ARPs) holds the client, if it does.
                time.sleep(max(0.5, 2 * advert))
                with contextlib.suppress(TimeoutError):
                    run.wait_node("n2", timeout=down_wait, stable=0.1)
                result["split_node"] = run.current_node()
                t = time.monotonic()
                for n in nodes_used:
                    lab.unblock_vrrp(n)
            winner = "n1" if scenario == "splitbrain" else "n2"
            try:
                run.wait_node(winner, timeout=RECOVERY_TIMEOUT, stable=max(1.0, 3 * advert))
                result["recovered"] = True
            except TimeoutError:
                result["recovered"] = False
            run.finish()
        result.update(
            outage=run.outage_after(t),
            holders=sorted(lab.holders()),
            last_node=run.summary.get("last_node"),
        )
        if scenario == "splitbrain":
            result["neigh_ok"] = lab.client_neighbour_mac() == lab.mac("n1")
        return result


def handoffs(count: int, adverts: tuple[float, ...], out: Path | None) -> int:
    """`--handoffs`: a series of `count` graceful handoffs per advert interval."""
    if count < 1:
        print("vrrp_bench: --handoffs must be at least 1", file=sys.stderr)
        return 2
    info = machine_info()
    print(json.dumps(info))
    results = []
    prefix = run_prefix()
    with tempfile.TemporaryDirectory(prefix="vrrp-bench-") as tmp:
        try:
            for advert in adverts:
                try:
                    with VrrpLab(Path(tmp) / f"handoffs-{advert:g}") as lab:
                        r = lab.handoff_series(count, advert=advert)
                except Exception as exc:
                    r = {"advert": advert, "error": f"{type(exc).__name__}: {exc}"[:2000]}
                    traceback.print_exc(limit=3)
                results.append(r)
                print(json.dumps(r), flush=True)
        finally:
            cleanup(prefix)
    print()
    print(f"{'advert':>6}  {'handoffs':>8}  {'probes':>7}  {'failed':>6}  {'longest ms':>10}")
    for r in results:
        if "error" in r:
            print(f"{r['advert']:>6g}  error: {r['error'][:60]}")
            continue
        print(
            f"{r['advert']:>6g}  {r['handoffs']:>8}  {r['probes']:>7}  {r['failed']:>6}  "
            f"{r['longest_outage_ms']:>10}"
        )
    if out:
        out.write_text(json.dumps({"machine": info, "handoffs": results}, indent=2))
    return 0


def fmt_s(values: list[float]) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.3f}"
    return f"{med:.3f} ({min(values):.3f}-{max(values):.3f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per cell (default 5)")
    parser.add_argument("--quick", action="store_true", help="1 run each, advert 0.1 s only")
    parser.add_argument("--impl", choices=IMPLS, action="append", help="default: both")
    parser.add_argument("--scenario", choices=SCENARIOS, action="append", help="default: all")
    parser.add_argument(
        "--advert", type=float, action="append", help="advert interval in s (default 1, 0.1)"
    )
    parser.add_argument("--json", type=Path, help="also write every run as JSON here")
    parser.add_argument(
        "--handoffs", type=int, default=0, help="instead: N graceful handoffs in a row, per advert"
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("vrrp_bench: needs root (network namespaces)", file=sys.stderr)
        return 2
    if args.handoffs:
        return handoffs(args.handoffs, tuple(args.advert or ADVERTS), args.json)
    if keepalived_version() is None and (args.impl is None or "keepalived" in args.impl):
        print("vrrp_bench: keepalived missing (apt-get install keepalived)", file=sys.stderr)
        return 2
    runs = 1 if args.quick else args.runs
    adverts = tuple(args.advert or ((0.1,) if args.quick else ADVERTS))
    impls = tuple(args.impl or IMPLS)
    scenarios = tuple(args.scenario or SCENARIOS)
    info = machine_info()
    print(json.dumps(info))
    results: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    prefix = run_prefix()
    with tempfile.TemporaryDirectory(prefix="vrrp-bench-") as tmp:
        try:
            for advert, scenario, i, impl in itertools.product(
                adverts, scenarios, range(runs), impls
            ):
                t0 = time.monotonic()
                try:
                    wd = Path(tmp) / f"{impl}-{scenario}-{advert:g}-{i + 1}"
                    r = run_once(impl, scenario, advert, wd)
                except Exception as exc:
                    r = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
                    traceback.print_exc(limit=3)
                r["seconds"] = round(time.monotonic() - t0, 1)
                results.setdefault((impl, scenario, advert), []).append(r)
                head = {"impl": impl, "scenario": scenario, "advert": advert, "run": i + 1}
                print(json.dumps({**head, **r}), flush=True)
        finally:
            cleanup(prefix)
    print()
    print(f"{'scenario':<11} {'advert':>6}  {'keepalived s':>24}  {'zonegate s':>24}  ratio")
    for advert in adverts:
        for scenario in scenarios:
            cells = []
            meds = []
            for impl in ("keepalived", "zonegate"):
                rs = results.get((impl, scenario, advert), [])
                ok = [r["outage"] for r in rs if "outage" in r]
                errs = len(rs) - len(ok)
                text = fmt_s(ok) + (f" [{errs} err]" if errs else "")
                if scenario == "splitbrain" and ok:
                    holes = sum(1 for v in ok if v > BLACKHOLE)
                    text += f" bh {holes}/{len(ok)}"
                cells.append(text)
                meds.append(statistics.median(ok) if ok else None)
            ka, zg = meds
            ratio = f"{zg / ka:.2f}" if ka and zg is not None else "-"
            print(f"{scenario:<11} {advert:>6g}  {cells[0]:>24}  {cells[1]:>24}  {ratio}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "runs": [
                        {"impl": k[0], "scenario": k[1], "advert": k[2], "results": v}
                        for k, v in results.items()
                    ],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
