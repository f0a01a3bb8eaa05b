"""The GSLB policy chain (dns.policy): region map, each method, the chain, properties."""

from __future__ import annotations

import ipaddress
import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zonegate.dns.model import ClientInfo, Decision, ZoneState
from zonegate.dns.policy import (
    METHODS,
    GslbTable,
    RegionMap,
    SelectionState,
    compile_gslb,
    decide,
    decide_planned,
    explain,
    needs_region,
    plan,
)
from zonegate.topology.schema import Region, Topology, Zone

UP = ZoneState(up=True, healthy=3, total=3)
DOWN = ZoneState(up=False, healthy=0, total=3)
NORTH = ClientInfo("1.2.3.4")
WEST = ClientInfo("5.6.7.8")
NOWHERE = ClientInfo("9.9.9.9")

ZONES: dict[str, Any] = {
    "cp": {"region": "north", "vips": ["10.0.1.1", "2001:db8:1::1"]},
    "yq": {"region": "west", "vips": ["10.0.2.1", "2001:db8:2::1"]},
}
REGIONS: dict[str, Any] = {
    "north": {"prefixes": ["1.2.0.0/16", "2001:db8:aaaa::/48"]},
    "west": {"prefixes": ["5.6.0.0/16"]},
}


def topo(
    gslb: dict[str, Any] | None = None,
    *,
    zones: dict[str, Any] | None = None,
    regions: dict[str, Any] | None = None,
    records: dict[str, Any] | None = None,
    **dns: Any,
) -> Topology:
    domain: dict[str, Any] = {"ns": ["ns1"], "gslb": gslb if gslb is not None else {"api": {}}}
    if records is not None:
        domain["records"] = records
    return Topology.model_validate(
        {
            "zones": ZONES if zones is None else zones,
            "dns": {
                "domains": {"example.test": domain},
                "regions": REGIONS if regions is None else regions,
                **dns,
            },
        }
    )


def table(record: dict[str, Any] | None = None, **kwargs: Any) -> GslbTable:
    return compile_gslb(topo({"api": record or {}}, **kwargs))


def run(
    tab: GslbTable,
    client: ClientInfo = NORTH,
    health: dict[str, ZoneState] | None = None,
    qtype: str = "A",
    *,
    name: str = "api.example.test",
    state: SelectionState | None = None,
    seed: int = 0,
) -> Decision:
    if health is None:
        health = {"cp": UP, "yq": UP}
    d = decide(name, qtype, client, tab, health, state or SelectionState(), random.Random(seed))
    assert d is not None
    return d


def stages(d: Decision) -> list[tuple[str, tuple[str, ...]]]:
    return [(s.stage, s.kept) for s in d.steps]


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


# --- region map ---------------------------------------------------------------------


def region_map(**kwargs: Any) -> RegionMap:
    regions = {
        "wide": Region(prefixes=["1.0.0.0/8", "2001:db8::/32"]),
        "north": Region(prefixes=["1.2.0.0/16", "2001:db8:1::/48"], countries=["CN"]),
        "west": Region(prefixes=["1.2.3.0/24"], countries=["US"], zones=["b", "a"]),
    }
    zones = {"a": Zone(region="north"), "b": Zone(region="west"), "c": Zone(region="north")}
    return RegionMap(regions, zones=zones, **kwargs)


@pytest.mark.parametrize(
    ("network", "region", "how"),
    [
        ("1.2.3.4/32", "west", "prefix 1.2.3.0/24"),
        ("1.2.3.0/24", "west", "prefix 1.2.3.0/24"),
        ("1.2.4.9/32", "north", "prefix 1.2.0.0/16"),
        # A client subnet matches only prefixes that contain it: a /20 inside north
        # but wider than west's /24 is north's.
        ("1.2.0.0/20", "north", "prefix 1.2.0.0/16"),
        ("1.0.0.0/8", "wide", "prefix 1.0.0.0/8"),
        ("0.0.0.0/7", None, "no prefix matches and there is no default_region"),
        ("9.9.9.9/32", None, "no prefix matches and there is no default_region"),
        ("2001:db8:1:2::/64", "north", "prefix 2001:db8:1::/48"),
        ("2001:db8:ffff::1/128", "wide", "prefix 2001:db8::/32"),
        ("::ffff:1.2.4.9/128", "north", "prefix 1.2.0.0/16"),  # IPv4-mapped
        ("::ffff:1.2.3.0/120", "west", "prefix 1.2.3.0/24"),
    ],
)
def test_longest_prefix_match(network: str, region: str | None, how: str) -> None:
    located = region_map().locate(net(network))
    assert (located.region, located.how) == (region, how)
    assert region_map().lookup(net(network)) == region


def test_country_hook_only_when_no_prefix_matches() -> None:
    asked: list[str] = []

    def country_of(address: str) -> str | None:
        asked.append(address)
        return {"9.9.9.9": "US", "8.8.8.8": "FR", "7.7.7.7": "cn"}.get(address)

    rm = region_map(country_of=country_of)
    assert rm.locate(net("1.2.3.4/32")).region == "west"
    assert asked == []
    assert rm.locate(net("9.9.9.9/32")).how == "country US"
    assert rm.lookup(net("9.9.9.9/32")) == "west"
    assert rm.lookup(net("7.7.7.7/32")) == "north"  # codes compare upper case
    assert rm.locate(net("8.8.8.8/32")).how == ("no prefix matches and country FR is in no region")
    assert rm.lookup(net("6.6.6.6/32")) is None
    # An ECS subnet is looked up by its network address.
    rm.lookup(net("9.9.9.0/24"))
    assert asked[-1] == "9.9.9.0"


def test_country_hook_errors_count_as_no_country() -> None:
    def broken(address: str) -> str | None:
        raise ValueError(address)

    assert region_map(country_of=broken, default_region="wide").lookup(net("6.6.6.6/32")) == "wide"


