"""The haproxy engine's hub: HAProxy's verdicts in, the built-in plan out."""

from __future__ import annotations

from pathlib import Path

import pytest

from zonegate.clock import FakeClock
from zonegate.lb.haproxy.engine import (
    HaproxyHub,
    cfg_origin,
    default_state_dir,
    hub_topology,
    slow_start_ramps,
    trace_alerts,
)
from zonegate.lb.haproxy.render import HaproxyPaths, render_config
from zonegate.lb.hub import HealthHub
from zonegate.topology.load import load_topology, load_topology_text
from zonegate.topology.snapshot import Snapshot

TOPO = """
zones:
  a: {}
  b: {}
pools:
  pa:
    zone: a
    backup: pb
    backends:
      - {address: "127.0.0.1:1001", name: a1}
      - {address: "127.0.0.1:1002", name: a2}
      - {address: "127.0.0.1:1003", name: a3}
    health:
      active: {type: http, path: /healthz, rise: 3, fall: 4}
      passive: {consecutive_failures: 2, base_ejection: 10s}
      slow_start: 10s
  pb:
    zone: b
    backends:
      - {address: "127.0.0.1:2001", name: b1}
    health:
      active: null
listeners:
  la:
    zone: a
    bind: 127.0.0.1:8000
    routes: [{pool: pa}]
"""


@pytest.fixture
def hub():
    clock = FakeClock()
    h = HaproxyHub(Snapshot(1, load_topology_text(TOPO), "t"), "a", clock=clock.now)
    h.clock_obj = clock
    return h


def _up(hub, pool):
    return [b["available"] for b in hub.status()["pools"][pool]["backends"]]


def test_hub_topology_leaves_rise_fall_slow_start_and_passive_to_haproxy():
    topo = load_topology_text(TOPO)
    copy = hub_topology(topo)
    pa = copy.pools["pa"].health
    assert (pa.active.rise, pa.active.fall) == (1, 1)
    assert pa.active.path == "/healthz"
    assert pa.slow_start == 0.0
    assert pa.passive.consecutive_failures == 0
    assert copy.pools["pb"].health.active is None
    assert copy.pools["pa"].backends == topo.pools["pa"].backends
    assert copy.listeners == topo.listeners
    # The loaded topology is left as it was.
    assert topo.pools["pa"].health.active.rise == 3


def test_each_verdict_is_the_backend_state(hub):
    assert _up(hub, "pa") == [False, False, False]  # not checked yet
    hub.record_verdicts({("pa", "a1"): (True, "L7OK"), ("pa", "a2"): (True, "L7OK")})
    assert _up(hub, "pa") == [True, True, False]
    # One DOWN verdict is enough: HAProxy already counted its `fall` failures.
    hub.record_verdicts({("pa", "a1"): (False, "L4CON Connection refused")})
    entry = hub.status()["pools"]["pa"]["backends"][0]
    assert (entry["health"], entry["available"]) == ("down", False)
    assert "L4CON" in entry["reason"]
    # A server missing from a reading keeps its state; the same verdict again is no change.
    hub.record_verdicts({("pa", "a2"): (True, "L7OK")})
    assert _up(hub, "pa") == [False, True, False]


def test_a_pool_without_checks_is_up_and_ignores_verdicts(hub):
    assert _up(hub, "pb") == [True]
    hub.record_verdicts({("pb", "b1"): (False, "whatever")})
    assert _up(hub, "pb") == [True]


def test_no_slow_start_ramp_in_the_hub(hub):
    hub.record_verdicts({(("pa", f"a{i}")): (True, "") for i in (1, 2, 3)})
    hub.record_verdicts({("pa", "a1"): (False, "")})
    hub.clock_obj.advance(1.0)
    hub.record_verdicts({("pa", "a1"): (True, "")})
    hub.publish()
    assert hub.states["pa"].weights == (1.0, 1.0, 1.0)


