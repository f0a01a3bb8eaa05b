"""Reloading the topology of a running `zonegate lb` (SIGHUP, POST /reload)."""

from __future__ import annotations

import time

import pytest

from tests.integration.lbharness import (
    Load,
    Topo,
    backend_entry,
    backend_post,
    engines,
    run_requests,
    start_lb,
    wait_for,
)

pytestmark = pytest.mark.timeout(90)


def _version(lb) -> int:
    return lb.status()["version"]


@pytest.mark.slow
@pytest.mark.parametrize("engine", engines())
def test_sighup_under_load_drops_nothing(tmp_path, backend_factory, engine):
    bs = backend_factory.many(4, zone="z1")
    topo = Topo().pool("web", bs[:3]).listener("web")
    with start_lb(tmp_path, topo, engine=engine) as lb:
        load = Load(lb.port, clients=8, max_seconds=20).start()
        time.sleep(0.5)
        steps = []
        # 1: a weight changes; 2: a backend joins; 3: a backend leaves.
        t2 = topo.copy()
        t2.pool_doc("web")["backends"][0]["weight"] = 3
        t3 = t2.copy()
        t3.pool_doc("web")["backends"].append(backend_entry(bs[3]))
        t4 = t3.copy()
        del t4.pool_doc("web")["backends"][1]
        for i, t in enumerate((t2, t3, t4), start=2):
            lb.reload(t)
            took = wait_for(lambda i=i: _version(lb) == i, 5, f"version {i}")
            steps.append(took)
            time.sleep(0.7)
        res = load.stop()
        print(
            f"\n3 SIGHUP reloads under load (took {', '.join(f'{s * 1000:.0f} ms' for s in steps)})"
            f": {res.summary()}; versions {dict(res.versions)}"
        )
        assert res.failed == 0, res.first_failure
        assert set(res.versions) == {"1", "2", "3", "4"}
        assert res.backends["b4"] > 0, "the backend added by reload takes traffic"
        after = run_requests(lb.port, 500)
        assert after.failed == 0
        assert set(after.backends) == {"b1", "b3", "b4"}
        assert after.versions == {"4": 500}
        # weights b1=3, b3=1, b4=1
        assert after.backends["b1"] == pytest.approx(300, abs=30)


@pytest.mark.parametrize("engine", engines())
def test_reload_keeps_health_of_backends_that_stay(tmp_path, backend_factory, engine):
    bs = backend_factory.many(3, zone="z1")
    topo = Topo().pool("web", bs).listener("web")
    with start_lb(tmp_path, topo, engine=engine) as lb:
        backend_post(bs[2], "/admin/fail-health")
        lb.wait_backend("web", "b3", lambda b: b["health"] == "down", timeout=5)
        t2 = topo.copy()
        t2.pool_doc("web")["backends"][0]["weight"] = 2
        t2.pool_doc("web")["health"]["active"]["interval"] = "5s"  # no new check soon
        lb.reload(t2)
        wait_for(lambda: _version(lb) == 2, 5, "version 2")
        b3 = lb.backend("web", "b3")
        print(f"\nright after reload: b3 {b3['health']}, available {b3['available']}")
        assert b3["health"] == "down"
        assert not b3["available"]
        assert lb.status()["pools"]["web"]["healthy"] == 2
        res = run_requests(lb.port, 300)
        assert res.failed == 0
        assert res.backends["b3"] == 0
        # The POST /reload path keeps it too.
        r = lb.admin("POST", "/reload")
        assert r.status == 200, r.body
        assert lb.backend("web", "b3")["health"] == "down"


@pytest.mark.parametrize("engine", engines())
def test_reload_keeps_admin_drain(tmp_path, backend_factory, engine):
    bs = backend_factory.many(2, zone="z1")
    topo = Topo().pool("web", bs).listener("web")
    with start_lb(tmp_path, topo, engine=engine) as lb:
        lb.set_admin("web", "b2", "drain")
        t2 = topo.copy()
        t2.pool_doc("web")["retries"] = 1
        lb.reload(t2)
        wait_for(lambda: _version(lb) == 2, 5, "version 2")
        assert lb.backend("web", "b2")["admin"] == "drain"
        res = run_requests(lb.port, 200)
        assert res.backends == {"b1": 200}


@pytest.mark.parametrize("engine", engines())
def test_broken_topology_keeps_the_old_one(tmp_path, backend_factory, engine):
    bs = backend_factory.many(2, zone="z1")
    topo = Topo().pool("web", bs).listener("web")
    with start_lb(tmp_path, topo, engine=engine) as lb:
        r = lb.get("/")
        assert r.headers["x-zonegate-version"] == "1"
        broken = topo.copy()
        broken.pool_doc("web")["zone"] = "nowhere"
        broken.pool_doc("web")["backends"][0]["wieght"] = 2
        broken.write(lb.path)
        lb.reload()
        wait_for(lambda: "reload refused" in lb.proc.stderr(), 5, "refusal logged")
        assert _version(lb) == 1
        res = run_requests(lb.port, 200)
        assert res.failed == 0
        assert res.versions == {"1": 200}
        r = lb.admin("POST", "/reload")
        print(f"\nPOST /reload of a broken file: {r.status}\n{r.body.decode()}")
        assert r.status == 422
        assert b"wieght" in r.body
        assert b"keeping version 1" in r.body
        assert lb.proc.alive
        # Fixed file: the next reload works and the version moves on.
        t2 = topo.copy()
        t2.pool_doc("web")["retries"] = 1
        lb.write_topology(t2)
        r = lb.admin("POST", "/reload")
        assert r.status == 200, r.body
        assert lb.get("/").headers["x-zonegate-version"] == "2"


@pytest.mark.parametrize("engine", engines())
def test_invalid_yaml_on_sighup(tmp_path, backend_factory, engine):
    bs = backend_factory.many(1, zone="z1")
    topo = Topo().pool("web", bs).listener("web")
    with start_lb(tmp_path, topo, engine=engine) as lb:
        lb.path.write_text("zones: [unclosed\n")
        lb.reload()
        wait_for(lambda: "reload refused" in lb.proc.stderr(), 5, "refusal logged")
        r = lb.get("/")
        assert r.status == 200
        assert r.headers["x-zonegate-version"] == "1"
