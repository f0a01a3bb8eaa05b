"""Cross-reference checks (`topology.validate`), on topologies built in Python."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from zonegate.topology.schema import Topology
from zonegate.topology.validate import is_dns_name, split_ranges_problems, validate


def pool(zone: str = "cp", *ports: int, backup: str | None = None, **extra: Any) -> dict[str, Any]:
    backends = [{"address": f"127.0.0.1:{p}"} for p in ports or (8101,)]
    out: dict[str, Any] = {"zone": zone, "backends": backends, **extra}
    if backup is not None:
        out["backup"] = backup
    return out


def topo(**sections: Any) -> Topology:
    data: dict[str, Any] = {"zones": {"cp": {}, "yq": {}}}
    data.update(sections)
    return Topology.model_validate(data)


def problems(**sections: Any) -> list[tuple[tuple[str | int, ...], str]]:
    return validate(topo(**sections))


def test_consistent_topology_has_no_problems() -> None:
    assert (
        problems(
            pools={"a": pool("cp", backup="b"), "b": pool("yq", 8201, backup="a")},
            listeners={
                "l": {"zone": "cp", "bind": "127.0.0.1:8080", "routes": [{"pool": "a"}]},
                # A listener may send traffic to a pool of another zone.
                "m": {"zone": "cp", "bind": "127.0.0.1:8081", "routes": [{"pool": "b"}]},
            },
            split={
                "api.test": {
                    "zones": {
                        "cp": {"lower": 0, "upper": 100, "domain": "cp.api.test"},
                        "yq": {"lower": 100, "upper": 100, "domain": "yq.api.test"},
                    }
                }
            },
        )
        == []
    )


def test_unknown_zone_lists_the_zones() -> None:
    assert problems(pools={"web-cp": pool("foo")}) == [
        (("pools", "web-cp", "zone"), "unknown zone 'foo' (zones: cp, yq)")
    ]


def test_listener_in_unknown_zone_and_route_to_unknown_pool() -> None:
    got = problems(
        pools={"a": pool()},
        listeners={"l": {"zone": "xx", "bind": "127.0.0.1:80", "routes": [{"pool": "b"}]}},
    )
    assert got == [
        (("listeners", "l", "zone"), "unknown zone 'xx' (zones: cp, yq)"),
        (("listeners", "l", "routes", 0, "pool"), "unknown pool 'b' (pools: a)"),
    ]


def test_unknown_pool_when_none_defined() -> None:
    got = problems(listeners={"l": listener("1.2.3.4:80", routes=[{"pool": "b"}])})
    assert got == [
        (("listeners", "l", "routes", 0, "pool"), "unknown pool 'b' (pools: none defined)")
    ]


def test_backup_unknown_and_self() -> None:
    got = problems(pools={"a": pool(backup="zz"), "b": pool(backup="b")})
    assert got == [
        (("pools", "a", "backup"), "unknown backup pool 'zz' (pools: a, b)"),
        (("pools", "b", "backup"), "pool 'b' is its own backup"),
    ]


def test_mutual_backup_across_zones_is_allowed() -> None:
    assert problems(pools={"a": pool("cp", backup="b"), "b": pool("yq", backup="a")}) == []


def test_mutual_backup_within_one_zone_is_a_cycle() -> None:
    assert problems(pools={"a": pool("cp", backup="b"), "b": pool("cp", backup="a")}) == [
        (
            ("pools", "a", "backup"),
            "backup cycle: a -> b -> a (two pools in the same zone cannot back each other up)",
        )
    ]


def test_cycle_of_three_is_named_once_from_the_first_pool() -> None:
    got = problems(
        pools={
            "x": pool("cp", backup="b"),  # leads into the cycle, not part of it
            "b": pool("yq", backup="c"),
            "a": pool("cp", backup="b"),
            "c": pool("cp", backup="a"),
        }
    )
    assert got == [
        (
            ("pools", "b", "backup"),
            "backup cycle: b -> c -> a -> b "
            "(only two pools in different zones may back each other up)",
        )
    ]


def test_backup_chain_without_cycle_is_allowed() -> None:
    assert problems(pools={"a": pool(backup="b"), "b": pool("yq", backup="c"), "c": pool()}) == []


def test_duplicate_backends() -> None:
    same_address = pool("cp", 8101, 8101)
    named = {
        "zone": "cp",
        "backends": [
            {"address": "127.0.0.1:1", "name": "x"},
            {"address": "127.0.0.1:2", "name": "x"},
            {"address": "127.0.0.1:3"},
            {"address": "127.0.0.1:3", "name": "y"},  # named: the address clash is enough
        ],
    }
    assert problems(pools={"a": same_address, "b": named}) == [
        (
            ("pools", "a", "backends", 1, "address"),
            "duplicate backend address 127.0.0.1:8101 (also backends[0])",
        ),
        (("pools", "b", "backends", 1, "name"), "duplicate backend 'x' (also backends[0])"),
        (
            ("pools", "b", "backends", 3, "address"),
            "duplicate backend address 127.0.0.1:3 (also backends[2])",
        ),
    ]


def test_passive_ejection_bounds() -> None:
    health = {"passive": {"base_ejection": "10m", "max_ejection": "5m"}}
    # A timeout longer than the interval is fine: probes simply do not overlap.
    health["active"] = {"interval": "1s", "timeout": "5s"}
    assert problems(pools={"a": pool(health=health)}) == [
        (
            ("pools", "a", "health", "passive", "base_ejection"),
            "base_ejection (600s) is longer than max_ejection (300s)",
        )
    ]


def listener(bind: str, zone: str = "cp", **extra: Any) -> dict[str, Any]:
    return {"zone": zone, "bind": bind, "routes": [{"pool": "a"}], **extra}


def test_bind_conflicts_within_a_zone() -> None:
    got = validate(
        Topology.model_validate(
            {
                "zones": {"cp": {"lb_admin": "127.0.0.1:9901"}, "yq": {}},
                "pools": {"a": pool()},
                "listeners": {
                    "l1": listener("127.0.0.1:8080"),
                    "l2": listener("127.0.0.1:8080"),
                    "l3": listener("0.0.0.0:8081"),
                    "l4": listener("10.0.0.1:8081"),
                    "l5": listener("[::]:8081"),  # IPv6 wildcard: no IPv4 overlap
                    "l6": listener("127.0.0.1:9901"),
                    # Another zone runs its own `zonegate lb`: no conflict.
                    "l7": listener("127.0.0.1:8080", zone="yq"),
                },
            }
        )
    )
    assert got == [
        (
            ("listeners", "l2", "bind"),
            "address 127.0.0.1:8080 is already bound by listener 'l1'",
        ),
        (
            ("listeners", "l4", "bind"),
            "address 10.0.0.1:8081 overlaps 0.0.0.0:8081 bound by listener 'l3'",
        ),
        (
            ("listeners", "l6", "bind"),
            "address 127.0.0.1:9901 is already bound by the lb_admin of zone 'cp'",
        ),
    ]


def test_tcp_listener_takes_one_plain_route() -> None:
    routes = [{"pool": "a", "host": "db.test", "path_prefix": "/x"}, {"pool": "a"}]
    got = problems(
        pools={"a": pool()},
        listeners={"t": listener("127.0.0.1:5432", protocol="tcp", routes=routes)},
    )
    assert got == [
        (("listeners", "t", "routes"), "a tcp listener takes exactly one route, got 2"),
        (("listeners", "t", "routes", 0, "host"), "a tcp listener cannot route by host"),
        (("listeners", "t", "routes", 0, "path_prefix"), "a tcp listener cannot route by path"),
    ]


def test_duplicate_and_invalid_routes() -> None:
    routes = [
        {"pool": "a", "host": "API.test"},
        {"pool": "a", "host": "api.test."},
        {"pool": "a"},
        {"pool": "a", "path_prefix": "/v1"},
        {"pool": "a"},
        {"pool": "a", "host": "*.test"},
        {"pool": "a", "host": "*"},
        {"pool": "a", "host": "a_b.test"},
    ]
    got = problems(pools={"a": pool()}, listeners={"l": listener("1.2.3.4:80", routes=routes)})
    invalid = (
        "expected a host name such as 'api.example.test' or a wildcard such as "
        "'*.example.test' (omit host to match any host)"
    )
    assert got == [
        (
            ("listeners", "l", "routes", 1),
            "duplicate route for host 'api.test.' and path_prefix '/' (also routes[0])",
        ),
        (
            ("listeners", "l", "routes", 4),
            "duplicate route for any host and path_prefix '/' (also routes[2])",
        ),
        (("listeners", "l", "routes", 6, "host"), f"invalid host '*': {invalid}"),
        (("listeners", "l", "routes", 7, "host"), f"invalid host 'a_b.test': {invalid}"),
    ]


def split(sharding: int = 100, **zones: tuple[int, int] | tuple[int, int, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spec in zones.items():
        domain = spec[2] if len(spec) == 3 else f"{name}.api.test"
        out[name] = {"lower": spec[0], "upper": spec[1], "domain": domain}
    return {"sharding": sharding, "zones": out}


def test_split_problems_have_paths() -> None:
    got = problems(
        split={
            "api_bad.test": split(cp=(0, 60), yq=(40, 90, "not a domain")),
            "b.test": split(cp=(0, 100), zz=(100, 100)),
            "c.test": split(50, cp=(0, 50), yq=(30, 20)),
        }
    )
    assert got == [
        (("split", "api_bad.test"), "invalid domain 'api_bad.test': expected a DNS name"),
        (
            ("split", "api_bad.test", "zones", "yq", "domain"),
            "invalid domain 'not a domain': expected a DNS name",
        ),
        (("split", "api_bad.test", "zones", "yq"), "zones cp and yq overlap on [40, 60)"),
        (("split", "api_bad.test", "zones"), "gap [90, 100) not covered"),
        (("split", "b.test", "zones", "zz"), "unknown zone 'zz' (zones: cp, yq)"),
        (("split", "c.test", "zones", "yq", "lower"), "lower 30 is above upper 20"),
    ]


def test_also_defined_names_are_not_reported() -> None:
    t = topo(
        pools={"a": pool("broken-zone", backup="broken-pool")},
        listeners={"l": listener("1.2.3.4:80", routes=[{"pool": "broken-pool"}])},
    )
    assert validate(t, also_defined={"zones": ["broken-zone"], "pools": ["broken-pool"]}) == []
    assert len(validate(t)) == 3


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("api.example.test", True),
        ("api.example.test.", True),
        ("localhost", True),
        ("xn--bcher-kva.example", True),
        ("a-b.c", True),
        ("", False),
        (".", False),
        ("a..b", False),
        ("-a.test", False),
        ("a-.test", False),
        ("a_b.test", False),
        ("10.0.0.1", False),
        ("a" * 64 + ".test", False),
        (".".join(["a" * 63] * 4), False),  # 255 characters
    ],
)
def test_is_dns_name(name: str, ok: bool) -> None:
    assert is_dns_name(name) is ok


# --- split_ranges_problems ----------------------------------------------------------


def test_split_ranges_messages() -> None:
    assert split_ranges_problems(100, {"a": (0, 50), "b": (50, 100)}) == []
    assert split_ranges_problems(100, {"a": (0, 40), "b": (50, 100)}) == [
        "gap [40, 50) not covered"
    ]
    assert split_ranges_problems(100, {"a": (0, 60), "b": (40, 100)}) == [
        "zones a and b overlap on [40, 60)"
    ]
    assert split_ranges_problems(100, {"a": (0, 100), "b": (7, 7)}) == []
    assert split_ranges_problems(100, {"a": (-5, 120), "b": (60, 50)}) == [
        "zone 'a': lower -5 is negative",
        "zone 'a': upper 120 is above sharding 100",
        "zone 'b': lower 60 is above upper 50",
    ]
    assert split_ranges_problems(100, {}) == ["gap [0, 100) not covered"]
    assert split_ranges_problems(0, {"a": (0, 0)}) == ["sharding must be ≥ 1, got 0"]


@st.composite
def tilings(draw: st.DrawFn) -> tuple[int, dict[str, tuple[int, int]]]:
    """A sharding and ranges that tile it exactly (plus some empty ranges)."""
    sharding = draw(st.integers(min_value=2, max_value=10_000))
    cuts = draw(st.sets(st.integers(min_value=1, max_value=sharding - 1), max_size=8))
    bounds = [0, *sorted(cuts), sharding]
    ranges = {f"z{i}": span for i, span in enumerate(itertools.pairwise(bounds))}
    empties = draw(st.lists(st.integers(min_value=0, max_value=sharding), max_size=3))
    ranges.update({f"e{i}": (at, at) for i, at in enumerate(empties)})
    names = draw(st.permutations(list(ranges)))
    return sharding, {name: ranges[name] for name in names}


@given(tilings())
def test_tilings_are_accepted(case: tuple[int, dict[str, tuple[int, int]]]) -> None:
    sharding, ranges = case
    assert split_ranges_problems(sharding, ranges) == []


_OVERLAP = re.compile(r"zones (\S+) and (\S+) overlap on \[(\d+), (\d+)\)")


@given(tilings(), st.data())
def test_moving_a_boundary_is_reported(
    case: tuple[int, dict[str, tuple[int, int]]], data: st.DataObject
) -> None:
    sharding, ranges = case
    zone = data.draw(st.sampled_from([z for z, (lo, hi) in ranges.items() if lo < hi]))
    lo, hi = ranges[zone]
    moves = [(v, hi) for v in range(max(0, lo - 5), min(hi - 1, lo + 5) + 1) if v != lo]
    moves += [(lo, v) for v in range(max(lo + 1, hi - 5), min(sharding, hi + 5) + 1) if v != hi]
    assume(moves)  # only sharding 1 has no move
    new_lo, new_hi = data.draw(st.sampled_from(moves))
    got = split_ranges_problems(sharding, {**ranges, zone: (new_lo, new_hi)})
    if new_lo > lo or new_hi < hi:  # shrunk: exactly the uncovered part is a gap
        gap = f"[{lo}, {new_lo})" if new_lo > lo else f"[{new_hi}, {hi})"
        assert got == [f"gap {gap} not covered"]
    else:  # grew: overlaps with the neighbours, which together cover the growth
        grown = set(range(new_lo, lo)) | set(range(hi, new_hi))
        covered: set[int] = set()
        for msg in got:
            m = _OVERLAP.fullmatch(msg)
            assert m is not None, msg
            assert zone in (m[1], m[2])
            covered |= set(range(int(m[3]), int(m[4])))
        assert covered == grown


@given(tilings(), st.data())
def test_removing_a_zone_leaves_its_gap(
    case: tuple[int, dict[str, tuple[int, int]]], data: st.DataObject
) -> None:
    sharding, ranges = case
    zone = data.draw(st.sampled_from([z for z, (lo, hi) in ranges.items() if lo < hi]))
    lo, hi = ranges.pop(zone)
    assert split_ranges_problems(sharding, ranges) == [f"gap [{lo}, {hi}) not covered"]
