"""The health hub turns health machines and the spill plan into pool states."""

from __future__ import annotations

import logging

import pytest

from zonegate.clock import FakeClock
from zonegate.lb.hub import HealthHub
from zonegate.lb.pools import PoolRuntime, PoolState
from zonegate.topology.load import load_topology_text
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
      active: {type: tcp, rise: 2, fall: 2}
      passive: {consecutive_failures: 2, base_ejection: 10s, max_ejected_percent: 100}
      slow_start: 10s
  pb:
    zone: b
    backends:
      - {address: "127.0.0.1:2001", name: b1}
    health:
      active: {type: tcp}
listeners:
  la:
    zone: a
    bind: 127.0.0.1:8000
    routes: [{pool: pa}]
"""


@pytest.fixture
def hub():
    clock = FakeClock()
    h = HealthHub(Snapshot(1, load_topology_text(TOPO), "t"), "a", clock=clock.now)
    h.clock_obj = clock
    for _name, health in h.healths.items():
        for i in range(len(health)):
            health.record_active(i, True, clock.now())
    h.publish()
    return h


def test_serves_the_zone_pools_and_their_backups(hub):
    assert set(hub.healths) == {"pa", "pb"}


def test_all_healthy_means_configured_weights_and_no_spill(hub):
    st = hub.states["pa"]
    assert st.weights == (1.0, 1.0, 1.0)
    assert st.local_share == 1.0
    assert not st.panic


def test_passive_failures_eject_and_spill(hub):
    now = hub.clock_obj.now()
    for _ in range(2):
        hub.record_passive("pa", 0, "a1", False, "connect refused")
    st = hub.states["pa"]
    assert st.weights[0] == 0.0
    # 2/3 healthy x 1.4 = 0.933 stays local
    assert st.local_share == pytest.approx(2 / 3 * 1.4)
    hub.clock_obj.advance(10.5)
    hub.publish()
    st = hub.states["pa"]
    assert 0 < st.weights[0] < 1.0, "back from ejection, ramping"
    assert hub.healths["pa"].view(now + 10.5)[0].available


def test_stale_passive_report_is_ignored(hub):
    for _ in range(5):
        hub.record_passive("pa", 0, "not-a1", False, "x")
        hub.record_passive("nope", 0, "a1", False, "x")
        hub.record_passive("pa", 9, "a1", False, "x")
    assert hub.states["pa"].weights[0] == 1.0


def test_drain_removes_backend_from_candidates(hub):
    assert hub.set_admin("pa", "a2", "drain")
    assert hub.states["pa"].weights == (1.0, 0.0, 1.0)
    assert not hub.set_admin("pa", "zz", "drain")
    assert hub.set_admin("pa", "a2", "enabled")
    assert hub.states["pa"].weights == (1.0, 1.0, 1.0)


def test_whole_pool_down_goes_to_backup(hub):
    now = hub.clock_obj.now()
    for i in range(3):
        for _ in range(2):
            hub.healths["pa"].record_active(i, False, now)
    hub.publish()
    st = hub.states["pa"]
    assert st.local_share == 0.0
    assert not st.panic


def test_panic_when_backup_is_down_too(hub):
    now = hub.clock_obj.now()
    for i in range(3):
        for _ in range(2):
            hub.healths["pa"].record_active(i, False, now)
    for _ in range(3):
        hub.healths["pb"].record_active(0, False, now)
    hub.publish()
    st = hub.states["pa"]
    assert st.panic
    assert st.weights == (1.0, 1.0, 1.0)
    status = hub.status()
    assert status["pools"]["pa"]["panic"] is True
    assert status["pools"]["pa"]["healthy"] == 0


def test_subscribers_get_states_only_when_they_change(hub):
    seen: list[dict[str, PoolState]] = []
    hub.subscribe(seen.append)
    assert len(seen) == 1
    hub.publish()
    assert len(seen) == 1
    hub.set_admin("pa", "a1", "disabled")
    assert len(seen) == 2


async def test_reload_keeps_health(hub):
    for _ in range(2):
        hub.record_passive("pa", 2, "a3", False, "reset")
    assert hub.states["pa"].weights[2] == 0.0
    changed = TOPO.replace("name: a1}", "name: a1, weight: 5}")
    await hub.reload(Snapshot(2, load_topology_text(changed), "t"))
    st = hub.states["pa"]
    assert st.weights[0] == 5.0
    assert st.weights[2] == 0.0, "ejection survives the reload"


def test_pool_runtime_follows_states_and_picks_only_eligible(hub):
    import random

    topo = load_topology_text(TOPO)
    rt = PoolRuntime("pa", topo.pools["pa"], random.Random(1))
    rt.apply(PoolState((0.0, 1.0, 0.0)))
    assert {rt.pick(None, b"1.2.3.4", frozenset()) for _ in range(50)} == {1}
    assert rt.pick(None, b"1.2.3.4", {1}) is None
    rt.apply(PoolState((1.0,)))  # wrong generation: ignored
    assert rt.state.weights == (0.0, 1.0, 0.0)


def _all_down(hub, pool, n):
    now = hub.clock_obj.now()
    for i in range(n):
        for _ in range(3):  # pb falls after the default 3 failures
            hub.healths[pool].record_active(i, False, now)


def test_panic_log_line_names_a_backup_that_is_down(hub, caplog):
    _all_down(hub, "pb", 1)
    _all_down(hub, "pa", 3)
    with caplog.at_level(logging.INFO, logger="zonegate.health"):
        hub.publish()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pool pa:")]
    assert lines == ["pool pa: PANIC: healthy 0% < 50%, backup pool pb has no healthy backend"]


def test_panic_log_line_without_backup(caplog):
    clock = FakeClock()
    topo = load_topology_text(TOPO.replace("    backup: pb\n", ""))
    h = HealthHub(Snapshot(1, topo, "t"), "a", clock=clock.now)
    h.clock_obj = clock
    _all_down(h, "pa", 3)
    with caplog.at_level(logging.INFO, logger="zonegate.health"):
        h.publish()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pool pa:")]
    assert lines == ["pool pa: PANIC: healthy 0% < 50%, no backup configured"]
