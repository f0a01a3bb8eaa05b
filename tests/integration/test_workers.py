"""`zonegate lb --workers 2`: a supervisor (health hub, admin) and two SO_REUSEPORT workers."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from tests.integration.lbharness import Lb, Load, Topo, run_requests, start_lb, wait_for

pytestmark = pytest.mark.timeout(90)


def workers_of(lb: Lb) -> list[psutil.Process]:
    return psutil.Process(lb.proc.pid).children(recursive=True)


def client_connections(proc: psutil.Process, port: int) -> int:
    """Established connections accepted on the listener port by this process."""
    return sum(
        1
        for c in proc.net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
    )


def upstream_errors(lb: Lb, pool: str) -> float:
    return sum(
        lb.metric("zonegate_errors_total", pool=pool, kind=k)
        for k in ("connect_failed", "reset_before_response", "connect_timeout")
    )


@pytest.fixture
def two_workers(tmp_path, backend_factory):
    bs = backend_factory.many(3, zone="z1")
    topo = Topo().pool("web", bs).listener("web")
    with start_lb(tmp_path, topo, workers=2) as lb:
        yield lb, bs


def test_both_workers_serve(two_workers):
    lb, _ = two_workers
    workers = workers_of(lb)
    assert len(workers) == 2
    assert lb.status()["workers"] == 2
    # Many keep-alive connections: the kernel spreads them over both workers.
    load = Load(lb.port, clients=16, max_seconds=10, pause=0.01).start()
    time.sleep(1.0)
    per_worker = [client_connections(w, lb.port) for w in workers]
    res = load.stop()
    print(f"\n2 workers: client connections per worker {per_worker}; {res.summary()}")
    assert res.failed == 0
    assert all(n > 0 for n in per_worker), per_worker
    status = lb.status()
    assert status["workers"] == 2
    assert sum(b["healthy"] for b in [status["pools"]["web"]]) == 3
    served = lb.metric("zonegate_requests_total", pool="web", backend="b1", **{"class": "2xx"})
    assert served > 0


@pytest.mark.slow
def test_killed_backend_avoided_by_every_worker(two_workers):
    lb, bs = two_workers
    load = Load(lb.port, clients=16, max_seconds=15).start()
    time.sleep(0.5)
    bs[0].kill()
    eject = lb.wait_backend("web", "b1", lambda b: not b["available"], timeout=5)
    time.sleep(0.3)
    res = load.stop()
    errors_before = upstream_errors(lb, "web")
    after = run_requests(lb.port, 1000, clients=16)
    errors_after = upstream_errors(lb, "web")
    print(
        f"\n2 workers, b1 killed: out of service after {eject * 1000:.0f} ms; during: "
        f"{res.summary()}; after: {after.summary()}; upstream errors {errors_before:.0f} -> "
        f"{errors_after:.0f}"
    )
    assert res.failed == 0, res.first_failure
    assert after.failed == 0
    assert after.backends["b1"] == 0
    assert errors_after == errors_before, "a worker still sent requests to the dead backend"


def test_admin_drain_applies_to_every_worker(two_workers):
    lb, _ = two_workers
    lb.set_admin("web", "b2", "drain")
    res = run_requests(lb.port, 1000, clients=16)
    print(f"\n2 workers, b2 drained: {res.summary()}")
    assert res.failed == 0
    assert res.backends["b2"] == 0
    assert res.backends["b1"] > 0
    assert res.backends["b3"] > 0
    lb.set_admin("web", "b2", "enable")
    res = run_requests(lb.port, 900, clients=16)
    assert res.backends["b2"] > 0


def test_sigterm_stops_every_process(two_workers):
    lb, _ = two_workers
    workers = workers_of(lb)
    assert len(workers) == 2
    assert lb.get("/").status == 200
    t0 = time.monotonic()
    lb.proc.signal(signal.SIGTERM)
    code = lb.proc.proc.wait(15)
    took = time.monotonic() - t0
    _, alive = psutil.wait_procs(workers, timeout=5)
    print(f"\nSIGTERM with 2 workers: exit {code} after {took:.2f}s; workers left: {alive}")
    assert code == 0
    assert alive == []


def test_supervisor_killed_workers_exit(two_workers):
    lb, _ = two_workers
    workers = workers_of(lb)
    os.kill(lb.proc.pid, signal.SIGKILL)
    lb.proc.proc.wait(5)
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == [], "orphan workers outlived their supervisor"


def test_killed_worker_is_restarted(two_workers):
    lb, _ = two_workers
    lb.set_admin("web", "b3", "drain")
    workers = workers_of(lb)
    old = {w.pid for w in workers}
    victim = workers[0]
    victim.kill()
    victim.wait(5)

    def replaced() -> bool:
        now = workers_of(lb)
        pids = {w.pid for w in now}
        return len(now) == 2 and victim.pid not in pids and len(pids - old) == 1

    took = wait_for(replaced, 10, "worker restarted")
    wait_for(lambda: lb.status()["workers"] == 2, 10, "2 workers in /status")
    res = run_requests(lb.port, 600, clients=16)
    new = next(w for w in workers_of(lb) if w.pid not in old)
    load = Load(lb.port, clients=16, max_seconds=5, pause=0.01).start()
    time.sleep(0.8)
    on_new = client_connections(new, lb.port)
    load.stop()
    print(
        f"\nworker {victim.pid} SIGKILLed: replaced by {new.pid} after {took:.2f}s; "
        f"{res.summary()}; new worker holds {on_new} client connections"
    )
    assert res.failed == 0
    assert on_new > 0
    # The new worker started with the hub's current states: b3 stays drained.
    assert res.backends["b3"] == 0


@pytest.mark.slow
def test_sighup_with_two_workers(two_workers):
    lb, _ = two_workers
    load = Load(lb.port, clients=16, max_seconds=15).start()
    time.sleep(0.5)
    t2 = lb.topo.copy()
    t2.pool_doc("web")["backends"][0]["weight"] = 2
    lb.reload(t2)
    wait_for(lambda: lb.status()["version"] == 2, 5, "version 2")
    time.sleep(0.5)
    res = load.stop()
    after = run_requests(lb.port, 800, clients=16)
    print(f"\nSIGHUP with 2 workers: {res.summary()}; versions {dict(res.versions)}")
    assert res.failed == 0, res.first_failure
    assert after.failed == 0
    assert after.versions == {"2": 800}, "every worker follows the reload"
    assert after.backends["b1"] == pytest.approx(400, abs=40)