def test_default_region() -> None:
    rm = region_map(default_region="north", country_of=lambda a: "FR")
    assert rm.locate(net("9.9.9.9/32")).how == "country FR is in no region: default region"
    rm = region_map(default_region="north")
    assert rm.locate(net("9.9.9.9/32")).how == "no prefix matches: default region"
    assert rm.lookup(net("1.2.3.4/32")) == "west"  # a prefix beats the default


def test_zones_for_a_region() -> None:
    rm = region_map()
    assert rm.zones_for("west") == ("b", "a")  # Region.zones, in its order
    assert rm.zones_for("north") == ("a", "c")  # else zones with that region, file order
    assert rm.zones_for("wide") == ()
    assert rm.zones_for("nope") == ()


def test_first_region_wins_a_duplicate_prefix_and_bad_prefixes_are_skipped() -> None:
    rm = RegionMap(
        {
            "a": Region(prefixes=["10.0.0.0/8", "10.1.2.3/16", "10.1.2.999/8"]),
            "b": Region(prefixes=["10.0.0.0/8"]),
        }
    )
    assert rm.lookup(net("10.9.9.9/32")) == "a"
    assert rm.locate(net("10.1.0.1/32")).how == "prefix 10.1.0.0/16"


# --- compile ------------------------------------------------------------------------


def test_compile_qualifies_names_and_splits_families() -> None:
    tab = compile_gslb(
        topo(
            {
                "api": {},
                "@": {"zones": ["yq"]},
                "Deep.Api": {},
                "abs.example.test.": {},
                "full.example.test": {},
            }
        )
    )
    assert list(tab.names) == [
        "api.example.test",
        "example.test",
        "deep.api.example.test",
        "abs.example.test",
        "full.example.test",
    ]
    api = tab.names["api.example.test"]
    assert api.candidates == ("cp", "yq")
    assert api.vips4 == {"cp": ("10.0.1.1",), "yq": ("10.0.2.1",)}
    assert api.vips6 == {"cp": ("2001:db8:1::1",), "yq": ("2001:db8:2::1",)}
    assert tab.names["example.test"].candidates == ("yq",)
    assert tab.get("API.Example.Test.") is api
    assert tab.get("nope.example.test") is None


def test_default_candidates_are_the_zones_with_vips() -> None:
    zones = {**ZONES, "lab": {"region": "north"}}
    tab = table(zones=zones)
    assert tab.names["api.example.test"].candidates == ("cp", "yq")


def test_not_a_gslb_name() -> None:
    tab = table()
    assert (
        decide("www.example.test", "A", NORTH, tab, {}, SelectionState(), random.Random()) is None
    )


# --- health -------------------------------------------------------------------------


def test_health_drops_down_unknown_and_wrong_family_zones() -> None:
    zones = {
        "cp": {"region": "north", "vips": ["10.0.1.1"]},
        "yq": {"region": "west", "vips": ["10.0.2.1", "2001:db8:2::1"]},
        "bj": {"vips": ["10.0.3.1"]},
        "sh": {"vips": ["10.0.4.1"]},
    }
    tab = table({"preferred": ["all"]}, zones=zones)
    health = {
        "cp": UP,
        "yq": UP,
        "bj": ZoneState(up=False, healthy=0, total=3, reason="lb_status: 0/3 < 50%"),
    }
    d = run(tab, health=health, qtype="A")
    assert d.steps[0].kept == ("cp", "yq")
    assert d.steps[0].why == (
        "cp up: 3/3 backends healthy; yq up: 3/3 backends healthy; "
        "bj down: 0/3 backends healthy (lb_status: 0/3 < 50%); sh down: no health state yet"
    )
    d = run(tab, health=health, qtype="AAAA")
    assert d.steps[0].kept == ("yq",)
    assert d.steps[0].why.startswith("cp has no IPv6 VIP; yq up")
    assert d.addresses == ("2001:db8:2::1",)


def test_no_vip_of_the_family_is_an_empty_answer_not_a_fallback() -> None:
    zones = {"cp": {"vips": ["10.0.1.1"]}, "yq": {"vips": ["10.0.2.1"]}}
    d = run(table(zones=zones, regions={}), qtype="AAAA")
    assert (d.addresses, d.fallback) == ((), False)
    assert d.steps[-1].why == "no candidate zone has an IPv6 VIP: empty answer"


def test_other_query_types_get_no_data() -> None:
    d = run(table(), qtype="MX")
    assert d.addresses == ()
    assert stages(d) == [("type", ())]
    assert "A and AAAA answers only, no MX" in d.steps[0].why


# --- methods ------------------------------------------------------------------------


def test_every_schema_method_has_an_implementation() -> None:
    from typing import get_args

    from zonegate.topology.schema import GslbMethod

    assert set(METHODS) == set(get_args(GslbMethod))


def test_topology_keeps_the_region_zones_in_region_order() -> None:
    zones = {
        "cp": {"region": "north", "vips": ["10.0.1.1"]},
        "yq": {"region": "west", "vips": ["10.0.2.1"]},
        "bj": {"vips": ["10.0.3.1"]},
    }
    regions = {"north": {"prefixes": ["1.2.0.0/16"], "zones": ["bj", "cp"]}}
    tab = table({"preferred": ["topology"], "answers": 3}, zones=zones, regions=regions)
    health = {"cp": UP, "yq": UP, "bj": UP}
    d = run(tab, ClientInfo("8.8.8.8", net("1.2.3.0/24")), health)
    assert d.steps[1].stage == "preferred:topology"
    assert d.steps[1].kept == ("bj", "cp")
    assert d.steps[1].why == "client 1.2.3.0/24 -> region north (prefix 1.2.0.0/16) -> zones bj, cp"
    assert d.addresses == ("10.0.3.1", "10.0.1.1")
    # Only the zones health kept: bj down leaves cp.
    d = run(tab, NORTH, {**health, "bj": DOWN})
    assert d.steps[1].kept == ("cp",)


