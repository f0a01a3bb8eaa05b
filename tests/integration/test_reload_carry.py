"""A reload carries counters, /status figures and in-flight loads over (issue 12 item 7).

Real `zonegate lb` processes (one worker and `--workers 2`), real backends, real
reloads by SIGHUP and POST /reload, with the file unchanged and changed.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time

import pytest

from tests.integration.lbharness import (
    Lb,
    Load,
    Topo,
    backend_entry,
    parse_metrics,
    start_lb,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)

MONOTONIC = ("zonegate_requests_total", "zonegate_errors_total")
HISTOGRAM = "zonegate_request_duration_seconds"


def _counters(lb: Lb) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for (name, labels), value in parse_metrics(lb.metrics()):
        if name in MONOTONIC or name.startswith(HISTOGRAM):
            out[(name, frozenset(labels.items()))] = value
    return out


def _reload(lb: Lb, topo: Topo, how: str) -> int:
    """Reload (by SIGHUP or POST /reload) and wait for the new version."""
    want = lb.status()["version"] + 1
    if how == "sighup":
        lb.reload(topo)
    else:
        lb.write_topology(topo)
        r = lb.admin("POST", "/reload")
        assert r.status == 200, r
    wait_for(lambda: lb.status()["version"] == want, 10, f"version {want}")
    return want


@pytest.mark.parametrize("workers", [1, 2])
def test_counters_stay_monotonic_across_reloads_under_load(tmp_path, backend_factory, workers):
    bs = backend_factory.many(3, zone="z1")
    topo = Topo().pool("web", bs[:2]).listener("web")
    changed = topo.copy()
    changed.pool_doc("web")["backends"].append(backend_entry(bs[2]))
    changed.pool_doc("web")["backends"][0]["weight"] = 2
    with start_lb(tmp_path, topo, workers=workers) as lb:
        load = Load(lb.port, clients=4, max_seconds=15, max_requests=20_000).start()
        samples = []
        steps = [(topo, "sighup"), (changed, "post"), (changed, "sighup"), (topo, "post")]
        for t, how in steps:
            end = time.monotonic() + 0.6
            while time.monotonic() < end:
                samples.append(_counters(lb))
                time.sleep(0.05)
            _reload(lb, t, how)
            samples.append(_counters(lb))
        res = load.stop()
        time.sleep(0.3)
        final = _counters(lb)
        samples.append(final)
    print(f"\n{workers} worker(s), 4 reloads under load: {res.summary()}; {len(samples)} samples")
    assert res.failed == 0, res.first_failure
    drops = []
    for before, after in itertools.pairwise(samples):
        for key, v in before.items():
            if key in after and after[key] < v:
                drops.append((key, v, after[key]))
    assert not drops, f"counters went down across a reload: {drops[:5]}"
    total = final[(f"{HISTOGRAM}_count", frozenset({("pool", "web")}))]
    assert total == res.total, "every response since start is counted once"
    # b3 left with the last reload; the backends that stayed count every response
    for b in ("b1", "b2"):
        key = frozenset({("pool", "web"), ("backend", b), ("class", "2xx")})
        assert final[("zonegate_requests_total", key)] == res.backends[b], b


def _hold(port: int, n: int, ms: int) -> tuple[list[threading.Thread], list[int]]:
    """Start `n` slow requests, each on its own connection; statuses land in the list."""
    statuses: list[int] = []

    def one() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("GET", f"/slow?ms={ms}")
            r = conn.getresponse()
            r.read()
            statuses.append(r.status)
        finally:
            conn.close()

    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads, statuses


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("change", [False, True], ids=["unchanged", "changed"])
def test_inflight_requests_stay_counted_across_a_reload(tmp_path, backend_factory, workers, change):
    bs = backend_factory.many(3, zone="z1")
    topo = Topo().pool("web", bs[:2], balance="least_conn").listener("web")
    target = topo.copy()
    if change:
        target.pool_doc("web")["backends"].insert(0, backend_entry(bs[2]))  # b3 first
    held = 12  # over 2 workers, each worker holds some of them (all on one: p = 2^-11)
    with start_lb(tmp_path, topo, workers=workers) as lb:
        lb.set_admin("web", "b2", "drain")
        time.sleep(0.2)
        threads, statuses = _hold(lb.port, held, 5000)
        lb.wait_backend("web", "b1", lambda b: b["inflight"] == held, timeout=10)
        lb.set_admin("web", "b2", "enable")
        before = lb.backend("web", "b1")["responses"]["2xx"]
        _reload(lb, target, "sighup")
        b1 = lb.backend("web", "b1")
        print(f"\nafter reload: b1 in flight {b1['inflight']} (held {held})")
        assert b1["inflight"] == held, "requests in flight across the reload are still counted"
        assert lb.status()["pools"]["web"]["inflight"] == held
        assert b1["responses"]["2xx"] == before
        # least_conn still sees b1 busy: quick requests go elsewhere
        served = []
        for _ in range(10):
            r = lb.get("/")
            assert r.status == 200
            served.append(r.headers["x-backend"])
        print(f"quick requests while b1 holds {held}: {served}")
        assert "b1" not in served
        for t in threads:
            t.join(15)
        assert statuses == [200] * held
        wait_for(lambda: lb.backend("web", "b1")["inflight"] == 0, 5, "b1 idle")
        b1 = lb.backend("web", "b1")
        assert b1["responses"]["2xx"] == before + held, "the held requests count once done"
        assert lb.status()["pools"]["web"]["inflight"] == 0


def test_counters_survive_a_worker_restart(tmp_path, backend_factory):
    """With --workers 2 a worker that dies takes no counted response with it."""
    import psutil

    from tests.integration.lbharness import run_requests

    bs = backend_factory.many(2, zone="z1")
    topo = Topo().pool("web", bs).listener("web")
    count = f"{HISTOGRAM}_count"
    with start_lb(tmp_path, topo, workers=2) as lb:
        res = run_requests(lb.port, 400, clients=8)
        assert res.failed == 0
        before = lb.metric(count, pool="web")
        assert before == 400
        workers = psutil.Process(lb.proc.pid).children()
        victim = workers[0]
        victim.kill()
        victim.wait(5)
        wait_for(
            lambda: (
                len(psutil.Process(lb.proc.pid).children()) == 2 and lb.status()["workers"] == 2
            ),
            15,
            "worker restarted",
        )
        assert lb.metric(count, pool="web") == before, "the dead worker's responses still count"
        more = run_requests(lb.port, 200, clients=8)
        assert more.failed == 0
        assert lb.metric(count, pool="web") == before + 200
        ok = sum(
            lb.metric("zonegate_requests_total", pool="web", backend=b, **{"class": "2xx"})
            for b in ("b1", "b2")
        )
        assert ok == 600
