"""The pure control service: apply, dry_run, diff, shares (no event loop)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.control.topo import API, IMG, TOPO, TOPO_DATA, initial, split
from zonegate.control import service
from zonegate.control.model import (
    AuditEntry,
    Change,
    ChangeRejected,
    Cutover,
    DesiredState,
    Restore,
    Rollback,
    SetBackendAdmin,
    SetSplit,
    SetZoneAdmin,
)
from zonegate.errors import ProtocolError
from zonegate.topology.schema import SplitMap, Topology
from zonegate.topology.validate import split_ranges_problems

NOW = 1_700_000_000.0


def run(state: DesiredState, change: Change, **kw: Any) -> tuple[DesiredState, AuditEntry]:
    kw.setdefault("topo", TOPO)
    return service.apply(state, change, who="alice", why="test", now=NOW, **kw)


def rejected(state: DesiredState, change: Change, **kw: Any) -> ChangeRejected:
    with pytest.raises(ChangeRejected) as info:
        run(state, change, **kw)
    return info.value


def ranges(state: DesiredState, domain: str = API) -> dict[str, tuple[int, int]]:
    return {z: (s.lower, s.upper) for z, s in state.split[domain].zones.items()}


# --- the initial state --------------------------------------------------------------


def test_initial_state_takes_the_file() -> None:
    state = initial()
    assert state.version == 1
    assert state.split == TOPO.split
    assert state.zones == {"changping": "enabled", "yanqing": "enabled", "shanghai": "enabled"}
    assert state.backends == {
        "web-cp/cp-1": "enabled",
        "web-cp/cp-2": "enabled",
        "web-cp/127.0.0.1:8103": "enabled",
        "web-yq/yq-1": "drain",
    }
    assert state.saved_split == {}


def test_initial_audit_entry() -> None:
    state, audit = service.initial(TOPO, who="zonegate control", why="start", now=NOW)
    assert state == initial()
    assert (audit.version, audit.previous_version, audit.change, audit.at) == (1, 0, None, NOW)
    assert audit.diff == ["initial state from the topology: 2 split domains, 3 zones, 4 backends"]


# --- each change kind ---------------------------------------------------------------


def test_set_split() -> None:
    new, audit = run(
        initial(), SetSplit(domain=API, split=split(changping=(0, 30), yanqing=(30, 100)))
    )
    assert new.version == 2
    assert ranges(new) == {"changping": (0, 30), "yanqing": (30, 100)}
    assert new.split[IMG] == TOPO.split[IMG]
    assert audit == AuditEntry(
        version=2,
        at=NOW,
        who="alice",
        why="test",
        change=SetSplit(domain=API, split=split(changping=(0, 30), yanqing=(30, 100))),
        diff=[
            "api.example.test: changping [0,50) -> [0,30)",
            "api.example.test: yanqing [50,100) -> [30,100)",
        ],
        previous_version=1,
    )


def test_set_split_may_add_a_topology_zone_and_change_the_modulus() -> None:
    change = SetSplit(
        domain=API, split=split(1000, changping=(0, 400), yanqing=(400, 900), shanghai=(900, 1000))
    )
    new, audit = run(initial(), change)
    assert new.split[API].sharding == 1000
    assert audit.diff == [
        "api.example.test: sharding 100 -> 1000",
        "api.example.test: changping [0,50) -> [0,400)",
        "api.example.test: shanghai absent -> [900,1000)",
        "api.example.test: yanqing [50,100) -> [400,900)",
    ]


def test_set_split_zone_domain_change_is_a_diff_line() -> None:
    changed = SplitMap(
        sharding=100,
        zones={
            "changping": {"lower": 0, "upper": 50, "domain": "api-cp2.example.test"},
            "yanqing": {"lower": 50, "upper": 100, "domain": "api-yq.example.test"},
        },
    )
    _, audit = run(initial(), SetSplit(domain=API, split=changed))
    assert audit.diff == [
        "api.example.test: changping domain api-cp.example.test -> api-cp2.example.test"
    ]


def test_zone_admin() -> None:
    new, audit = run(initial(), SetZoneAdmin(zone="yanqing", state="drain"))
    assert new.zones["yanqing"] == "drain"
    assert audit.diff == ["zone yanqing: enabled -> drain"]


def test_backend_admin_by_name_and_by_address() -> None:
    new, audit = run(initial(), SetBackendAdmin(pool="web-cp", backend="cp-1", state="disabled"))
    assert new.backends["web-cp/cp-1"] == "disabled"
    assert audit.diff == ["backend web-cp/cp-1: enabled -> disabled"]
    new, audit = run(new, SetBackendAdmin(pool="web-cp", backend="127.0.0.1:8103", state="drain"))
    assert new.version == 3
    assert audit.diff == ["backend web-cp/127.0.0.1:8103: enabled -> drain"]


def test_backend_added_to_the_file_after_the_state_starts_at_its_file_state() -> None:
    data = {**TOPO_DATA, "pools": {**TOPO_DATA["pools"]}}
    data["pools"]["web-sh"] = {
        "zone": "shanghai",
        "backends": [{"address": "127.0.0.1:8301", "name": "sh-1", "state": "disabled"}],
    }
    topo = Topology.model_validate(data)
    state = initial()  # made before web-sh existed
    err = rejected(
        state, SetBackendAdmin(pool="web-sh", backend="sh-1", state="disabled"), topo=topo
    )
    assert (err.status, str(err)) == (409, "no change: backend web-sh/sh-1 is already disabled")
    _, audit = run(
        state, SetBackendAdmin(pool="web-sh", backend="sh-1", state="enabled"), topo=topo
    )
    assert audit.diff == ["backend web-sh/sh-1: absent -> enabled"]


# --- cut-over and restore -----------------------------------------------------------


def test_cutover_and_restore_round_trip() -> None:
    start = initial()
    cut, audit = run(start, Cutover(domain=API, to="yanqing"))
    assert ranges(cut) == {"changping": (0, 0), "yanqing": (0, 100)}
    assert cut.split[API].zones["changping"].domain == "api-cp.example.test"
    assert cut.saved_split == {API: start.split[API]}
    assert audit.diff == [
        "api.example.test: changping [0,50) -> [0,0)",
        "api.example.test: yanqing [50,100) -> [0,100)",
        "api.example.test: split saved for restore",
    ]
    back, audit = run(cut, Restore(domain=API))
    assert back.version == 3
    assert back.same_content(start)
    assert audit.diff == [
        "api.example.test: changping [0,0) -> [0,50)",
        "api.example.test: yanqing [0,100) -> [50,100)",
        "api.example.test: saved split dropped",
    ]


def test_second_cutover_keeps_the_first_saved_split() -> None:
    start, _ = run(
        initial(), SetSplit(domain=API, split=split(changping=(0, 70), yanqing=(70, 100)))
    )
    cut, _ = run(start, Cutover(domain=API, to="yanqing"))
    cut, _ = run(cut, Cutover(domain=API, to="changping"))
    assert ranges(cut) == {"changping": (0, 100), "yanqing": (0, 0)}
    back, _ = run(cut, Restore(domain=API))
    assert ranges(back) == {"changping": (0, 70), "yanqing": (70, 100)}


def test_restore_without_cutover_goes_back_to_the_file() -> None:
    state, _ = run(
        initial(), SetSplit(domain=API, split=split(changping=(0, 10), yanqing=(10, 100)))
    )
    back, _ = run(state, Restore(domain=API))
    assert back.split[API] == TOPO.split[API]


def test_set_split_ends_a_cutover() -> None:
    cut, _ = run(initial(), Cutover(domain=API, to="yanqing"))
    state, audit = run(cut, SetSplit(domain=API, split=split(changping=(0, 20), yanqing=(20, 100))))
    assert state.saved_split == {}
    assert "api.example.test: saved split dropped" in audit.diff
    back, _ = run(state, Restore(domain=API))
    assert back.split[API] == TOPO.split[API]


def test_cutover_to_a_zone_outside_the_split_is_422() -> None:
    err = rejected(initial(), Cutover(domain=API, to="shanghai"))
    assert err.status == 422
    assert str(err) == (
        "zone shanghai has no share in the split of api.example.test (its zone domain is "
        "unknown; zones: changping, yanqing): add it with a split first"
    )


@pytest.mark.parametrize("admin", ["drain", "disabled"])
def test_cutover_to_a_zone_not_enabled_is_409(admin: str) -> None:
    state, _ = run(initial(), SetZoneAdmin(zone="yanqing", state=admin))
    err = rejected(state, Cutover(domain=API, to="yanqing"))
    assert (err.status, str(err)) == (
        409,
        f"zone yanqing is {admin}: enable it before cutting over to it",
    )


def test_cutover_to_the_zone_that_has_everything_is_no_change() -> None:
    cut, _ = run(initial(), Cutover(domain=API, to="yanqing"))
    err = rejected(cut, Cutover(domain=API, to="yanqing"))
    assert (err.status, str(err)) == (409, "no change: api.example.test is already all on yanqing")


def test_restore_of_the_file_split_is_no_change() -> None:
    err = rejected(initial(), Restore(domain=API))
    assert err.status == 409
    assert str(err) == "no change: restore(domain='api.example.test') leaves the state as it is"


def test_restore_of_a_domain_not_in_the_file_is_409() -> None:
    topo = Topology.model_validate({**TOPO_DATA, "split": {IMG: TOPO_DATA["split"][IMG]}})
    err = rejected(initial(), Restore(domain=API), topo=topo)
    assert (err.status, str(err)) == (
        409,
        "nothing to restore: api.example.test is not cut over and has no split in the topology",
    )


# --- rejections: 404 ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            SetSplit(domain="www.example.test", split=split(changping=(0, 100))),
            "unknown split domain 'www.example.test' (domains: api.example.test, img.example.test)",
        ),
        (
            Cutover(domain="www.example.test", to="yanqing"),
            "unknown split domain 'www.example.test' (domains: api.example.test, img.example.test)",
        ),
        (
            Restore(domain="www.example.test"),
            "unknown split domain 'www.example.test' (domains: api.example.test, img.example.test)",
        ),
        (
            Cutover(domain=API, to="mars"),
            "unknown zone 'mars' (zones: changping, shanghai, yanqing)",
        ),
        (
            SetZoneAdmin(zone="mars", state="drain"),
            "unknown zone 'mars' (zones: changping, shanghai, yanqing)",
        ),
        (
            SetBackendAdmin(pool="web-xx", backend="cp-1", state="drain"),
            "unknown pool 'web-xx' (pools: web-cp, web-yq)",
        ),
        (
            SetBackendAdmin(pool="web-yq", backend="cp-1", state="drain"),
            "unknown backend 'cp-1' in pool 'web-yq' (backends: yq-1)",
        ),
        (Rollback(to_version=7), "unknown version 7 (latest is 1)"),
    ],
)
def test_unknown_names_are_404(change: Change, message: str) -> None:
    err = rejected(initial(), change, history_lookup=lambda v: None)
    assert (err.status, err.hint, str(err)) == (404, 404, message)
    assert isinstance(err, ProtocolError)


# --- rejections: 422 ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("new", "message"),
    [
        (
            split(changping=(0, 40), yanqing=(50, 100)),
            "split of api.example.test: gap [40, 50) not covered",
        ),
        (
            split(changping=(0, 60), yanqing=(50, 100)),
            "split of api.example.test: zones changping and yanqing overlap on [50, 60)",
        ),
        (
            split(changping=(0, 50), yanqing=(50, 120)),
            "split of api.example.test: zone 'yanqing': upper 120 is above sharding 100",
        ),
        (
            split(changping=(0, 50), mars=(50, 100)),
            "split of api.example.test: unknown zone 'mars' (zones: changping, shanghai, yanqing)",
        ),
        (
            SplitMap(
                sharding=10,
                zones={
                    "changping": {"lower": 0, "upper": 10, "domain": "not a name"},
                    "yanqing": {"lower": 5, "upper": 5, "domain": "api-yq.example.test"},
                },
            ),
            "split of api.example.test: zone 'changping': invalid domain 'not a name': "
            "expected a DNS name",
        ),
        (
            split(changping=(0, 60), mars=(40, 90)),
            "split of api.example.test: unknown zone 'mars' (zones: changping, shanghai, "
            "yanqing); zones changping and mars overlap on [40, 60); gap [90, 100) not covered",
        ),
    ],
)
def test_bad_splits_are_422_naming_the_problem(new: SplitMap, message: str) -> None:
    err = rejected(initial(), SetSplit(domain=API, split=new))
    assert (err.status, str(err)) == (422, message)


def test_who_is_required() -> None:
    with pytest.raises(ChangeRejected, match="who is required") as info:
        service.apply(
            initial(),
            SetZoneAdmin(zone="yanqing", state="drain"),
            topo=TOPO,
            who="",
            why="",
            now=NOW,
        )
    assert info.value.status == 422


# --- rejections: 409 no change ------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            SetSplit(domain=API, split=TOPO.split[API]),
            "no change: api.example.test already has this split",
        ),
        (
            SetZoneAdmin(zone="yanqing", state="enabled"),
            "no change: zone yanqing is already enabled",
        ),
        (
            SetBackendAdmin(pool="web-yq", backend="yq-1", state="drain"),
            "no change: backend web-yq/yq-1 is already drain",
        ),
        (Rollback(to_version=1), "no change: version 1 is the current version"),
    ],
)
def test_no_change_is_409(change: Change, message: str) -> None:
    err = rejected(initial(), change)
    assert (err.status, str(err)) == (409, message)


# --- rollback -----------------------------------------------------------------------


def history_of(*states: DesiredState) -> service.HistoryLookup:
    by_version = {s.version: s for s in states}
    return by_version.get


def test_rollback_makes_a_new_version_with_the_old_content() -> None:
    v1 = initial()
    v2, _ = run(v1, SetZoneAdmin(zone="yanqing", state="drain"))
    v3, _ = run(v2, Cutover(domain=API, to="changping"))
    v4, audit = run(v3, Rollback(to_version=1), history_lookup=history_of(v1, v2, v3))
    assert v4.version == 4
    assert v4.same_content(v1)
    assert v4 == v1.model_copy(update={"version": 4})
    assert audit.previous_version == 3
    assert audit.change == Rollback(to_version=1)
    assert audit.diff == [
        "api.example.test: changping [0,100) -> [0,50)",
        "api.example.test: yanqing [0,0) -> [50,100)",
        "api.example.test: saved split dropped",
        "zone yanqing: drain -> enabled",
    ]


def test_rollback_to_same_content_is_no_change() -> None:
    v1 = initial()
    v2, _ = run(v1, SetZoneAdmin(zone="yanqing", state="drain"))
    v3, _ = run(v2, SetZoneAdmin(zone="yanqing", state="enabled"))
    err = rejected(v3, Rollback(to_version=1), history_lookup=history_of(v1, v2, v3))
    assert (err.status, str(err)) == (409, "no change: version 1 has the same content as version 3")


def test_rollback_to_a_version_missing_from_the_history_is_404() -> None:
    v2, _ = run(initial(), SetZoneAdmin(zone="yanqing", state="drain"))
    err = rejected(v2, Rollback(to_version=1), history_lookup=lambda v: None)
    assert (err.status, str(err)) == (404, "unknown version 1: not in the history")


def test_rollback_needs_a_lookup_that_answers_the_right_version() -> None:
    v2, _ = run(initial(), SetZoneAdmin(zone="yanqing", state="drain"))
    with pytest.raises(ValueError, match="needs history_lookup"):
        run(v2, Rollback(to_version=1))
    with pytest.raises(ValueError, match=r"history_lookup\(1\) answered version 2"):
        run(v2, Rollback(to_version=1), history_lookup=lambda v: v2)


def test_rollback_to_content_the_topology_no_longer_accepts_is_422() -> None:
    v1 = initial()
    v2, _ = run(v1, SetZoneAdmin(zone="yanqing", state="drain"))
    smaller = Topology.model_validate(
        {
            "zones": {"changping": {}, "yanqing": {}},
            "pools": TOPO_DATA["pools"],
            "split": {API: TOPO_DATA["split"][API]},
        }
    )
    err = rejected(v2, Rollback(to_version=1), topo=smaller, history_lookup=history_of(v1, v2))
    assert err.status == 422
    assert str(err) == (
        "cannot roll back to version 1: split of img.example.test: unknown zone 'shanghai' "
        "(zones: changping, yanqing); zone admin: unknown zone 'shanghai' (zones: changping, "
        "yanqing)"
    )


def test_state_problems_of_a_consistent_state_is_empty() -> None:
    assert service.state_problems(initial(), TOPO) == []


# --- diff ---------------------------------------------------------------------------


def test_diff_of_equal_content_is_empty() -> None:
    assert service.diff(initial(), initial().model_copy(update={"version": 9})) == []


def test_diff_of_added_and_removed_domains() -> None:
    a = initial()
    b = a.model_copy(update={"split": {API: a.split[API]}})
    assert service.diff(a, b) == [
        "img.example.test: sharding 7: changping [0,3), yanqing [3,7), shanghai [7,7) -> absent"
    ]
    assert service.diff(b, a) == [
        "img.example.test: absent -> sharding 7: changping [0,3), yanqing [3,7), shanghai [7,7)"
    ]


# --- dry run and shares -------------------------------------------------------------


def test_dry_run_shares_from_widths() -> None:
    state = initial()
    before_change = state.model_copy()
    dry = service.dry_run(state, Cutover(domain=API, to="yanqing"), topo=TOPO)
    assert state == before_change
    assert dry.version == 1
    assert dry.before[API] == {"changping": 0.5, "yanqing": 0.5}
    assert dry.after[API] == {"changping": 0.0, "yanqing": 1.0}
    assert (
        dry.before[IMG]
        == dry.after[IMG]
        == pytest.approx({"changping": 3 / 7, "yanqing": 4 / 7, "shanghai": 0.0})
    )
    assert dry.diff == run(state, Cutover(domain=API, to="yanqing"))[1].diff


def test_dry_run_weights_buckets_by_the_measured_rates() -> None:
    # changping serves [0,50) at 300 req/s (6/bucket), yanqing [50,100) at 100 (2/bucket).
    change = SetSplit(domain=API, split=split(changping=(0, 25), yanqing=(25, 100)))
    dry = service.dry_run(initial(), change, topo=TOPO, rates={"changping": 300, "yanqing": 100})
    assert dry.before[API] == pytest.approx({"changping": 0.75, "yanqing": 0.25})
    # After: changping keeps [0,25) = 150 req/s; yanqing gets [25,50) = 150 + its 100.
    assert dry.after[API] == pytest.approx({"changping": 150 / 400, "yanqing": 250 / 400})


def test_dry_run_domain_specific_rates_win_and_missing_rates_take_the_mean() -> None:
    # IMG: changping [0,3), yanqing [3,7). Only changping measured for img: yanqing gets
    # changping's density (mean of the known ones).
    rates = {"changping": 30.0, "yanqing": 999.0, f"{IMG}/changping": 6.0, f"{IMG}/yanqing": 0.0}
    dry = service.dry_run(initial(), Cutover(domain=IMG, to="changping"), topo=TOPO, rates=rates)
    assert dry.before[IMG] == pytest.approx({"changping": 1.0, "yanqing": 0.0, "shanghai": 0.0})
    assert dry.before[API] == pytest.approx({"changping": 30 / 1029, "yanqing": 999 / 1029})
    dry = service.dry_run(
        initial(), Cutover(domain=IMG, to="changping"), topo=TOPO, rates={f"{IMG}/changping": 6.0}
    )
    assert dry.before[IMG] == pytest.approx({"changping": 3 / 7, "yanqing": 4 / 7, "shanghai": 0.0})
    assert dry.after[IMG] == pytest.approx({"changping": 1.0, "yanqing": 0.0, "shanghai": 0.0})


def test_shares_ignore_rates_when_the_modulus_changes_or_they_are_all_zero() -> None:
    current = split(changping=(0, 50), yanqing=(50, 100))
    target = split(10, changping=(0, 2), yanqing=(2, 10))
    assert service.shares(current, target, {"changping": 5, "yanqing": 1}) == {
        "changping": 0.2,
        "yanqing": 0.8,
    }
    assert service.shares(current, current, {"changping": 0, "yanqing": 0}) == {
        "changping": 0.5,
        "yanqing": 0.5,
    }


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_shares_refuse_bad_rates(bad: float) -> None:
    current = split(changping=(0, 50), yanqing=(50, 100))
    with pytest.raises(ValueError, match="rate of changping"):
        service.shares(current, current, {"changping": bad})


def test_dry_run_rejects_what_apply_rejects() -> None:
    with pytest.raises(ChangeRejected, match="no change"):
        service.dry_run(initial(), SetZoneAdmin(zone="yanqing", state="enabled"), topo=TOPO)


# --- property: any sequence of changes ----------------------------------------------

ZONES = [*TOPO.zones, "mars"]
ADMIN = st.sampled_from(["enabled", "drain", "disabled"])


@st.composite
def any_split(draw: st.DrawFn) -> SplitMap:
    """A split over 1-3 zones: usually a tiling, sometimes with a gap or overlap."""
    sharding = draw(st.sampled_from([1, 7, 100]))
    zones = draw(st.lists(st.sampled_from(ZONES), min_size=1, max_size=3, unique=True))
    cuts = sorted(
        draw(st.lists(st.integers(0, sharding), min_size=len(zones) - 1, max_size=len(zones) - 1))
    )
    bounds = [0, *cuts, sharding]
    out = {z: (bounds[i], bounds[i + 1]) for i, z in enumerate(zones)}
    if draw(st.integers(0, 4)) == 0:  # break it
        z = zones[0]
        out[z] = (out[z][0], draw(st.integers(0, sharding + 1)))
    return SplitMap(
        sharding=sharding,
        zones={
            z: {"lower": lo, "upper": hi, "domain": f"{z}.x.test"} for z, (lo, hi) in out.items()
        },
    )


DOMAINS = st.sampled_from([API, IMG, "www.example.test"])
CHANGES = st.one_of(
    st.builds(SetSplit, domain=DOMAINS, split=any_split()),
    st.builds(Cutover, domain=DOMAINS, to=st.sampled_from(ZONES)),
    st.builds(Restore, domain=DOMAINS),
    st.builds(SetZoneAdmin, zone=st.sampled_from(ZONES), state=ADMIN),
    st.builds(
        SetBackendAdmin,
        pool=st.sampled_from(["web-cp", "web-yq", "web-xx"]),
        backend=st.sampled_from(["cp-1", "127.0.0.1:8103", "yq-1", "zz"]),
        state=ADMIN,
    ),
    st.builds(Rollback, to_version=st.integers(1, 12)),
)


@settings(max_examples=150)
@given(st.lists(CHANGES, min_size=1, max_size=30))
def test_any_sequence_keeps_splits_tiling_and_versions_dense(changes: list[Change]) -> None:
    states = {1: initial()}
    state = states[1]
    statuses: set[int] = set()
    for change in changes:
        try:
            new, audit = run(state, change, history_lookup=states.get)
        except ChangeRejected as err:
            statuses.add(err.status)
            continue
        assert new.version == state.version + 1
        assert (audit.version, audit.previous_version) == (new.version, state.version)
        assert audit.diff == service.diff(state, new) != []
        assert service.state_problems(new, TOPO) == []
        for split_map in [*new.split.values(), *new.saved_split.values()]:
            zones = {z: (s.lower, s.upper) for z, s in split_map.zones.items()}
            assert split_ranges_problems(split_map.sharding, zones) == []
        if isinstance(change, Rollback):
            assert new.same_content(states[change.to_version])
        states[new.version] = state = new
    assert statuses <= {404, 409, 422}