def test_the_spill_plan_is_the_builtin_one(hub):
    hub.record_verdicts(
        {("pa", "a1"): (True, ""), ("pa", "a2"): (False, ""), ("pa", "a3"): (False, "")}
    )
    hub.publish()
    assert hub.states["pa"].local_share == pytest.approx(1 / 3 * 1.4)
    hub.record_verdicts({("pa", "a1"): (False, "")})
    hub.publish()
    assert hub.states["pa"].local_share == 0.0
    assert not hub.states["pa"].panic


def test_status_has_the_builtin_shape_plus_the_engine(hub):
    hub.engine_status.update(pid=123, restarts=2)
    hub.record_verdicts({("pa", "a1"): (True, "")})
    doc = hub.status()
    builtin = HealthHub(Snapshot(1, load_topology_text(TOPO), "t"), "a").status()
    assert set(doc) - set(builtin) == {"engine"}
    assert doc["engine"] == {"name": "haproxy", "pid": 123, "restarts": 2}
    assert set(doc["pools"]["pa"]) == set(builtin["pools"]["pa"])
    assert set(doc["pools"]["pa"]["backends"][0]) == set(builtin["pools"]["pa"]["backends"][0])


def test_admin_states_and_control_follow(hub):
    hub.set_admin("pa", "a2", "drain")
    hub.apply_control(7, {"pa/a3": "disabled"})
    assert hub.admin_states() == {
        ("pa", "a1"): "enabled",
        ("pa", "a2"): "drain",
        ("pa", "a3"): "disabled",
        ("pb", "b1"): "enabled",
    }
    assert hub.version == 7


def test_default_state_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    d = default_state_dir("topo.yaml", "z1")
    assert d.parent == tmp_path / "zonegate"
    assert d.name.startswith("lb-z1-")
    assert default_state_dir("other.yaml", "z1") != d
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    d = default_state_dir("topo.yaml", "z1")
    assert d.parent.parent == Path("/tmp")
    assert not str(d).startswith("/etc")


def test_effective_weight_follows_haproxys_slow_start(hub):
    rows = [
        {"pxname": "be_pa", "svname": "a1", "weight": 64, "uweight": 256},
        {"pxname": "be_pa", "svname": "a2", "weight": 256, "uweight": 256},
        {"pxname": "be_pa", "svname": "spill:pb:b1", "weight": 0, "uweight": 0},
        {"pxname": "be_pa", "svname": "BACKEND", "weight": 512, "uweight": 512},
    ]
    ramps = slow_start_ramps(rows)
    assert ramps == {("pa", "a1"): 0.25, ("pa", "a2"): 1.0}
    hub.record_verdicts({("pa", f"a{i}"): (True, "") for i in (1, 2, 3)})
    backends = hub.status({"ramp": ramps})["pools"]["pa"]["backends"]
    assert [b["effective_weight"] for b in backends] == [0.25, 1.0, 1.0]


def test_haproxy_alerts_are_traced_to_the_topology(tmp_path):
    path = tmp_path / "topo.yaml"
    path.write_text(TOPO)
    snap = Snapshot(1, load_topology(str(path)), str(path))
    cfg = render_config(snap, "a", HaproxyPaths.in_dir(tmp_path))
    lines = cfg.splitlines()
    server = next(i for i, line in enumerate(lines, 1) if line.strip().startswith("server a2 "))
    bind = next(i for i, line in enumerate(lines, 1) if line.strip().startswith("bind "))
    assert cfg_origin(cfg, server, snap.topology) == ["pools", "pa", "backends", 1]
    assert cfg_origin(cfg, bind, snap.topology) == ["listeners", "la"]
    assert cfg_origin(cfg, 3, snap.topology) is None  # global
    alert = f"[ALERT] (1) : config : parsing [{tmp_path}/haproxy.cfg:{server}] : bad server"
    traced = trace_alerts(alert + "\n[ALERT] (1) : Fatal errors found.", cfg, snap)
    assert traced.splitlines() == [
        alert,
        f"  (from {path}:9:5: pools.pa.backends[1])",  # the deepest key with a mark
        "[ALERT] (1) : Fatal errors found.",
    ]
