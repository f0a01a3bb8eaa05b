"""The split hash: published vectors, range, and zone_for over tiling splits."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from hashlib import sha256
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zonegate.balance.shard import shard_hash, shard_of, zone_for
from zonegate.topology.schema import SplitMap, SplitZone

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "shard.json"
DOC = json.loads(VECTORS.read_text(encoding="utf-8"))


def independent_shard(device_id: str, sharding: int) -> int:
    """The documented algorithm, written again without zonegate's code."""
    digest = sha256(device_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], byteorder="big", signed=False) % sharding


def split(sharding: int, **ranges: tuple[int, int]) -> SplitMap:
    return SplitMap(
        sharding=sharding,
        zones={
            z: SplitZone(lower=lo, upper=hi, domain=f"api-{z}.example.test")
            for z, (lo, hi) in ranges.items()
        },
    )


# --- published vectors


def test_vector_file_is_big_and_varied():
    vectors = DOC["vectors"]
    assert len(vectors) >= 30
    ids = {v["device_id"] for v in vectors}
    assert "" in ids
    assert any(len(d) >= 1000 for d in ids)
    assert any(not d.isascii() for d in ids)
    assert {7, 100, 1000} <= {v["sharding"] for v in vectors}


@pytest.mark.parametrize(
    "vector", DOC["vectors"], ids=lambda v: f"{v['device_id'][:16]!r}%{v['sharding']}"
)
def test_vector_matches_an_independent_implementation(vector):
    device_id, sharding = vector["device_id"], vector["sharding"]
    raw = device_id.encode("utf-8")
    if "utf8_hex" in vector:
        assert raw.hex() == vector["utf8_hex"]
    assert sha256(raw).digest()[:8].hex() == vector["hash64"]
    assert independent_shard(device_id, sharding) == vector["shard"]


@pytest.mark.parametrize(
    "vector", DOC["vectors"], ids=lambda v: f"{v['device_id'][:16]!r}%{v['sharding']}"
)
def test_vector_matches_shard_of(vector):
    assert shard_of(vector["device_id"], vector["sharding"]) == vector["shard"]
    assert format(shard_hash(vector["device_id"]), "016x") == vector["hash64"]


def test_docstring_worked_example():
    assert shard_hash("device-1") == 0x03204DE92E11FC8C == 225265645264174220
    assert shard_of("device-1", 100) == 20


def test_no_normalisation():
    # Composed and decomposed é, case and whitespace are different devices.
    assert shard_hash("\u00e9") != shard_hash("e\u0301")
    assert shard_hash("Device") != shard_hash("device")
    assert shard_hash(" device-1") != shard_hash("device-1")


# --- range and errors


@given(st.text(), st.integers(min_value=1, max_value=1_000_000))
def test_shard_is_in_range_and_matches(device_id, sharding):
    s = shard_of(device_id, sharding)
    assert 0 <= s < sharding
    assert s == independent_shard(device_id, sharding)


@given(st.text())
def test_hash_is_64_bits(device_id):
    assert 0 <= shard_hash(device_id) < 2**64


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "100", None])
def test_bad_sharding_is_refused(bad):
    with pytest.raises(ValueError, match="sharding"):
        shard_of("d", bad)


def test_lone_surrogate_is_refused():
    with pytest.raises(UnicodeEncodeError):
        shard_of("\ud800", 100)


def test_shards_are_spread_evenly():
    counts = Counter(shard_of(f"device-{i}", 10) for i in range(20_000))
    assert set(counts) == set(range(10))
    # 2000 expected per shard; 5 sigma is about 212.
    assert all(1750 < n < 2250 for n in counts.values())


# --- zone_for


def test_zone_for_two_zones():
    m = split(100, cp=(0, 50), yq=(50, 100))
    assert zone_for("device-1", m) == ("cp", m.zones["cp"])  # shard 20
    name, zone = zone_for("device-2", m) or ("", None)
    assert name == "cp"  # shard 19
    assert zone is not None
    assert zone.domain == "api-cp.example.test"


@given(
    st.lists(st.integers(min_value=0, max_value=1000), min_size=0, max_size=6),
    st.integers(min_value=1, max_value=1000),
    st.text(max_size=40),
)
def test_zone_for_tiling_split_always_finds_the_owner(cuts, sharding, device_id):
    points = sorted({c % sharding for c in cuts} | {0, sharding})
    ranges = {f"z{i}": (lo, hi) for i, (lo, hi) in enumerate(itertools.pairwise(points))}
    m = split(sharding, **ranges)
    found = zone_for(device_id, m)
    assert found is not None
    name, zone = found
    s = independent_shard(device_id, sharding)
    assert zone.lower <= s < zone.upper
    assert m.zones[name] is zone


@given(st.text(max_size=40), st.integers(min_value=0, max_value=100))
def test_zone_for_with_empty_ranges_for_cutover(device_id, cut):
    # A cut-over: "cp" is set to an empty range, "yq" takes everything; empty ranges
    # anywhere (at 0, in the middle, at the end) never own a device.
    m = split(100, cp=(cut, cut), yq=(0, 100))
    assert zone_for(device_id, m) == ("yq", m.zones["yq"])


def test_zone_for_moving_a_boundary_moves_only_the_slice():
    before = split(100, cp=(0, 50), yq=(50, 100))
    after = split(100, cp=(0, 40), yq=(40, 100))
    moved = 0
    for i in range(5000):
        d = f"dev{i}"
        a = zone_for(d, before)
        b = zone_for(d, after)
        assert a is not None
        assert b is not None
        if a[0] != b[0]:
            moved += 1
            assert a[0] == "cp"
            assert b[0] == "yq"
            assert 40 <= shard_of(d, 100) < 50
    assert 350 < moved < 650  # about 10%


def test_zone_for_gap_gives_none():
    m = split(100, cp=(0, 10))
    owned = [d for d in (f"d{i}" for i in range(300)) if zone_for(d, m) is not None]
    assert owned
    assert all(shard_of(d, 100) < 10 for d in owned)
    assert any(zone_for(f"d{i}", m) is None for i in range(300))