def test_topology_fails_without_a_region_and_the_chain_goes_to_alternate() -> None:
    tab = table({"preferred": ["topology"], "alternate": ["admin"], "admin_order": ["yq"]})
    d = run(tab, NOWHERE)
    assert stages(d)[1:] == [
        ("preferred:topology", ()),
        ("alternate:admin", ("yq", "cp")),
        ("answer", ("yq",)),
    ]
    assert d.steps[1].why == (
        "client 9.9.9.9: no prefix matches and there is no default_region: "
        "no region, topology fails"
    )


def test_topology_fails_when_none_of_the_region_zones_is_left() -> None:
    tab = table({"preferred": ["topology"], "alternate": ["all"]})
    d = run(tab, WEST, {"cp": UP, "yq": DOWN})
    assert d.steps[1].kept == ()
    assert d.steps[1].why.endswith("-> zones yq: none of them is left, topology fails")
    assert d.zones == ("cp",)


def test_topology_with_default_region() -> None:
    tab = table({"preferred": ["topology"]}, default_region="west")
    d = run(tab, NOWHERE)
    assert d.zones == ("yq",)
    assert "no prefix matches: default region" in d.steps[1].why


def test_topology_with_a_bad_client_address_fails_quietly() -> None:
    d = run(table(), ClientInfo("not-an-ip"))
    assert d.steps[1].why == (
        "client 'not-an-ip': the client address is not an IP address: no region, topology fails"
    )
    assert d.addresses


def test_weight_orders_by_weight_and_drops_zero() -> None:
    zones = {
        "cp": {"vips": ["10.0.1.1"], "weight": 0},
        "yq": {"vips": ["10.0.2.1"], "weight": 5},
        "bj": {"vips": ["10.0.3.1"], "weight": 5},
    }
    tab = table({"preferred": ["weight"], "answers": 3}, zones=zones, regions={})
    d = run(tab, health={"cp": UP, "yq": UP, "bj": UP})
    assert set(d.zones) == {"yq", "bj"}
    assert d.steps[1].why.startswith("weights cp 0, yq 5, bj 5; dropped cp (weight 0) -> drew ")


def test_weight_with_only_zero_weights_fails() -> None:
    zones = {"cp": {"vips": ["10.0.1.1"], "weight": 0}, "yq": {"vips": ["10.0.2.1"], "weight": 0}}
    tab = table({"preferred": ["weight"], "alternate": ["all"]}, zones=zones, regions={})
    d = run(tab)
    assert stages(d)[1:3] == [("preferred:weight", ()), ("alternate:all", ("cp", "yq"))]
    assert d.steps[1].why.endswith("no zone with a positive weight, weight fails")


def test_ip_weight_orders_addresses_within_a_zone() -> None:
    zones = {"cp": {"vips": ["10.0.1.1", "10.0.1.2", "10.0.1.3"]}, "yq": {"vips": ["10.0.2.1"]}}
    record = {
        "preferred": ["admin", "ip_weight"],
        "admin_order": ["cp", "yq"],
        "ip_weights": {"10.0.1.1": 0, "10.0.1.2": 3},  # 10.0.1.3: default 1
    }
    tab = table(record, zones=zones, regions={})
    firsts = Counter(run(tab, seed=seed).addresses[0] for seed in range(4000))
    assert set(firsts) == {"10.0.1.2", "10.0.1.3"}  # weight 0 is never answered
    assert firsts["10.0.1.2"] / 4000 == pytest.approx(0.75, abs=0.03)
    d = run(tab)
    assert d.steps[2].why.startswith("address order: cp 10.0.1.")
    assert d.zones == ("cp",)


def test_ip_weight_drops_a_zone_whose_addresses_all_weigh_zero() -> None:
    record = {"preferred": ["ip_weight"], "ip_weights": {"10.0.1.1": 0}}
    d = run(table(record, regions={}))
    assert d.steps[1].kept == ("yq",)
    assert "cp dropped: every address has weight 0" in d.steps[1].why
    assert d.addresses == ("10.0.2.1",)


def test_capacity_drops_zones_over_the_threshold() -> None:
    zones = {
        "cp": {"vips": ["10.0.1.1"], "capacity": 100},  # configured: beats the LB's figure
        "yq": {"vips": ["10.0.2.1"]},
        "bj": {"vips": ["10.0.3.1"]},
    }
    record = {"preferred": ["capacity"], "capacity_threshold": 0.8, "answers": 3}
    tab = table(record, zones=zones, regions={})
    health = {
        "cp": ZoneState(up=True, sessions=81, capacity=1000),
        "yq": ZoneState(up=True, sessions=80, capacity=100),
        "bj": ZoneState(up=True, sessions=10**6),
    }
    d = run(tab, health=health)
    assert d.steps[1].kept == ("yq", "bj")
    assert d.steps[1].why == (
        "cp dropped: 81/100 sessions (81%) > 80%; yq 80/100 sessions (80%); "
        "bj capacity unknown, kept"
    )


def test_capacity_dropping_every_zone_ends_in_the_healthy_zones() -> None:
    zones = {"cp": {"vips": ["10.0.1.1"], "capacity": 10}, "yq": {"vips": ["10.0.2.1"]}}
    tab = table({"preferred": ["capacity"], "alternate": ["capacity"]}, zones=zones, regions={})
    health = {"cp": ZoneState(up=True, sessions=11), "yq": DOWN}
    d = run(tab, health=health)
    assert [s.stage for s in d.steps] == [
        "health",
        "preferred:capacity",
        "alternate:capacity",
        "last-resort",
        "answer",
    ]
    assert (d.zones, d.fallback) == (("cp",), False)


