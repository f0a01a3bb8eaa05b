"""A pool runtime hands every picker the slow-start factor behind an effective weight."""

from __future__ import annotations

import random

import pytest

from zonegate.lb.pools import PoolRuntime, PoolState
from zonegate.topology.load import load_topology_text

TOPO = """
zones:
  a: {{}}
pools:
  pa:
    zone: a
    balance: {balance}
    backends:
      - {{address: "127.0.0.1:1001", name: a1, weight: 10}}
      - {{address: "127.0.0.1:1002", name: a2, weight: 10}}
      - {{address: "127.0.0.1:1003", name: a3, weight: 10}}
    health:
      active: {{type: tcp}}
listeners:
  la:
    zone: a
    bind: 127.0.0.1:8000
    routes: [{{pool: pa}}]
"""


@pytest.mark.parametrize(
    "balance", ["round_robin", "random", "weighted", "hash", "least_conn", "least_load"]
)
def test_returning_backend_gets_its_ramped_share(balance):
    topo = load_topology_text(TOPO.format(balance=balance))
    rt = PoolRuntime("pa", topo.pools["pa"], random.Random(4))
    rt.apply(PoolState((10.0, 10.0, 1.7)))  # a3 ramping at 0.17, as in the issue
    keys = random.Random(5)
    hits = 0
    for _ in range(3000):
        i = rt.pick(None, keys.randbytes(4), frozenset())
        rt.loads.start(i)
        rt.loads.done(i, None, 0.0)
        hits += i == 2
    share = hits / 3000
    print(f"{balance}: a3 share {share:.3f}")
    assert 0.17 / 3 * 0.7 < share < 0.17 / 2.17 * 1.3, "not a third, and not nothing"
