"""Slow start with every balance algorithm, through a real `zonegate lb` (item 8).

A backend comes back (its health check heals) into a 10 s ramp; right after, it
must take about its ramped share of the requests, not a full third (round_robin
ignored the ramp before) and not nothing (least_conn sent an idle pool's requests
to the heaviest backends only).
"""

from __future__ import annotations

import pytest

from tests.integration.lbharness import (
    Topo,
    backend_post,
    engines,
    fast_health,
    run_requests,
    start_lb,
)

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("engine", engines())
@pytest.mark.parametrize("balance", ["round_robin", "least_conn", "least_load"])
def test_returning_backend_ramps(request, tmp_path, backend_factory, balance, engine):
    bs = backend_factory.many(3, zone="z1")
    health = {**fast_health(), "slow_start": "10s"}
    topo = Topo().pool("web", bs, health=health, balance=balance).listener("web")
    if engine == "haproxy" and balance == "least_conn":
        # A known engine difference, which `zonegate check` warns about
        # (capabilities.engine_warnings); strict, so a fix shows up here.
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="HAProxy's leastconn spreads idle-pool requests evenly over a "
                "slow-starting server (measured: 200 of 600 at effective weight 0.06)",
            )
        )
    with start_lb(tmp_path, topo, engine=engine) as lb:
        backend_post(bs[2], "/admin/fail-health")
        lb.wait_backend("web", "b3", lambda b: not b["available"], timeout=5)
        backend_post(bs[2], "/admin/heal")
        lb.wait_backend("web", "b3", lambda b: b["available"], timeout=5)
        entry = lb.backend("web", "b3")
        res = run_requests(lb.port, 600, clients=1)
        after = lb.backend("web", "b3")
        print(
            f"\n{engine}, {balance}: b3 back at effective weight {entry['effective_weight']}, "
            f"{after['effective_weight']} after 600 requests: {res.summary()}"
        )
        assert res.failed == 0, res.first_failure
        share = res.backends["b3"] / res.ok
        factor = after["effective_weight"] / after["weight"]
        assert share < factor / (2 + factor) * 1.5 + 0.03, "more than its ramped share"
        assert res.backends["b3"] > 0, "a ramping backend still gets some requests"