def test_available_sessions_ranks_by_free_sessions() -> None:
    """Issue 12 item 15: F5's available sessions, capacity - sessions, most first;
    capacity configured beats the LB's figure; unknown capacity last; ties stable."""
    zones = {
        "cp": {"vips": ["10.0.1.1"], "capacity": 100},  # configured: beats the LB's 1000
        "yq": {"vips": ["10.0.2.1"]},
        "bj": {"vips": ["10.0.3.1"]},
        "sh": {"vips": ["10.0.4.1"]},
        "gz": {"vips": ["10.0.5.1"]},
    }
    record = {"preferred": ["available_sessions"], "answers": 5}
    tab = table(record, zones=zones, regions={})
    health = {
        "cp": ZoneState(up=True, sessions=70, capacity=1000),  # 30 free
        "yq": ZoneState(up=True, sessions=10, capacity=60),  # 50 free
        "bj": ZoneState(up=True, sessions=5),  # unknown
        "sh": ZoneState(up=True, sessions=0, capacity=30),  # 30 free: after cp (tie)
        "gz": ZoneState(up=True, sessions=90, capacity=80),  # over: -10
    }
    d = run(tab, health=health)
    assert d.steps[1].stage == "preferred:available_sessions"
    assert d.zones == ("yq", "cp", "sh", "gz", "bj")
    assert d.steps[1].why == (
        "free sessions yq 50 (60-10), cp 30 (100-70), sh 30 (30-0), gz -10 (80-90), "
        "bj capacity unknown: most first"
    )
    # A zone whose health state is missing is down: never ranked.
    d = run(tab, health={**health, "yq": DOWN})
    assert d.zones[0] == "cp"


def test_available_sessions_follows_the_sessions_the_lbs_report() -> None:
    """The answer moves as the sessions move (a plan is per zone state, so the DNS
    server's planned path follows as `decide` does)."""
    zones = {"cp": {"vips": ["10.0.1.1"]}, "yq": {"vips": ["10.0.2.1"]}}
    tab = table({"preferred": ["available_sessions"]}, zones=zones, regions={})
    for cp, yq, first in ((10, 50, "cp"), (90, 50, "yq"), (50, 50, "cp")):
        health = {
            "cp": ZoneState(up=True, sessions=cp, capacity=100),
            "yq": ZoneState(up=True, sessions=yq, capacity=100),
        }
        assert run(tab, health=health).zones == (first,)
        p = plan("api.example.test", "A", None, tab, health)
        assert p is not None
        assert p.fixed is not None  # deterministic: the whole answer is planned
        assert p.fixed.zones == (first,)


free_states = st.builds(
    ZoneState,
    up=st.booleans(),
    sessions=st.integers(0, 200),
    capacity=st.none() | st.integers(1, 150),
)


@settings(max_examples=300)
@given(
    states=st.lists(free_states, min_size=1, max_size=6),
    configured=st.lists(st.none() | st.integers(1, 150), min_size=6, max_size=6),
)
def test_available_sessions_properties(
    states: list[ZoneState], configured: list[int | None]
) -> None:
    """The first zone answered has the most free sessions of the healthy zones with a
    known capacity; the order is by free sessions, ties in candidate order, unknown
    capacity last; only healthy zones are answered."""
    names = [f"z{i}" for i in range(len(states))]
    zones: dict[str, Any] = {}
    for i, name in enumerate(names):
        zones[name] = {"vips": [f"10.0.{i}.1"]}
        if configured[i] is not None:
            zones[name]["capacity"] = configured[i]
    record = {"preferred": ["available_sessions"], "answers": 6}
    tab = table(record, zones=zones, regions={})
    health = dict(zip(names, states, strict=True))
    d = run(tab, health=health)

    def free(z: str) -> int | None:
        cap = zones[z].get("capacity", health[z].capacity)
        return None if cap is None else cap - health[z].sessions

    healthy = [z for z in names if health[z].up]
    if not healthy:
        assert d.fallback
        return
    known = [z for z in healthy if free(z) is not None]
    expected = sorted(known, key=lambda z: -free(z)) + [z for z in healthy if free(z) is None]
    assert list(d.zones) == expected  # sorted() is stable: ties keep candidate order
    if known:
        assert free(d.zones[0]) == max(free(z) for z in known)
    p = plan("api.example.test", "A", None, tab, health)
    assert p is not None
    o = decide_planned(p, SelectionState(), random.Random(0))
    assert (o.addresses, o.zones, o.ttl) == (d.addresses, d.zones, d.ttl)


def test_zone_verdict_says_each_fact_once() -> None:
    """Issue 12 item 28: explain printed 'up: 3/3 backends healthy (up: 3/3 ...)'."""
    tab = table({"preferred": ["all"]}, zones={"cp": {"vips": ["10.0.1.1"]}}, regions={})
    cases = {
        ZoneState(up=True, healthy=3, total=3, reason="up: 3/3 backends healthy"): (
            "cp up: 3/3 backends healthy"
        ),
        ZoneState(up=True, healthy=1, total=3, reason="up: 1/3 backends healthy, below 50%"): (
            "cp up: 1/3 backends healthy, below 50%"
        ),
        ZoneState(
            up=False,
            healthy=3,
            total=3,
            reason="up: 3/3 backends healthy; admin: drain, control version 7",
        ): "cp down: 3/3 backends healthy (admin: drain, control version 7)",
        ZoneState(up=True, reason="up: no health check"): "cp up: no health check",
        ZoneState(up=False, reason="admin: disabled, control version 2"): (
            "cp down: admin: disabled, control version 2"
        ),
    }
    for state, verdict in cases.items():
        d = run(tab, health={"cp": state})
        assert d.steps[0].why == verdict


