"""A reload carries counters, in-flight counts and loads over to the new pool runtime."""

from __future__ import annotations

import random

from zonegate.lb.pools import PoolRuntime, PoolState
from zonegate.lb.server import merge_worker_stats
from zonegate.topology.load import load_topology_text

TOPO = """
zones:
  a: {{}}
pools:
  pa:
    zone: a
    balance: least_conn
    capacity: 100
    backends:
{backends}
    health:
      active: {{type: tcp}}
listeners:
  la:
    zone: a
    bind: 127.0.0.1:8000
    routes: [{{pool: pa}}]
"""


def _pool(names: list[str], previous: PoolRuntime | None = None) -> PoolRuntime:
    lines = "\n".join(
        f'      - {{address: "127.0.0.1:{1000 + int(n[1:])}", name: {n}}}' for n in names
    )
    topo = load_topology_text(TOPO.format(backends=lines))
    return PoolRuntime("pa", topo.pools["pa"], random.Random(1), previous)


def _hold(pool: PoolRuntime, index: int, count: int) -> None:
    for _ in range(count):
        pool.loads.start(index)
        pool.inflight += 1


def _finish(pool: PoolRuntime, index: int, status: int = 200) -> None:
    """What the proxy does when an exchange started on `pool` ends."""
    pool.loads.done(index, 0.01, 1.0)
    pool.inflight -= 1
    pool.stats.record(index, status, 0.01)


def test_unchanged_reload_keeps_counters_and_inflight():
    old = _pool(["b1", "b2"])
    for _ in range(5):
        _hold(old, 0, 1)
        _finish(old, 0)
    old.stats.errors["retried"] += 2
    _hold(old, 0, 3)  # three requests in flight on b1 across the reload
    new = _pool(["b1", "b2"], previous=old)
    assert new.stats.responses[0][1] == 5
    assert new.stats.latency_count == 5
    assert new.stats.errors["retried"] == 2
    assert new.loads.inflight == [3, 0]
    assert new.inflight == 3
    # least_conn sees b1 busy: new requests go to b2
    assert {new.pick(None, b"c", frozenset()) for _ in range(10)} == {1}
    # the old requests end on the old runtime and count on the new one
    for _ in range(3):
        _finish(old, 0)
    old.stats.errors["retried"] += 1
    assert new.loads.inflight == [0, 0]
    assert new.inflight == 0
    assert new.stats.responses[0][1] == 8
    assert new.stats.latency_count == 8
    assert new.stats.errors["retried"] == 3


def test_changed_reload_maps_backends_by_id_and_drops_those_that_left():
    old = _pool(["b1", "b2", "b3"])
    _hold(old, 1, 2)  # b2
    _hold(old, 2, 1)  # b3, removed by the reload
    _hold(old, 0, 1)
    _finish(old, 0)
    new = _pool(["b4", "b2", "b1"], previous=old)  # reordered, b3 gone, b4 new
    assert new.ids == ["b4", "b2", "b1"]
    assert new.loads.inflight == [0, 2, 0]
    assert new.inflight == 3, "the pool still has b3's request in flight"
    assert new.stats.responses[2][1] == 1
    _finish(old, 1)
    _finish(old, 2)  # b3's request ends: pool totals count it, no backend row does
    assert new.loads.inflight == [0, 1, 0]
    assert new.inflight == 1
    assert new.stats.latency_count == 3
    assert [r[1] for r in new.stats.responses] == [0, 1, 1]


def test_chained_reloads_forward_to_the_live_generation():
    g1 = _pool(["b1", "b2"])
    _hold(g1, 0, 1)
    g2 = _pool(["b2", "b1"], previous=g1)
    _hold(g2, 1, 1)
    g3 = _pool(["b1", "b2"], previous=g2)
    assert g3.loads.inflight == [2, 0]
    _finish(g1, 0)
    _finish(g2, 1)
    assert g3.loads.inflight == [0, 0]
    assert g3.stats.responses[0][1] == 2
    assert g3.inflight == 0


def test_states_still_apply_after_carry_over():
    old = _pool(["b1", "b2"])
    new = _pool(["b1", "b2"], previous=old)
    new.apply(PoolState((0.0, 1.0)))
    assert {new.pick(None, b"c", frozenset()) for _ in range(10)} == {1}


def _worker(ids, responses, inflight, count):
    return {
        "pools": {
            "pa": {
                "ids": ids,
                "inflight": inflight,
                "responses": [[0, r, 0, 0, 0] for r in responses],
                "latency_buckets": [count] + [0] * 14,
                "latency_sum": 0.1 * count,
                "latency_count": count,
                "errors": {"retried": 1},
            }
        },
        "connections": 1,
        "client_errors": {},
    }


def test_merge_of_workers_mid_reload_matches_backends_by_id():
    # worker 1 already reloaded (b3 added, order changed), worker 2 not yet
    w1 = _worker(["b3", "b1", "b2"], [1, 10, 20], [0, 1, 2], 31)
    w2 = _worker(["b1", "b2"], [5, 6], [3, 0], 11)
    merged = merge_worker_stats([w1, w2])["pools"]["pa"]
    rows = dict(zip(merged["ids"], merged["responses"], strict=True))
    busy = dict(zip(merged["ids"], merged["inflight"], strict=True))
    assert {k: v[1] for k, v in rows.items()} == {"b1": 15, "b2": 26, "b3": 1}
    assert busy == {"b1": 4, "b2": 2, "b3": 0}
    assert merged["latency_count"] == 42
    assert merged["errors"]["retried"] == 2
