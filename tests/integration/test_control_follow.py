"""`zonegate lb --control URL` follows the control plane: version header, admin states,
last good copy when the control plane is gone."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.integration.lbharness import Topo, engines, start_lb
from tests.peers.processes import CONTROL_OPERATOR as OPERATOR
from tests.peers.processes import free_port, retry_addr_in_use, start_control

pytestmark = pytest.mark.timeout(90)


def _version_seen(lb) -> int:
    r = lb.request("GET", "/")
    return int(r.headers["x-zonegate-version"])


@pytest.mark.parametrize("engine", engines())
def test_lb_follows_control_versions_and_admin_states(backend_factory, tmp_path, engine):
    b1 = backend_factory(name="f1")
    b2 = backend_factory(name="f2")
    topo = Topo()
    topo.pool("web", [b1, b2])
    topo.listener("web")
    cache = tmp_path / "lb-cache.json"

    def start_both():
        # The control plane polls the LB's admin port named in the file: pick it, and
        # pick again (restarting both) if it was taken before the LB bound it.
        admin_port = free_port()
        topo.doc["zones"]["z1"]["lb_admin"] = f"127.0.0.1:{admin_port}"
        control, url = start_control(tmp_path, topo.write(tmp_path / "topology.yaml"))
        extra = ["--control", "http://127.0.0.1:1", "--control", url]
        extra += ["--control-cache", str(cache)]
        try:
            lb = start_lb(tmp_path, topo, extra=extra, admin_port=admin_port, engine=engine)
        except BaseException:
            control.kill()
            raise
        return control, url, extra, lb

    control, url, extra, lb = retry_addr_in_use(start_both)
    try:
        assert _version_seen(lb) == 1

        # Drain f1 through the control plane; the LB applies version 2.
        t0 = time.monotonic()
        r = httpx.post(
            f"{url}/v1/pools/web/backends/f1/drain",
            params={"reason": "test drain"},
            headers={"Authorization": f"Bearer {OPERATOR}"},
            timeout=5,
        )
        assert r.status_code == 200, r.text
        deadline = t0 + 5
        while _version_seen(lb) != 2:
            assert time.monotonic() < deadline, "the LB did not follow version 2"
            time.sleep(0.005)
        applied = time.monotonic() - t0
        print(f"\ncontrol version 2 seen on LB responses {applied * 1000:.0f} ms after the write")
        status = lb.status()
        f1 = next(b for b in status["pools"]["web"]["backends"] if b["id"] == "f1")
        assert f1["admin"] == "drain"
        served = {lb.request("GET", "/").headers["x-backend"] for _ in range(20)}
        assert served == {"f2"}
        assert cache.exists()

        # The control plane polls the LB's admin /status every second: it reports
        # the version the LB runs, its backends and its request rate.
        deadline = time.monotonic() + 5
        while True:
            zone = httpx.get(f"{url}/v1/zones", timeout=5).json()["zones"]["z1"]["lb"]
            if zone["version"] == 2 and zone["rate"] is not None:
                break
            assert time.monotonic() < deadline, zone
            time.sleep(0.2)
        assert zone["reachable"] is True
        assert (zone["healthy"], zone["total"]) == (1, 2)
        assert zone["rate"] >= 0

        # The control plane dies: the LB keeps serving what it has.
        control.kill()
        for _ in range(20):
            r = lb.request("GET", "/")
            assert r.status == 200
            assert r.headers["x-zonegate-version"] == "2"
    finally:
        lb.stop()
        control.kill()

    # A restart while the control plane is down starts from the cached copy.
    lb = start_lb(tmp_path, topo, extra=extra, engine=engine)
    try:
        assert _version_seen(lb) == 2
        served = {lb.request("GET", "/").headers["x-backend"] for _ in range(20)}
        assert served == {"f2"}
    finally:
        lb.stop()