def test_active_servers_keeps_the_zones_with_most_healthy_backends() -> None:
    zones = {z: {"vips": [f"10.0.{i}.1"]} for i, z in enumerate(["cp", "yq", "bj"], 1)}
    tab = table({"preferred": ["active_servers"], "answers": 3}, zones=zones, regions={})
    health = {
        "cp": ZoneState(up=True, healthy=2, total=3),
        "yq": ZoneState(up=True, healthy=3, total=3),
        "bj": ZoneState(up=True, healthy=3, total=5),
    }
    d = run(tab, health=health)
    assert d.steps[1].kept == ("yq", "bj")
    assert d.steps[1].why == "healthy backends cp 2, yq 3, bj 3: keep the most (3)"


def test_rtt_orders_lowest_first_unknown_last() -> None:
    zones = {z: {"vips": [f"10.0.{i}.1"]} for i, z in enumerate(["cp", "yq", "bj"], 1)}
    tab = table({"preferred": ["rtt"], "answers": 3}, zones=zones, regions={})
    health = {
        "cp": ZoneState(up=True),
        "yq": ZoneState(up=True, rtt=0.004),
        "bj": ZoneState(up=True, rtt=0.0012),
    }
    d = run(tab, health=health)
    assert d.zones == ("bj", "yq", "cp")
    assert d.steps[1].why == "rtt bj 1.2ms, yq 4.0ms, cp unmeasured: lowest first"


def test_admin_orders_by_admin_order_unlisted_after() -> None:
    zones = {z: {"vips": [f"10.0.{i}.1"]} for i, z in enumerate(["cp", "yq", "bj"], 1)}
    record = {"preferred": ["admin"], "admin_order": ["bj"], "answers": 3}
    d = run(table(record, zones=zones, regions={}), health={"cp": UP, "yq": UP, "bj": UP})
    assert d.zones == ("bj", "cp", "yq")


def test_least_selected_answers_the_zone_chosen_least() -> None:
    zones = {z: {"vips": [f"10.0.{i}.1"]} for i, z in enumerate(["cp", "yq", "bj"], 1)}
    tab = table({"preferred": ["least_selected"]}, zones=zones, regions={})
    state = SelectionState()
    health = {"cp": UP, "yq": UP, "bj": UP}
    seq = [run(tab, health=health, state=state).zones[0] for _ in range(6)]
    assert seq == ["cp", "yq", "bj", "cp", "yq", "bj"]
    # A zone that comes back is counted with its own set of zones: it does not get
    # every answer until it catches up.
    health["bj"] = DOWN
    seq = [run(tab, health=health, state=state).zones[0] for _ in range(4)]
    assert seq == ["cp", "yq", "cp", "yq"]
    health["bj"] = UP
    seq = [run(tab, health=health, state=state).zones[0] for _ in range(3)]
    assert seq == ["cp", "yq", "bj"]
    assert run(tab, health=health, state=state).steps[1].why == (
        "answered so far cp 3, yq 3, bj 3: least first"
    )


def test_round_robin_rotates_per_name_and_zone_set() -> None:
    gslb = {"api": {"preferred": ["round_robin"]}, "web": {"preferred": ["round_robin"]}}
    tab = compile_gslb(topo(gslb, regions={}))
    state = SelectionState()
    api = [run(tab, state=state).zones[0] for _ in range(3)]
    web = [run(tab, name="web.example.test", state=state).zones[0] for _ in range(2)]
    assert api == ["cp", "yq", "cp"]
    assert web == ["cp", "yq"]
    assert run(tab, state=state).steps[1].why == "turn 4 over 2 zones: yq first"


def test_selection_state_is_bounded() -> None:
    tab = table({"preferred": ["round_robin"]}, regions={})
    state = SelectionState(max_keys=1)
    run(tab, state=state)
    run(tab, health={"cp": UP}, state=state)
    assert len(state.rotations) == 1


def test_all_keeps_every_zone_in_order() -> None:
    d = run(table({"preferred": ["all"], "answers": 2}))
    assert d.addresses == ("10.0.1.1", "10.0.2.1")
    assert d.steps[1].why == "keep every zone, in order"


# --- chain --------------------------------------------------------------------------


def test_preferred_methods_run_in_order_until_one_leaves_nothing() -> None:
    record = {"preferred": ["topology", "capacity", "all"], "alternate": ["admin"]}
    zones = {**ZONES, "cp": {**ZONES["cp"], "capacity": 10}}
    health = {"cp": ZoneState(up=True, sessions=10), "yq": UP}
    d = run(table(record, zones=zones), health=health)
    assert stages(d) == [
        ("health", ("cp", "yq")),
        ("preferred:topology", ("cp",)),
        ("preferred:capacity", ()),
        ("alternate:admin", ("cp", "yq")),
        ("answer", ("cp",)),
    ]


def test_no_alternate_goes_to_the_healthy_zones() -> None:
    record = {"preferred": ["topology"], "alternate": []}
    d = run(table(record), NOWHERE)
    assert stages(d)[1:] == [
        ("preferred:topology", ()),
        ("alternate", ()),
        ("last-resort", ("cp", "yq")),
        ("answer", ("cp",)),
    ]


@pytest.mark.parametrize(
    ("record", "qtype", "addresses", "zones"),
    [
        ({"fallback": "all"}, "A", ("10.0.1.1", "10.0.2.1"), ("cp", "yq")),
        ({"fallback": "all"}, "AAAA", ("2001:db8:1::1", "2001:db8:2::1"), ("cp", "yq")),
        (
            {"fallback": "addresses", "fallback_addresses": ["192.0.2.1", "2001:db8::9"]},
            "A",
            ("192.0.2.1",),
            (),
        ),
        (
            {"fallback": "addresses", "fallback_addresses": ["192.0.2.1", "2001:DB8::9"]},
            "AAAA",
            ("2001:db8::9",),
            (),
        ),
        ({"fallback": "none"}, "A", (), ()),
    ],
)
def test_fallback_when_every_zone_is_down(
    record: dict[str, Any], qtype: str, addresses: tuple[str, ...], zones: tuple[str, ...]
) -> None:
    d = run(table({**record, "ttl": "60s", "changing_ttl": "7s"}), health={}, qtype=qtype)
    assert (d.addresses, d.zones, d.fallback, d.ttl) == (addresses, zones, True, 7)
    assert [s.stage for s in d.steps] == ["health", "fallback", "answer"]


