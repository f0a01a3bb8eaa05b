"""keepalived (the Debian package) in the lab: the baseline, and interop with zonegate.

The baseline runs the same scenarios with keepalived on every node; it checks the
lab itself (namespaces, bridge, prober, fault injection) independently of zonegate.
Interop puts zonegate and keepalived in one VRID (VRRPv3, multicast): each must
accept the other's adverts, so the failover works both ways, and preemption back.
"""

from __future__ import annotations

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
