"""VRRP failover scenarios in the lab, for any mix of daemons (zonegate, keepalived).

Each function starts the daemons, checks who holds the VIP (read from the kernel) and
what the client sees (a UDP probe to the VIP every 10 ms, answered with the node's
name), and returns the prober's summary. The bounds are protocol bounds with a wide
margin for a loaded machine (a takeover must happen within the Master_Down_Interval
plus seconds), never speed targets; the figures are in bench/vrrp_bench.py.
"""

from __future__ import annotations

import time
from typing import Any

from zonegate.lab.vrrplab import Impl, VrrpLab, VrrpNode, VrrpSettings

SLACK = 5.0  # seconds added to every protocol bound


def down_interval(settings: VrrpSettings, priority: int) -> float:
    """RFC 5798 §6.1 Master_Down_Interval: 3 * advert + Skew_Time."""
    return 3 * settings.advert + skew(settings, priority)


def skew(settings: VrrpSettings, priority: int) -> float:
    """RFC 5798 §6.1 Skew_Time: ((256 - priority) * advert) / 256."""
    return (256 - priority) * settings.advert / 256


def start(
    lab: VrrpLab,
    impl: Impl | dict[str, Impl],
    settings: VrrpSettings,
    nodes: tuple[str, ...] = ("n1", "n2", "n3"),
) -> dict[str, VrrpNode]:
    """Start the daemons and wait until n1 (the highest priority) alone holds the VIP."""
    daemons = lab.start_vrrp(impl, settings, nodes)
    lab.wait_holders({"n1"}, timeout=down_interval(settings, 1) + SLACK)
    return daemons


def failover(
    lab: VrrpLab, daemons: dict[str, VrrpNode], settings: VrrpSettings, fault: str
) -> tuple[dict[str, Any], float]:
    """Apply `fault` to the master n1; n2 must take the VIP and answer the client.

    Returns the prober summary and the outage after the fault, in seconds.
    """
    with lab.probe(duration=60) as run:
        run.wait_node("n1", timeout=SLACK)
        t = time.monotonic()
        if fault == "crash":
            daemons["n1"].crash()
        elif fault == "stop":
            status = daemons["n1"].stop(timeout=down_interval(settings, 100) + SLACK)
            assert status == 0, f"graceful stop exited {status}\n{lab.describe()}"
        elif fault == "linkdown":
            lab.link("n1", up=False)
        else:
            raise ValueError(fault)
        bound = down_interval(settings, lab.priorities["n2"]) + SLACK
        # With its link down n1 goes to FAULT and drops the VIP (zonegate and keepalived
        # alike), so that it does not come back with the link while n2 holds it.
        lab.wait_holders({"n2"}, timeout=bound)
        run.wait_node("n2", timeout=bound, stable=max(0.5, 3 * settings.advert))
        summary = run.finish()
    assert summary["last_node"] == "n2", summary
    assert lab.client_neighbour_mac() == lab.mac("n2")
    return summary, run.outage_after(t)


def preempt_back(
    lab: VrrpLab, daemons: dict[str, VrrpNode], settings: VrrpSettings, *, restart: bool
) -> None:
    """After a failover to n2, bring n1 back (restart it, or its link up).

    With preemption n1 takes the VIP back and the client follows; without, n2 keeps it
    (checked for several Master_Down_Intervals).
    """
    if restart:
        daemons["n1"].start()
    else:
        lab.link("n1", up=True)
    bound = down_interval(settings, lab.priorities["n1"]) + SLACK
    if settings.preempt:
        lab.wait_holders({"n1"}, timeout=bound)
        with lab.probe(duration=30) as run:
            run.wait_node("n1", timeout=bound)
    else:
        deadline = time.monotonic() + 3 * down_interval(settings, lab.priorities["n1"]) + 0.5
        while time.monotonic() < deadline:
            assert lab.holders() == {"n2"}, f"n1 preempted with preempt off\n{lab.describe()}"
            time.sleep(0.05)
        with lab.probe(duration=30) as run:
            run.wait_node("n2", timeout=SLACK)


def split_brain(lab: VrrpLab, impl: Impl | dict[str, Impl], settings: VrrpSettings) -> float:
    """Block VRRP both ways on n1 and n2 until both are master, then heal.

    Before the heal the client must be held by n2 (the lower priority node, the last
    to send gratuitous ARPs): the case where a daemon that does not re-announce itself
    leaves the client's neighbour entry on the node that gives up. After the heal:
    exactly one master (n1), the client's neighbour entry on n1's MAC, and the VIP
    answering without a gap for a settle window. Returns the outage after the heal.
    """
    nodes = ("n1", "n2")
    daemons = start(lab, impl, settings, nodes)
    assert set(daemons) == set(nodes)
    with lab.probe(duration=90) as run:
        run.wait_node("n1", timeout=SLACK)
        for n in nodes:
            lab.block_vrrp(n)
        bound = down_interval(settings, 1) + SLACK
        lab.wait_holders({"n1", "n2"}, timeout=bound)
        run.wait_node("n2", timeout=bound, stable=0.2)
        t_heal = time.monotonic()
        for n in nodes:
            lab.unblock_vrrp(n)
        lab.wait_holders({"n1"}, timeout=bound)
        # One master; the client must follow it quickly, not after its ARP entry ages.
        run.wait_node("n1", timeout=bound, stable=0.2)
        assert lab.client_neighbour_mac() == lab.mac("n1"), lab.net.neighbours(lab.ns("c"))
        # Settled: no probe lost for a while, and still exactly one master.
        t_settled = time.monotonic()
        time.sleep(max(1.0, 5 * settings.advert))
        summary = run.finish()
    assert lab.holders() == {"n1"}, lab.describe()
    late = [o for o in summary["outages"] if o["end"] >= t_settled]
    assert not late, f"VIP unreachable after the heal settled: {late}"
    assert summary["last_node"] == "n1"
    return run.outage_after(t_heal)