# --- answer -------------------------------------------------------------------------


def test_answers_takes_addresses_across_the_ordered_zones() -> None:
    zones = {
        "cp": {"vips": ["10.0.1.1", "10.0.1.2"]},
        "yq": {"vips": ["10.0.2.1", "10.0.1.1"]},  # a VIP shared with cp is answered once
    }
    base = {"preferred": ["admin"], "admin_order": ["cp", "yq"]}
    for answers, want, want_zones in [
        (1, ("10.0.1.1",), ("cp",)),
        (2, ("10.0.1.1", "10.0.1.2"), ("cp",)),
        (3, ("10.0.1.1", "10.0.1.2", "10.0.2.1"), ("cp", "yq")),
        (8, ("10.0.1.1", "10.0.1.2", "10.0.2.1"), ("cp", "yq")),
    ]:
        d = run(table({**base, "answers": answers}, zones=zones, regions={}))
        assert (d.addresses, d.zones) == (want, want_zones)


def test_ttl_shrinks_while_any_candidate_is_changing() -> None:
    tab = table({"ttl": "30s", "changing_ttl": "5s"})
    assert run(tab).ttl == 30
    # yq is not answered (down) but its state is moving: come back soon.
    d = run(tab, health={"cp": UP, "yq": ZoneState(up=False, changing=True)})
    assert d.ttl == 5
    assert d.steps[-1].why == "10.0.1.1; ttl 5s (changing_ttl: yq changing)"
    # changing_ttl never lengthens the TTL.
    assert run(table({"ttl": "3s", "changing_ttl": "5s"}), health={"cp": UP, "yq": DOWN}).ttl == 3


@pytest.mark.parametrize(
    ("client", "scope"),
    [
        (ClientInfo("8.8.8.8"), None),
        (ClientInfo("8.8.8.8", net("1.2.3.0/24")), 20),
        (ClientInfo("8.8.8.8", net("2001:db8:aaaa::/48")), 40),
        (ClientInfo("2001:db8::1", net("5.6.0.0/16")), 20),  # by the subnet's family
    ],
)
def test_ecs_scope_by_subnet_family(client: ClientInfo, scope: int | None) -> None:
    tab = table({"ecs_scope": 20, "ecs_scope_v6": 40})
    assert run(tab, client).scope_prefix == scope
    assert run(tab, client, qtype="AAAA").scope_prefix == scope


def test_cname_answers_the_next_level_name() -> None:
    gslb = {"api": {"cname": "api.gslb.other.test."}, "www": {"cname": "api", "ttl": "1m"}}
    tab = compile_gslb(topo(gslb))
    d = run(tab, ClientInfo("8.8.8.8", net("1.2.3.0/24")), qtype="TXT")
    assert (d.cname, d.addresses, d.ttl, d.scope_prefix) == ("api.gslb.other.test", (), 30, 0)
    d = run(tab, name="www.example.test")
    assert (d.cname, d.ttl, d.scope_prefix) == ("api.example.test", 60, None)
    assert stages(d) == [("cname", ())]


def test_explain_renders_every_step() -> None:
    tab = table({"ecs_scope": 24})
    client = ClientInfo("8.8.8.8", net("1.2.3.0/24"), device_id="dev-1")
    d = run(tab, client, {"cp": UP, "yq": ZoneState(up=False, healthy=0, total=3)})
    assert explain(d) == (
        "api.example.test A for 8.8.8.8 (ECS 1.2.3.0/24, device dev-1)\n"
        "  1. health              -> cp\n"
        "     cp up: 3/3 backends healthy; yq down: 0/3 backends healthy\n"
        "  2. preferred:topology  -> cp\n"
        "     client 1.2.3.0/24 -> region north (prefix 1.2.0.0/16) -> zones cp\n"
        "  3. preferred:weight    -> cp\n"
        "     one zone: cp (weight 100)\n"
        "  4. answer              -> cp\n"
        "     10.0.1.1; ttl 30s; ECS scope /24\n"
        "answer: A 10.0.1.1 (cp), ttl 30s, ECS scope /24"
    )


def test_explain_fallback_and_cname() -> None:
    d = run(table({"fallback": "none"}), health={})
    assert explain(d).splitlines()[-1] == (
        "answer: no address (NODATA), ttl 5s, FALLBACK: no candidate zone is up"
    )
    d = run(compile_gslb(topo({"api": {"cname": "next.other.test."}})))
    assert explain(d).splitlines()[-1] == "answer: CNAME next.other.test, ttl 30s"


# --- properties ---------------------------------------------------------------------

ZONE_NAMES = ["z0", "z1", "z2", "z3"]


