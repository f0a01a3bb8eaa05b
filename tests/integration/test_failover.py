"""Backend and pool failures under load: retries, ejection, backup pool, spill, panic.

Real processes on loopback: demo backends, one `zonegate lb`, threads of keep-alive
clients. Each test prints the numbers it measured (run with `pytest -s` to see them).
"""

from __future__ import annotations

import time

import pytest

from tests.integration.lbharness import (
    Load,
    Topo,
    backend_post,
    engines,
    fast_health,
    run_requests,
    start_lb,
)

pytestmark = pytest.mark.timeout(120)


@pytest.mark.slow
@pytest.mark.parametrize("engine", engines())
def test_backend_killed_under_load_no_client_error_then_back(tmp_path, backend_factory, engine):
    bs = backend_factory.many(3, zone="z1")
    health = {**fast_health(), "slow_start": "4s"}
    topo = Topo().pool("web", bs, health=health, retries=2).listener("web")
    with start_lb(tmp_path, topo, engine=engine) as lb:
        load = Load(lb.port, clients=8, max_seconds=20).start()
        time.sleep(1.0)
        victim = bs[1]
        before = load.snapshot()
        victim.kill()
        eject = lb.wait_backend("web", "b2", lambda b: not b["available"], timeout=5)
        entry = lb.backend("web", "b2")
        time.sleep(1.5)
        during = load.snapshot()
        after_kill = during.backends["b2"]
        time.sleep(0.5)
        res = load.stop()
        print(
            f"\nkill b2 under load: {res.summary()}\n"
            f"  ejected {eject * 1000:.0f} ms after SIGKILL ({entry['health']}, "
            f"{entry['reason']!r}); b2 served {after_kill - before.backends['b2']} requests "
            f"after the kill (responses in flight at kill time)"
        )
        assert res.failed == 0, res.first_failure
        assert res.ok > 2000
        assert eject < 1.5, "ejection slower than passive (3 failures) or active (2 x 200 ms)"
        assert res.backends["b2"] == during.backends["b2"], "b2 served after it was dead"
        retried = lb.metric("zonegate_errors_total", pool="web", kind="retried")
        print(f"  proxy retries: {retried:.0f}")
        assert retried >= 1

        victim.restart()
        t0 = time.monotonic()
        lb.wait_backend("web", "b2", lambda b: b["available"], timeout=10)
        back = time.monotonic() - t0
        entry = lb.backend("web", "b2")
        print(
            f"  b2 restarted: available again after {back:.2f}s, effective weight "
            f"{entry['effective_weight']} of {entry['weight']} (slow start)"
        )
        assert entry["effective_weight"] < entry["weight"]
        ramp = run_requests(lb.port, 1200, clients=4)
        print(f"  right after: {ramp.summary()}")
        assert ramp.failed == 0, ramp.first_failure
        assert 0 < ramp.backends["b2"] < ramp.ok / 3
        lb.wait_backend("web", "b2", lambda b: b["effective_weight"] == b["weight"], timeout=8)
        full = run_requests(lb.port, 1200, clients=4)
        print(f"  after the ramp: {full.summary()}")
        assert full.failed == 0
        assert full.backends["b2"] == pytest.approx(400, abs=60)


def _two_zone_topo(primary, backup, **pool_kw):
    return (
        Topo()
        .pool("web", primary, zone="z1", backup="web2", **pool_kw)
        .pool("web2", backup, zone="z2")
        .listener("web")
    )


@pytest.mark.slow
@pytest.mark.parametrize("engine", engines())
def test_whole_pool_killed_backup_pool_serves(tmp_path, backend_factory, engine):
    primary = backend_factory.many(3, zone="z1", prefix="a")
    backup = backend_factory.many(3, zone="z2", prefix="c")
    with start_lb(tmp_path, _two_zone_topo(primary, backup), engine=engine) as lb:
        load = Load(lb.port, clients=8, max_seconds=20).start()
        time.sleep(1.0)
        t0 = time.monotonic()
        for b in primary:
            b.kill()
        spill = lb.wait_pool("web", lambda p: p["local_share"] == 0.0, timeout=5)
        detected = load.snapshot()
        time.sleep(2.0)
        res = load.stop()
        after = res.failed - detected.failed
        print(
            f"\nkill the whole primary pool: {res.summary()}\n"
            f"  all traffic to backup {spill * 1000:.0f} ms after SIGKILL; "
            f"{detected.failed} failed before detection, {after} after; "
            f"zones {dict(res.zones)}; {time.monotonic() - t0:.1f}s"
        )
        assert after == 0, res.first_failure
        if engine == "builtin":
            # Before detection too: a request that failed on two backends of the pool
            # retries on the backup pool (RETRY_BACKUP_AFTER). HAProxy's retries stay
            # in the pool's backend (docs/lb.md "Engines").
            assert res.failed == 0, res.first_failure
        assert res.zones["z2"] > 1000
        status = lb.status()["pools"]["web"]
        assert status["healthy"] == 0
        assert not status["panic"]


@pytest.mark.slow
@pytest.mark.parametrize("engine", engines())
def test_spill_share_follows_overprovisioning(tmp_path, backend_factory, engine):
    primary = backend_factory.many(3, zone="z1", prefix="a")
    backup = backend_factory.many(3, zone="z2", prefix="c")
    topo = _two_zone_topo(primary, backup, overprovisioning=1.4)
    with start_lb(tmp_path, topo, engine=engine) as lb:
        for b in primary[1:]:
            backend_post(b, "/admin/fail-health")
        lb.wait_pool("web", lambda p: p["healthy"] == 1, timeout=5)
        status = lb.status()["pools"]["web"]
        expected = 1 - 1 / 3 * 1.4
        res = run_requests(lb.port, 4000, clients=8)
        share = res.zones["z2"] / res.ok
        print(
            f"\nspill with 1 of 3 healthy, overprovisioning 1.4: backup share {share:.3f} "
            f"(expected {expected:.3f}); plan {status['plan']!r}; {res.summary()}"
        )
        assert res.failed == 0
        assert status["local_share"] == pytest.approx(1 / 3 * 1.4, abs=0.01)
        assert share == pytest.approx(expected, abs=0.04)
        assert set(res.backends) == {"a1", "c1", "c2", "c3"}


@pytest.mark.parametrize("engine", engines())
def test_panic_mode_serves_when_every_check_fails(tmp_path, backend_factory, engine):
    bs = backend_factory.many(3, zone="z1")
    with start_lb(tmp_path, Topo().pool("web", bs).listener("web"), engine=engine) as lb:
        for b in bs:
            backend_post(b, "/admin/fail-health")
        lb.wait_pool("web", lambda p: p["healthy"] == 0, timeout=5)
        status = lb.status()["pools"]["web"]
        res = run_requests(lb.port, 600, clients=4)
        print(f"\npanic: plan {status['plan']!r}; {res.summary()}")
        assert status["panic"] is True
        assert "PANIC" in status["plan"]
        assert res.failed == 0
        assert set(res.backends) == {"b1", "b2", "b3"}
        assert lb.metric("zonegate_pool_panic", pool="web") == 1
        for b in bs:
            backend_post(b, "/admin/heal")
        lb.wait_pool("web", lambda p: not p["panic"] and p["healthy"] == 3, timeout=5)
