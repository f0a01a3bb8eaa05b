"""keepalived (the Debian package) in the lab: the baseline, and interop with zonegate.

The baseline runs the same scenarios with keepalived on every node; it checks the
lab itself (namespaces, bridge, prober, fault injection) independently of zonegate.
Interop puts zonegate and keepalived in one VRID (VRRPv3, multicast): each must
accept the other's adverts, so the failover works both ways, and preemption back.
"""

from __future__ import annotations

import time

import pytest

from tests.netns import scenarios
from zonegate.lab.vrrplab import VrrpSettings

FAST = VrrpSettings(advert=0.1)


@pytest.mark.parametrize("fault", ["crash", "stop", "linkdown"])
def test_keepalived_baseline_failover(lab, keepalived, fault):
    daemons = scenarios.start(lab, "keepalived", FAST)
    summary, _ = scenarios.failover(lab, daemons, FAST, fault)
    assert summary["per_node"].get("n2", 0) > 0
    scenarios.preempt_back(lab, daemons, FAST, restart=fault != "linkdown")


@pytest.mark.parametrize("fault", ["crash", "stop"])
def test_zonegate_master_keepalived_backup(lab, keepalived, fault):
    """zonegate n1 (150) is master over keepalived n2 (100); n2 takes over, n1 takes back."""
    impl = {"n1": "zonegate", "n2": "keepalived"}
    daemons = scenarios.start(lab, impl, FAST, ("n1", "n2"))
    scenarios.failover(lab, daemons, FAST, fault)
    scenarios.preempt_back(lab, daemons, FAST, restart=True)


@pytest.mark.parametrize("fault", ["crash", "stop"])
def test_keepalived_master_zonegate_backup(lab, keepalived, fault):
    """keepalived n1 (150) is master over zonegate n2 (100); n2 takes over, n1 takes back."""
    impl = {"n1": "keepalived", "n2": "zonegate"}
    daemons = scenarios.start(lab, impl, FAST, ("n1", "n2"))
    scenarios.failover(lab, daemons, FAST, fault)
    scenarios.preempt_back(lab, daemons, FAST, restart=True)


def test_zonegate_takes_the_vip_back_after_its_own_link_flap_with_one_garp(lab, keepalived):
    """Issue 12 item 16: zonegate n1 (150, ``garp.count: 1``) over keepalived n2 (100).
    n1's own eth0 goes down (n1 to Fault, n2 takes over) and up again: n1 preempts n2,
    and its single gratuitous ARP must reach the client. It used to fail with ENETDOWN
    left on the ARP socket by the flap: the client kept n2's MAC, and n2 had dropped
    the VIP (5 s blackhole)."""
    settings = VrrpSettings(advert=0.1, garp_count=1)
    daemons = scenarios.start(lab, {"n1": "zonegate", "n2": "keepalived"}, settings, ("n1", "n2"))
    bound = scenarios.down_interval(settings, 1) + scenarios.SLACK
    with lab.probe(duration=60) as run:
        run.wait_node("n1", timeout=scenarios.SLACK)
        lab.nic("n1", up=False)
        lab.wait_holders({"n2"}, timeout=bound)
        run.wait_node("n2", timeout=bound, stable=0.3)
        t = time.monotonic()
        lab.nic("n1", up=True)
        lab.wait_holders({"n1"}, timeout=bound)
        run.wait_node("n1", timeout=bound, stable=0.3)
        run.finish()
    # Without the ARP the client waits for its neighbour entry to go stale (~5 s).
    outage = run.outage_after(t)
    assert outage < 1.0, f"client lost the VIP for {outage:.3f}s after n1 took it back"
    assert lab.client_neighbour_mac() == lab.mac("n1")
    assert "gratuitous ARP" not in daemons["n1"].output(), daemons["n1"].output()[-2000:]