@st.composite
def scenarios(draw: st.DrawFn, include: str | None = None) -> tuple[Topology, dict[str, ZoneState]]:
    """A random topology and zone states; `include`: a method always in `preferred`."""
    n = draw(st.integers(1, 4))
    zones: dict[str, Any] = {}
    for i, name in enumerate(ZONE_NAMES[:n]):
        vips = []
        if draw(st.booleans()):
            vips.append(f"10.0.{i}.1")
        if draw(st.booleans()):
            vips.append(f"2001:db8:{i}::1")
        zones[name] = {
            "vips": vips,
            "weight": draw(st.integers(0, 5)),
            "region": draw(st.sampled_from(["north", "west"])),
        }
        if draw(st.booleans()):
            zones[name]["capacity"] = draw(st.integers(1, 100))
    methods = st.lists(st.sampled_from(METHODS), max_size=4)
    with_vips = [z for z, v in zones.items() if v["vips"]]
    record: dict[str, Any] = {
        "preferred": draw(methods.filter(bool)),
        "alternate": draw(methods),
        "fallback": draw(st.sampled_from(["all", "none", "addresses"])),
        "fallback_addresses": ["192.0.2.1", "2001:db8:ffff::1"],
        "answers": draw(st.integers(1, 4)),
        "admin_order": draw(st.permutations(ZONE_NAMES[:n])),
        "capacity_threshold": draw(st.floats(0, 1)),
        "ip_weights": {f"10.0.{i}.1": draw(st.integers(0, 3)) for i in range(n)},
    }
    if include is not None:
        at = draw(st.integers(0, len(record["preferred"])))
        record["preferred"].insert(at, include)
    if with_vips and draw(st.booleans()):
        record["zones"] = draw(st.lists(st.sampled_from(with_vips), min_size=1, unique=True))
    regions = {
        "north": {"prefixes": ["1.0.0.0/8", "2001:db8::/32"]},
        "west": {"prefixes": ["1.2.0.0/16"], "countries": ["US"]},
    }
    t = topo({"api": record}, zones=zones, regions=regions)
    health = {}
    for name in zones:
        if draw(st.booleans()):
            health[name] = ZoneState(
                up=draw(st.booleans()),
                healthy=draw(st.integers(0, 3)),
                total=3,
                sessions=draw(st.integers(0, 120)),
                capacity=draw(st.none() | st.integers(1, 100)),
                rtt=draw(st.none() | st.floats(0, 1)),
                changing=draw(st.booleans()),
            )
    return t, health


