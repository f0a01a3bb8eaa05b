"""The runtimes' reports as the control plane keeps them (pure)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from zonegate.control.fleet import LbReport, ZoneReport, lb_report, rates, vrrp_report
from zonegate.control.fleet_poll import vrrp_admins
from zonegate.topology.load import load_topology

# fmt: off
STATUS = {
    "zone": "cp",
    "version": 7,
    "pools": {
        "web-cp": {"zone": "cp", "healthy": 2, "total": 3, "inflight": 4, "responses": 1000,
                   "backends": [{"id": "a", "available": True, "health": "up", "admin": "enabled"},
                                {"id": "b", "available": False, "health": "down", "admin": "enabled"},
                                {"id": "c", "available": False, "health": "up", "admin": "drain"}]},
        "api-cp": {"zone": "cp", "healthy": 1, "total": 1, "inflight": 0, "responses": 500},
        # a backup pool of the other zone, also served by this LB: not this zone's
        "web-yq": {"zone": "yq", "healthy": 3, "total": 3, "inflight": 9, "responses": 77},
    },
}
# fmt: on


def test_lb_report_sums_the_zones_pools():
    r = lb_report("cp", STATUS, "", 10.0, None)
    assert r.reachable
    assert (r.version, r.healthy, r.total, r.inflight, r.responses) == (7, 3, 4, 4, 1500)
    assert r.rate is None  # one poll: no rate yet
    assert r.backends["web-cp"] == {"a": "available", "b": "down", "c": "drain"}
    assert set(r.backends) == {"web-cp", "api-cp"}


def test_rate_from_two_polls():
    first = lb_report("cp", STATUS, "", 10.0, None)
    later = {**STATUS, "pools": {"web-cp": {"zone": "cp", "responses": 1600}}}
    r = lb_report("cp", later, "", 12.0, first)
    assert r.rate == 50.0


def test_restarted_lb_has_no_rate_until_the_next_poll():
    first = lb_report("cp", STATUS, "", 10.0, None)
    restarted = {"version": 1, "pools": {"web-cp": {"zone": "cp", "responses": 3}}}
    assert lb_report("cp", restarted, "", 11.0, first).rate is None


def test_unreachable_lb_and_no_rate_after_it():
    down = lb_report("cp", None, "ConnectError: refused", 10.0, None)
    assert not down.reachable
    assert down.error == "ConnectError: refused"
    assert lb_report("cp", STATUS, "", 11.0, down).rate is None


def test_vip_owner_and_split_brain():
    one = ZoneReport("cp", vrrp=(vrrp_report("n1", {"state": "Master"}, ""),
                                 vrrp_report("n2", {"state": "Backup", "priority": 100}, "")))  # fmt: skip
    assert one.vip_owner == "n1"
    assert one.to_json()["split_brain"] is False
    assert one.to_json()["vrrp"][1]["priority"] == 100
    two = ZoneReport("cp", vrrp=(vrrp_report("n1", {"state": "Master"}, ""),
                                 vrrp_report("n2", {"state": "Master"}, "")))  # fmt: skip
    assert two.vip_owner is None
    assert two.to_json()["split_brain"] is True
    gone = vrrp_report("n3", None, "timeout")
    assert (gone.reachable, gone.state, gone.error) == (False, "unknown", "timeout")


def test_rates_only_from_reachable_lbs_with_a_rate():
    reports = {
        "a": ZoneReport("a", lb=LbReport(reachable=True, at=1, rate=10.0)),
        "b": ZoneReport("b", lb=LbReport(reachable=True, at=1, rate=None)),
        "c": ZoneReport("c", lb=LbReport(reachable=False, at=1)),
        "d": ZoneReport("d"),
    }
    assert rates(reports) == {"a": 10.0}
    assert rates({"d": ZoneReport("d")}) is None


@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=2, max_size=10))
def test_rate_is_never_negative(counters):
    prev = None
    for i, n in enumerate(counters):
        doc = {"pools": {"p": {"zone": "z", "responses": n}}}
        prev = lb_report("z", doc, "", float(i + 1), prev)
        assert prev.rate is None or prev.rate >= 0


def test_vrrp_admins_from_the_topology():
    example = Path(__file__).resolve().parents[2] / "examples" / "vrrp-lab.yaml"
    found = vrrp_admins(load_topology(example))
    assert found, "examples/vrrp-lab.yaml has VRRP instances with an admin endpoint"
    for zone, instances in found.items():
        assert instances
        for name, address in instances:
            assert name, zone
            assert address.port > 0, (zone, name)
