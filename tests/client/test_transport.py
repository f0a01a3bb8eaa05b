"""The transports against real backend processes, config from a seed or a cache file
(no control plane here: see test_integration.py for the full system)."""

from __future__ import annotations

import json

import httpx
import pytest

import zonegate.client as zc
from tests.peers.processes import refused_port

pytestmark = pytest.mark.timeout(60)

SPLIT = {
    "api.example.test": {
        "sharding": 100,
        "zones": {
            "cp": {"lower": 0, "upper": 50, "domain": "api-cp.example.test"},
            "yq": {"lower": 50, "upper": 100, "domain": "api-yq.example.test"},
        },
    }
}
CP_DEVICE = "device-1"  # shard 20 (tests/vectors/shard.json)
YQ_DEVICE = "device-3"  # shard 87
URL = "http://api.example.test:8080"


@pytest.fixture
def zones(backend_factory):
    return backend_factory(name="cp1", zone="cp"), backend_factory(name="yq1", zone="yq")


def transport(zones, device=CP_DEVICE, **kw):
    cp, yq = zones
    kw.setdefault("split", SPLIT)
    kw.setdefault("cache_path", False)
    kw.setdefault("resolver", None)
    hosts = {"api-cp.example.test": cp.address, "api-yq.example.test": yq.address}
    return zc.Transport(device_id=device, hosts=hosts, **kw)


def test_routes_by_device_and_rewrites_host(zones):
    with httpx.Client(transport=transport(zones)) as c:
        r = c.get(f"{URL}/echo?x=1")
        assert r.headers["x-zone"] == "cp"
        echo = r.json()
        headers = {k.lower(): v for k, v in echo["headers"]}
        assert headers["host"] == "api-cp.example.test:8080"
        assert echo["path"] == "/echo"
        assert str(r.request.url) == f"{URL}/echo?x=1"  # the caller's URL is untouched
    with httpx.Client(transport=transport(zones, YQ_DEVICE)) as c:
        assert c.get(f"{URL}/").headers["x-zone"] == "yq"


def test_other_hosts_pass_through(zones):
    t = transport(zones)
    with httpx.Client(transport=t) as c:
        assert c.get(f"{zones[1].url}/").headers["x-zone"] == "yq"
    assert t.stats()["passthrough"] == 1


def test_idempotent_requests_are_retried_on_the_next_zone(zones):
    cp, _ = zones
    t = transport(zones)
    with httpx.Client(transport=t) as c:
        assert c.get(f"{URL}/").headers["x-zone"] == "cp"
        cp.kill()
        for _ in range(5):
            assert c.get(f"{URL}/").headers["x-zone"] == "yq"
        r = c.put(f"{URL}/upload", content=b"x" * 1000)
        assert r.headers["x-zone"] == "yq"
        assert r.json()["bytes"] == 1000
    s = t.stats()["zones"]
    assert s["cp"]["errors"] == 3
    assert s["cp"]["state"] == "open"
    assert s["cp"]["switches"] == 1
    assert s["yq"]["retries"] == 3
    assert s["yq"]["rerouted"] == 3 + 2 + 1


def test_non_idempotent_requests_raise_and_idempotency_key_allows_the_retry(zones):
    cp, _ = zones
    with httpx.Client(transport=transport(zones)) as c:
        cp.kill()
        with pytest.raises(httpx.ConnectError):
            c.post(f"{URL}/upload", content=b"abc")
        r = c.post(f"{URL}/upload", content=b"abc", headers={"Idempotency-Key": "k1"})
        assert r.headers["x-zone"] == "yq"
        assert r.json()["bytes"] == 3


def test_retry_can_be_disabled(zones):
    zones[0].kill()
    with (
        httpx.Client(transport=transport(zones, retry=False)) as c,
        pytest.raises(httpx.ConnectError),
    ):
        c.get(f"{URL}/")


def test_no_config_at_all_is_an_explicit_error(tmp_path):
    dead = f"http://127.0.0.1:{refused_port()}"
    with pytest.raises(zc.ConfigUnavailable, match="no split config"):
        zc.Transport(control=[dead], device_id="d", cache_path=tmp_path / "none.json")


def test_starts_from_a_cache_file_when_the_control_plane_is_down(zones, tmp_path):
    cache = tmp_path / "cache.json"
    cache.write_text(json.dumps({"version": 9, "split": SPLIT, "zones": {}, "backends": {}}))
    dead = f"http://127.0.0.1:{refused_port()}"
    t = transport(zones, control=[dead], cache_path=cache, split=None)
    with httpx.Client(transport=t) as c:
        assert c.get(f"{URL}/").headers["x-zone"] == "cp"
    assert t.version == 9
    assert t.stats()["config_source"] == "cache"


def test_unresolvable_zone_domains_raise_resolve_error(zones):
    t = zc.Transport(device_id=CP_DEVICE, split=SPLIT, cache_path=False, resolver=None)
    with httpx.Client(transport=t) as c, pytest.raises(zc.ResolveError) as info:
        c.get(f"{URL}/")
    assert isinstance(info.value, httpx.ConnectError)
    # Both zones were tried: the device's own, then the retry on the other one.
    assert t.stats()["zones"]["cp"]["errors"] == 1
    assert t.stats()["zones"]["yq"]["errors"] == 1


def test_fallback_resolver_callable_is_used_without_httpdns(zones):
    cp, _yq = zones
    calls = []

    def resolve(host):
        calls.append(host)
        return {"api-cp.example.test": ["127.0.0.1"]}.get(host, [])

    t = zc.Transport(device_id=CP_DEVICE, split=SPLIT, cache_path=False, resolver=resolve)
    with httpx.Client(transport=t) as c:
        r = c.get(f"http://api.example.test:{cp.port}/")
        assert r.headers["x-zone"] == "cp"
        c.get(f"http://api.example.test:{cp.port}/")
    assert calls == ["api-cp.example.test"]  # cached for fallback_ttl
    assert t.stats()["resolver"]["fallback"] == 1


async def test_async_transport_routes_and_fails_over(zones):
    cp, _ = zones
    hosts = {"api-cp.example.test": cp.address, "api-yq.example.test": zones[1].address}
    t = zc.AsyncTransport(
        device_id=CP_DEVICE, split=SPLIT, cache_path=False, resolver=None, hosts=hosts
    )
    async with httpx.AsyncClient(transport=t) as c:
        assert (await c.get(f"{URL}/")).headers["x-zone"] == "cp"
        cp.kill()
        zones_seen = [(await c.get(f"{URL}/")).headers["x-zone"] for _ in range(5)]
        assert zones_seen == ["yq"] * 5
        zones[1].kill()
        with pytest.raises(httpx.ConnectError):  # non-idempotent: no retry
            await c.post(f"{URL}/upload", content=b"x")
    assert t.stats()["zones"]["cp"]["state"] == "open"