v4_nets = st.builds(
    lambda a, p: ipaddress.IPv4Network((a, p), strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
)
v6_nets = st.builds(
    lambda a, p: ipaddress.IPv6Network((a, p), strict=False),
    st.integers(0, 2**128 - 1),
    st.integers(0, 128),
)
clients = st.builds(
    ClientInfo,
    ip=st.one_of(
        st.ip_addresses().map(str),
        st.sampled_from(["1.2.3.4", "1.9.9.9", "::ffff:1.2.3.4", "2001:db8::5"]),
        st.text(max_size=8),
    ),
    subnet=st.none() | v4_nets | v6_nets,
    device_id=st.none() | st.text(max_size=8),
)


def _addresses_of(t: Topology, zones: list[str], version: int) -> set[str]:
    out = set()
    for z in zones:
        for v in t.zones[z].vips:
            ip = ipaddress.ip_address(v)
            if ip.version == version:
                out.add(str(ip))
    return out


@settings(max_examples=300)
@given(
    scenario=scenarios(), client=clients, qtype=st.sampled_from(["A", "AAAA"]), seed=st.integers()
)
def test_chain_invariants(
    scenario: tuple[Topology, dict[str, ZoneState]], client: ClientInfo, qtype: str, seed: int
) -> None:
    t, health = scenario
    country = {"9.9.9.9": "US"}
    tab = compile_gslb(t, country_of=country.get)
    state = SelectionState()
    d = decide("api.example.test", qtype, client, tab, health, state, random.Random(seed))
    assert d is not None
    version = 4 if qtype == "A" else 6
    entry = tab.names["api.example.test"]
    candidates = list(entry.candidates)
    healthy = [z for z in candidates if z in health and health[z].up]
    healthy_with_family = [z for z in healthy if _addresses_of(t, [z], version)]
    # Never an address that is neither a candidate's VIP nor a fallback address.
    allowed = _addresses_of(t, candidates, version) | {"192.0.2.1", "2001:db8:ffff::1"}
    assert set(d.addresses) <= allowed
    # Never more than `answers` addresses, except the 'all' fallback.
    if not d.fallback:
        assert len(d.addresses) <= entry.answers
        assert len(set(d.addresses)) == len(d.addresses)
    if healthy_with_family:
        # An unhealthy zone is never answered while a healthy one of the family exists.
        assert not d.fallback
        assert d.addresses
        assert set(d.zones) <= set(healthy_with_family)
        assert set(d.addresses) <= _addresses_of(t, healthy_with_family, version)
    elif _addresses_of(t, candidates, version):
        assert d.fallback
    assert d.steps[-1].stage == "answer"
    assert explain(d)


def _copy(state: SelectionState) -> SelectionState:
    return SelectionState(
        rotations=dict(state.rotations),
        selected={k: dict(v) for k, v in state.selected.items()},
    )


@settings(max_examples=300)
@given(
    scenario=scenarios(),
    clients_=st.lists(clients, min_size=1, max_size=6),
    qtype=st.sampled_from(["A", "AAAA", "TXT"]),
    seed=st.integers(),
)
def test_planned_decisions_are_the_decisions(
    scenario: tuple[Topology, dict[str, ZoneState]],
    clients_: list[ClientInfo],
    qtype: str,
    seed: int,
) -> None:
    """decide_planned(plan(...)) answers what decide answers, draw for draw, and leaves
    the same round-robin / least-selected counters, query after query (the plans are
    reused across clients of one region, as the DNS server does)."""
    _check_planned(scenario, clients_, qtype, seed)


@settings(max_examples=200)
@given(
    scenario=scenarios(include="available_sessions"),
    clients_=st.lists(clients, min_size=1, max_size=4),
    qtype=st.sampled_from(["A", "AAAA"]),
    seed=st.integers(),
)
def test_planned_decisions_with_available_sessions(
    scenario: tuple[Topology, dict[str, ZoneState]],
    clients_: list[ClientInfo],
    qtype: str,
    seed: int,
) -> None:
    """The same, with `available_sessions` always somewhere in `preferred` (issue 12
    item 15: the new method runs in the planned fast path as in `decide`)."""
    _check_planned(scenario, clients_, qtype, seed)


def _check_planned(
    scenario: tuple[Topology, dict[str, ZoneState]],
    clients_: list[ClientInfo],
    qtype: str,
    seed: int,
) -> None:
    t, health = scenario
    country = {"9.9.9.9": "US"}
    tab = compile_gslb(t, country_of=country.get)
    entry = tab.names["api.example.test"]
    slow_state, fast_state = SelectionState(), SelectionState()
    slow_rng, fast_rng = random.Random(seed), random.Random(seed)
    plans: dict[str | None, Any] = {}
    for client in clients_ * 3:
        d = decide("api.example.test", qtype, client, tab, health, slow_state, slow_rng)
        assert d is not None
        region = None
        if needs_region(entry):
            net_ = client.subnet
            if net_ is None:
                try:
                    net_ = ipaddress.ip_network(client.ip)
                except ValueError:
                    net_ = None
            if net_ is not None:
                value = int(net_.network_address)
                region = tab.regions.region_of(net_.version, value, net_.prefixlen)
                assert region == tab.regions.lookup(net_)
        p = plans.get(region)
        if p is None:
            p = plans[region] = plan("api.example.test", qtype, region, tab, health)
        assert p is not None
        o = decide_planned(p, fast_state, fast_rng)
        assert (o.addresses, o.zones, o.ttl, o.fallback) == (
            d.addresses,
            d.zones,
            d.ttl,
            d.fallback,
        )
        assert fast_state == slow_state
    assert fast_rng.random() == slow_rng.random()


def test_planned_cname_and_unknown_names() -> None:
    tab = table({"cname": "api.gslb.other.test."})
    p = plan("api.example.test", "A", None, tab, {})
    assert p is not None
    assert p.fixed is not None
    assert p.fixed.cname == "api.gslb.other.test"
    assert plan("nope.example.test", "A", None, tab, {}) is None


def test_a_plan_without_draws_is_fixed() -> None:
    tab = table({"preferred": ["topology", "admin"], "admin_order": ["yq", "cp"]})
    health = {"cp": UP, "yq": UP}
    p = plan("api.example.test", "A", "north", tab, health)
    assert p is not None
    assert p.fixed is not None
    assert p.fixed.addresses == ("10.0.1.1",)
    p = plan("api.example.test", "A", None, tab, health)  # no region: topology fails
    assert p is not None
    assert p.preferred is None
    # weight draws: only the deterministic head is precomputed
    tab = table({"preferred": ["topology", "weight"]})
    p = plan("api.example.test", "A", None, tab, health)
    assert p is not None
    assert p.fixed is None
    assert p.preferred is None


@given(client=clients, qtype=st.sampled_from(["A", "AAAA", "TXT", "ANY", ""]))
def test_decide_never_raises_for_any_client(client: ClientInfo, qtype: str) -> None:
    tab = compile_gslb(topo(), country_of={"1.9.9.9": "US"}.get)
    for name in ("api.example.test", "API.EXAMPLE.TEST.", "nope.example.test", ""):
        decide(name, qtype, client, tab, {"cp": UP}, SelectionState(), random.Random(0))


@pytest.mark.parametrize("weights", [(1, 1), (1, 3), (5, 2, 3), (100, 1), (0, 7, 3)])
def test_weight_shares_follow_zone_weights(weights: tuple[int, ...]) -> None:
    zones = {f"z{i}": {"vips": [f"10.0.{i}.1"], "weight": w} for i, w in enumerate(weights)}
    tab = table({"preferred": ["weight"]}, zones=zones, regions={})
    health = {z: UP for z in zones}
    rng = random.Random(42)
    state = SelectionState()
    n = 20000
    got = Counter(
        decide("api.example.test", "A", NORTH, tab, health, state, rng).zones[0]  # type: ignore[union-attr]
        for _ in range(n)
    )
    total = sum(weights)
    for i, w in enumerate(weights):
        assert got[f"z{i}"] / n == pytest.approx(w / total, abs=0.015)


@given(n=st.integers(1, 4), rounds=st.integers(1, 5))
def test_round_robin_rotates_evenly(n: int, rounds: int) -> None:
    zones = {f"z{i}": {"vips": [f"10.0.{i}.1"]} for i in range(n)}
    tab = table({"preferred": ["round_robin"]}, zones=zones, regions={})
    health = {z: UP for z in zones}
    state = SelectionState()
    seq = [run(tab, health=health, state=state).zones[0] for _ in range(n * rounds)]
    assert Counter(seq) == {z: rounds for z in zones}
    assert seq[:n] == list(zones)


def test_planned_topology_after_weight_uses_the_region_zones() -> None:
    """Found by the property above: a `topology` left to run after `weight` (which
    draws) must see the table's regions; without them it failed and the plan answered
    the last resort (the first healthy zone) where `decide` answered the weighted one."""
    tab = table(
        {"preferred": ["weight", "topology"], "alternate": []},
        zones={
            "z0": {"region": "north", "vips": ["10.0.0.1"], "weight": 0},
            "z3": {"region": "north", "vips": ["10.0.3.1"], "weight": 1},
        },
    )
    health = {"z0": UP, "z3": UP}
    d = decide("api.example.test", "A", NORTH, tab, health, SelectionState(), random.Random(0))
    assert d is not None
    assert d.zones == ("z3",)
    p = plan("api.example.test", "A", "north", tab, health)
    assert p is not None
    o = decide_planned(p, SelectionState(), random.Random(0))
    assert (o.addresses, o.zones) == (("10.0.3.1",), ("z3",))
