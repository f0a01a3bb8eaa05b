"""The SDK's routing: the published hash vectors through the public API, route and
zone_order over split maps (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import zonegate.client as zc
from zonegate.balance import shard as server_shard
from zonegate.client._shard import ClientConfig, route, zone_order, zones_of
from zonegate.topology.schema import SplitMap, SplitZone

VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "shard.json").read_text(encoding="utf-8")
)["vectors"]


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: f"{v['device_id'][:16]!r}%{v['sharding']}")
def test_published_vectors_through_the_sdk(v):
    assert zc.shard_hash(v["device_id"]) == int(v["hash64"], 16)
    assert zc.shard_of(v["device_id"], v["sharding"]) == v["shard"]


def test_the_sdk_hash_is_the_server_hash():
    # Same function objects: the SDK and zonegate httpdns cannot drift apart.
    assert zc.shard_hash is server_shard.shard_hash
    assert zc.shard_of is server_shard.shard_of


def split(sharding: int = 100, **ranges: tuple[int, int]) -> SplitMap:
    return SplitMap(
        sharding=sharding,
        zones={
            z: SplitZone(lower=lo, upper=hi, domain=f"api-{z}.example.test")
            for z, (lo, hi) in ranges.items()
        },
    )


def config(zones=None, **splits: SplitMap) -> ClientConfig:
    return ClientConfig(version=3, split=splits, zones=zones or {})


def test_route_follows_the_ranges():
    cfg = ClientConfig(3, {"api.example.test": split(cp=(0, 50), yq=(50, 100))})
    # device-1 % 100 = 20, device-3 % 100 = 87 (vectors)
    r1 = route(cfg, "API.example.test.", "device-1")
    assert r1 == zc.Route("api.example.test", "cp", "api-cp.example.test", 20)
    assert route(cfg, "api.example.test", "device-3").zone == "yq"
    assert route(cfg, "other.example.test", "device-1") is None


def test_cut_over_range_owns_nothing():
    cfg = ClientConfig(4, {"api.example.test": split(cp=(0, 0), yq=(0, 100))})
    assert route(cfg, "api.example.test", "device-1").zone == "yq"


def test_from_state_reads_the_control_document_and_ignores_new_keys():
    doc = {
        "version": 7,
        "split": {"Api.Example.Test": split(cp=(0, 50), yq=(50, 100)).model_dump()},
        "zones": {"cp": "enabled", "yq": "drain"},
        "backends": {},
        "something_new": [1, 2],
    }
    cfg = ClientConfig.from_state(doc)
    assert cfg.version == 7
    assert set(cfg.split) == {"api.example.test"}
    assert cfg.zones == {"cp": "enabled", "yq": "drain"}
    assert cfg.zone_domains() == ["api-cp.example.test", "api-yq.example.test"]
    assert zones_of(cfg) == ["cp", "yq"]


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {},
        {"version": 0, "split": {}},
        {"version": True, "split": {}},
        {"version": "3", "split": {}},
        {"version": 1, "split": []},
        {"version": 1, "split": {"a": {"sharding": 0, "zones": {}}}},
        {"version": 1, "split": {"a": {"zones": {"z": {"lower": 0}}}}},
        {"version": 1, "split": {}, "zones": [1]},
    ],
)
def test_from_state_rejects_bad_documents(doc):
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies by case
        ClientConfig.from_state(doc)


def test_zone_order_is_a_ring_with_non_enabled_zones_last():
    three = split(a=(0, 30), b=(30, 60), c=(60, 100))
    cfg = ClientConfig(1, {"x": three})
    r = zc.Route("x", "b", "api-b.example.test", 40)
    assert [z for z, _ in zone_order(cfg, r)] == ["b", "c", "a"]
    cfg = ClientConfig(1, {"x": three}, zones={"c": "disabled"})
    assert [z for z, _ in zone_order(cfg, r)] == ["b", "a", "c"]
    cfg = ClientConfig(1, {"x": three}, zones={"b": "drain"})
    assert [z for z, _ in zone_order(cfg, r)] == ["c", "a", "b"]
    with pytest.raises(ValueError, match="not a split domain"):
        zone_order(cfg, zc.Route("y", "b", "d", 1))


@st.composite
def tiling(draw):
    sharding = draw(st.integers(1, 1000))
    n = draw(st.integers(1, 5))
    cuts = sorted(draw(st.lists(st.integers(0, sharding), min_size=n - 1, max_size=n - 1)))
    bounds = [0, *cuts, sharding]
    return split(sharding, **{f"z{i}": (bounds[i], bounds[i + 1]) for i in range(n)})


@given(tiling(), st.text(max_size=40))
def test_route_agrees_with_the_server_and_order_lists_every_zone_once(sm, device_id):
    cfg = ClientConfig(1, {"api.example.test": sm})
    r = route(cfg, "api.example.test", device_id)
    found = server_shard.zone_for(device_id, sm)
    assert r is not None
    assert found is not None
    assert r.zone == found[0]
    assert r.shard == server_shard.shard_of(device_id, sm.sharding)
    order = zone_order(cfg, r)
    assert order[0][0] == r.zone
    assert sorted(z for z, _ in order) == sorted(sm.zones)
