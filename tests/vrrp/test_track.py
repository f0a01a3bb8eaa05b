"""Tracked checks: rise/fall counting and the effective priority they leave."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zonegate.vrrp.track import CheckChanged, CheckSpec, CheckState, Tracker

UP, DOWN, UNKNOWN = CheckState.UP, CheckState.DOWN, CheckState.UNKNOWN


def tracker(*specs: CheckSpec, priority: int = 150) -> Tracker:
    return Tracker(priority, list(specs))


def test_no_checks_keeps_priority():
    assert tracker().priority == 150


def test_unknown_counts_as_up():
    t = tracker(CheckSpec("lb", 50, rise=2, fall=2))
    assert t.state(0) is UNKNOWN
    assert t.priority == 150


def test_first_result_decides():
    t = tracker(CheckSpec("lb", 50, rise=2, fall=2))
    assert t.record(0, False, "refused") == CheckChanged("lb", UNKNOWN, DOWN, "refused")
    assert t.priority == 100


def test_fall_then_rise():
    t = tracker(CheckSpec("lb", 50, rise=3, fall=2))
    t.record(0, True)
    assert t.record(0, False) is None
    assert t.priority == 150  # one failure does not flap the VIP
    assert t.record(0, False).new is DOWN
    assert t.priority == 100
    assert t.record(0, True) is None
    assert t.record(0, True) is None
    assert t.record(0, True).new is UP
    assert t.priority == 150


def test_agreeing_result_resets_the_run():
    t = tracker(CheckSpec("lb", 50, rise=1, fall=2))
    t.record(0, True)
    t.record(0, False)
    t.record(0, True)
    assert t.record(0, False) is None
    assert t.state(0) is UP


def test_weights_add_and_clamp():
    t = tracker(CheckSpec("a", 50), CheckSpec("b", 60), CheckSpec("c", 100), priority=150)
    t.record(0, False)
    t.record(1, False)
    assert t.priority == 40
    t.record(2, False)
    assert t.priority == 1  # never 0: that would mean "master stopping"


def test_owner_drops_below_255_when_a_check_fails():
    t = tracker(CheckSpec("a", 1), priority=255)
    t.record(0, False)
    assert t.priority == 254


def test_status():
    t = tracker(CheckSpec("link eth1", 50))
    t.record(0, False)
    assert t.status() == [{"name": "link eth1", "state": "down", "weight": 50}]


@pytest.mark.parametrize(
    "kw", [{"weight": -1}, {"weight": 255}, {"weight": 1, "rise": 0}, {"weight": 1, "fall": 0}]
)
def test_spec_validation(kw):
    with pytest.raises(ValueError):  # noqa: PT011 - message varies
        CheckSpec("x", **kw)


@given(st.lists(st.booleans(), max_size=50), st.integers(1, 5), st.integers(1, 5))
def test_state_changes_only_after_a_full_run(results, rise, fall):
    t = tracker(CheckSpec("x", 10, rise=rise, fall=fall))
    run_ok = run_bad = 0
    for ok in results:
        before = t.state(0)
        change = t.record(0, ok)
        run_ok, run_bad = (run_ok + 1, 0) if ok else (0, run_bad + 1)
        if change is not None and before is not UNKNOWN:
            assert (run_ok >= rise) if ok else (run_bad >= fall)
        assert 1 <= t.priority <= 150
