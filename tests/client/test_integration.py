"""The SDK against a real two-zone zonegate on loopback (see world.py): cut-over via
the control API, an LB killed under load, the control plane down, HTTPDNS down.

Numbers are printed (run with -s to see them), never asserted against a clock."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import zonegate.client as zc
from tests.client.world import VIPS, World, devices

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path).start()
    try:
        yield w
    finally:
        w.stop()


def transport(world: World, device: str, **kw) -> zc.Transport:
    kw.setdefault("cache_path", world.tmp / "sdk-cache.json")
    kw.setdefault("resolver", None)
    return zc.Transport(
        control=[world.control_url], device_id=device, httpdns=[world.httpdns_url], **kw
    )


def version_of(r: httpx.Response) -> int:
    return int(r.headers[zc.VERSION_HEADER])


def test_cutover_reaches_the_client_through_the_version_header(world):
    device = devices("cp", 1)[0]
    t = transport(world, device)
    with httpx.Client(transport=t, timeout=5) as c:
        r = c.get(f"{world.url}/")
        assert (r.headers["x-zone"], version_of(r), t.version) == ("cp", 1, 1)

        t0 = time.monotonic()
        new = world.cutover("yq")
        t_post = time.monotonic() - t0
        # Requests go on as an app's would; the cp LB follows the control plane and
        # stamps the new version on its next response.
        seen_at = None
        for i in range(500):
            r = c.get(f"{world.url}/")
            if version_of(r) >= new:
                seen_at, zone_then = i, r.headers["x-zone"]
                break
            time.sleep(0.005)
        assert seen_at is not None, "no response carried the new version"
        t_header = time.monotonic() - t0
        # That response triggered a background refresh; it did not wait for it.
        assert t.wait_version(new, timeout=10)
        t_applied = time.monotonic() - t0
        r = c.get(f"{world.url}/")
        assert r.headers["x-zone"] == "yq"
        assert version_of(r) == new
    t.close()
    print(
        f"\ncut-over to yq (version {new}): POST answered in {t_post * 1000:.0f} ms; first "
        f"response with the new version header {t_header * 1000:.0f} ms after the POST was "
        f"sent (request #{seen_at + 1} after it, served by "
        f"{zone_then}); SDK config applied {t_applied * 1000:.0f} ms after the POST "
        f"({(t_applied - t_header) * 1000:.1f} ms background refresh); the next request "
        f"went to yq"
    )


def test_killing_a_zone_lb_under_load_fails_no_idempotent_request(world):
    cp_devices, yq_devices = devices("cp", 8), devices("yq", 8)
    duration, kill_at, pause = 3.0, 1.0, 0.01
    policy = zc.BreakerPolicy(cool_down=30.0)  # no probing back during the test
    transports = {d: transport(world, d, breaker=policy) for d in cp_devices + yq_devices}
    # (request sent, response received, zone), seconds since t0
    log: dict[str, list[tuple[float, float, str]]] = {d: [] for d in transports}
    failures: list[str] = []
    start = threading.Barrier(len(transports) + 1)
    t0 = 0.0

    def run(device: str) -> None:
        with httpx.Client(transport=transports[device], timeout=5) as c:
            start.wait()
            for _ in range(1000):  # bounded by count and by time
                now = time.monotonic() - t0
                if now > duration:
                    break
                try:
                    r = c.get(f"{world.url}/?d={device}")
                    assert r.status_code == 200, r.status_code
                    log[device].append((now, time.monotonic() - t0, r.headers["x-zone"]))
                except Exception as e:
                    failures.append(f"{device} at {now:.3f}s: {type(e).__name__}: {e}")
                time.sleep(pause)

    threads = [threading.Thread(target=run, args=(d,), daemon=True) for d in transports]
    for th in threads:
        th.start()
    t0 = time.monotonic()
    start.wait()
    time.sleep(kill_at)
    killed = time.monotonic() - t0
    world.lbs["cp"].kill()  # SIGKILL the zone's LB (its process group) and reap it
    dead = time.monotonic() - t0
    for th in threads:
        th.join(duration + 30)
    total = sum(len(v) for v in log.values())
    assert not failures, failures[:5]
    switch = []
    for d in cp_devices:
        before = [z for _, got, z in log[d] if got < killed]
        assert before
        assert set(before) == {"cp"}
        # A request sent once the LB was dead can only have been served by yq (one in
        # flight at the kill may still read cp's answer from the socket buffer).
        after = [z for sent, _, z in log[d] if sent > dead]
        assert after, f"{d} made no request after the kill"
        assert set(after) == {"yq"}
        first_yq = min(got for _, got, z in log[d] if z == "yq")
        switch.append(first_yq - killed)
    for d in yq_devices:
        assert {z for _, _, z in log[d]} == {"yq"}
    stats = transports[cp_devices[0]].stats()["zones"]
    assert stats["cp"]["state"] == "open"
    assert stats["cp"]["switches"] == 1
    retried = sum(transports[d].stats()["zones"]["yq"]["retries"] for d in cp_devices)
    for tr in transports.values():
        tr.close()
    print(
        f"\nLB of zone cp SIGKILLed at {killed:.2f}s under load: {total} GETs from "
        f"{len(transports)} devices in {duration:.0f}s, 0 failed, {retried} retried on yq; "
        f"switch time (kill -> first success on yq) max {max(switch) * 1000:.1f} ms, "
        f"median {sorted(switch)[len(switch) // 2] * 1000:.1f} ms over {len(switch)} "
        f"cp devices (each sends every {pause * 1000:.0f} ms)"
    )


def test_sdk_keeps_working_with_the_control_plane_down(world):
    cp_dev, yq_dev = devices("cp", 1)[0], devices("yq", 1)[0]
    new = world.cutover("yq")
    t = transport(world, cp_dev)
    assert t.version == new
    assert t.route("api.example.test").zone == "yq"
    world.control.kill()
    with httpx.Client(transport=t, timeout=5) as c:
        for _ in range(20):
            r = c.get(f"{world.url}/")
            assert r.headers["x-zone"] == "yq"
            assert version_of(r) == new  # the LBs keep their last good copy too
    t.close()
    # A new Transport (an app restart) starts from the disk cache.
    for device in (cp_dev, yq_dev):
        t2 = transport(world, device, control_timeout=0.5)
        assert t2.stats()["config_source"] == "cache"
        assert t2.version == new
        with httpx.Client(transport=t2, timeout=5) as c:
            assert c.get(f"{world.url}/").headers["x-zone"] == "yq"
        t2.close()


def test_httpdns_down_falls_back_to_the_resolver_hook(world):
    calls: list[str] = []

    def resolver(host: str) -> list[str]:  # stands in for the system resolver
        calls.append(host)
        return [VIPS[host.split(".")[0].removeprefix("api-")]]

    device = devices("cp", 1)[0]
    t = transport(world, device, resolver=resolver)
    with httpx.Client(transport=t, timeout=5) as c:
        assert c.get(f"{world.url}/").headers["x-zone"] == "cp"
        assert calls == []
        assert t.stats()["resolver"]["httpdns"] >= 1
        world.httpdns.kill()
        # The HTTPDNS answers expire (TTL 1 s): refresh fails, the hook answers.
        deadline = time.monotonic() + 5
        n = 0
        while (not calls or n < 50) and time.monotonic() < deadline:
            assert c.get(f"{world.url}/").headers["x-zone"] == "cp"
            n += 1
            time.sleep(0.02)
    stats = t.stats()["resolver"]
    t.close()
    assert "api-cp.example.test" in calls
    assert stats["fallback"] >= 1
    assert stats["cached"]["api-cp.example.test"]["source"] == "system"


async def test_async_transport_end_to_end(world):
    device = devices("cp", 1)[0]
    t = zc.AsyncTransport(
        control=[world.control_url],
        device_id=device,
        httpdns=[world.httpdns_url],
        cache_path=world.tmp / "async-cache.json",
        resolver=None,
    )
    async with httpx.AsyncClient(transport=t, timeout=5) as c:
        assert (await c.get(f"{world.url}/")).headers["x-zone"] == "cp"
        new = world.cutover("yq")
        for _ in range(200):
            r = await c.get(f"{world.url}/")
            if version_of(r) >= new:
                break
        async with asyncio.timeout(10):
            await t.wait_version(new)
        assert (await c.get(f"{world.url}/")).headers["x-zone"] == "yq"
        world.lbs["yq"].kill()
        # yq is gone and cp holds no range: idempotent requests still succeed on cp.
        for _ in range(5):
            assert (await c.get(f"{world.url}/")).headers["x-zone"] == "cp"
    assert t.stats()["zones"]["yq"]["state"] == "open"
