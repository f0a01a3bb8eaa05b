"""The per-zone breaker and the zone choice (pure; `now` passed in)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from zonegate.client._failover import (
    TRANSITIONS,
    Admission,
    Breaker,
    BreakerPolicy,
    BreakerState,
    Trigger,
    choose_zone,
)

C, OPEN, H = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
P = BreakerPolicy(consecutive_errors=3, cool_down=5.0, max_cool_down=20.0, probes=2)


def tripped(policy: BreakerPolicy = P, now: float = 0.0) -> Breaker:
    b = Breaker(policy)
    for _ in range(policy.consecutive_errors):
        b.failed(b.admit(now), now)
    assert b.state is OPEN
    return b


def test_transition_table_is_complete():
    assert TRANSITIONS == {
        (C, Trigger.CONSECUTIVE_ERRORS): OPEN,
        (C, Trigger.ERROR_RATE): OPEN,
        (OPEN, Trigger.COOL_DOWN_OVER): H,
        (H, Trigger.PROBE_FAILED): OPEN,
        (H, Trigger.PROBES_SUCCEEDED): C,
    }


def test_consecutive_errors_open_it_and_a_success_resets_the_count():
    b = Breaker(P)
    b.failed(b.admit(0), 0)
    b.failed(b.admit(0), 0)
    b.succeeded(b.admit(0), 0)
    b.failed(b.admit(0), 0)
    b.failed(b.admit(0), 0)
    assert b.state is C
    t = b.failed(b.admit(0), 1.0)
    assert (t.old, t.new, t.trigger, t.cool_down) == (C, OPEN, Trigger.CONSECUTIVE_ERRORS, 5.0)
    assert b.deadline == 6.0
    assert b.trips == 1
    assert b.admit(5.9) is Admission.REJECT


def test_error_rate_opens_it_without_consecutive_errors():
    pol = BreakerPolicy(consecutive_errors=100, error_rate=0.5, min_requests=10, window=10.0)
    b = Breaker(pol)
    t = None
    for i in range(20):
        ok = i % 2 == 0  # alternate: never two errors in a row
        a = b.admit(i * 0.1)
        t = b.succeeded(a, i * 0.1) if ok else b.failed(a, i * 0.1)
        if t is not None:
            break
    assert t is not None
    assert t.trigger is Trigger.ERROR_RATE
    assert i == 9  # the 10th outcome reaches min_requests at 50%


def test_error_rate_forgets_outside_the_window():
    pol = BreakerPolicy(consecutive_errors=100, error_rate=0.5, min_requests=7, window=10.0)
    b = Breaker(pol)
    for i in range(3):
        b.failed(b.admit(i), float(i))
        b.succeeded(b.admit(i), float(i))
    assert b.error_rate(3.0) == 0.5
    assert b.error_rate(100.0) == 0.0
    for i in range(4):
        assert b.succeeded(b.admit(100.0), 100.0 + i) is None
    assert b.state is C


def test_half_open_probe_budget_and_recovery():
    b = tripped()
    assert b.admit(4.9) is Admission.REJECT
    t = b.advance(5.0)
    assert (t.old, t.new, t.trigger) == (OPEN, H, Trigger.COOL_DOWN_OVER)
    p1, p2, p3 = b.admit(5.0), b.admit(5.0), b.admit(5.0)
    assert (p1, p2, p3) == (Admission.PROBE, Admission.PROBE, Admission.REJECT)
    assert b.succeeded(p1, 5.1) is None
    assert b.admit(5.1) is Admission.PROBE  # the slot came back
    t = b.succeeded(p2, 5.2)
    assert (t.old, t.new, t.trigger) == (H, C, Trigger.PROBES_SUCCEEDED)
    assert b.admit(5.2) is Admission.PASS
    assert b.trips_in_row == 0


def test_a_failed_probe_reopens_with_a_doubled_cool_down_up_to_the_max():
    b = tripped()
    now = 5.0
    cools = []
    for _ in range(4):
        b.advance(now)
        t = b.failed(b.admit(now), now)
        assert (t.old, t.new, t.trigger) == (H, OPEN, Trigger.PROBE_FAILED)
        cools.append(t.cool_down)
        now = b.deadline
    assert cools == [10.0, 20.0, 20.0, 20.0]
    assert b.trips == 1  # one switch away from the zone, however many probes failed


def test_late_results_of_requests_admitted_before_the_trip_move_nothing():
    b = Breaker(P)
    late = b.admit(0)
    b = tripped(P)
    assert b.failed(late, 1.0) is None
    assert b.state is OPEN
    b.advance(5.0)
    assert b.succeeded(Admission.PASS, 5.0) is None
    assert b.state is H
    b.abandoned(Admission.PASS)
    assert b.admit(5.0) is Admission.PROBE


def test_abandoned_probe_gives_its_slot_back():
    b = tripped()
    b.advance(5.0)
    probes = [b.admit(5.0), b.admit(5.0)]
    assert b.admit(5.0) is Admission.REJECT
    b.abandoned(probes[0])
    assert b.admit(5.0) is Admission.PROBE


@pytest.mark.parametrize(
    "kw",
    [
        {"consecutive_errors": 0},
        {"error_rate": 0.0},
        {"error_rate": 1.5},
        {"window": 0},
        {"min_requests": 0},
        {"cool_down": 0},
        {"cool_down": 10, "max_cool_down": 5},
        {"probes": 0},
        {"probe_successes": 0},
    ],
)
def test_policy_rejects_bad_values(kw):
    with pytest.raises(ValueError):  # noqa: PT011
        BreakerPolicy(**kw)


ORDER = [("cp", "api-cp"), ("yq", "api-yq"), ("hz", "api-hz")]


def test_choose_zone_takes_the_first_admitting_zone():
    breakers = {"cp": tripped(), "yq": Breaker(P)}
    c = choose_zone(ORDER, breakers, 1.0)
    assert (c.zone, c.domain, c.admission) == ("yq", "api-yq", Admission.PASS)
    c = choose_zone(ORDER, breakers, 1.0, exclude=["yq"])
    assert (c.zone, c.admission) == ("hz", Admission.PASS)  # no breaker yet: admitted
    assert choose_zone(ORDER, breakers, 1.0, exclude=["cp", "yq", "hz"]) is None


def test_choose_zone_probes_the_device_zone_after_the_cool_down():
    breakers = {"cp": tripped(), "yq": Breaker(P)}
    c = choose_zone(ORDER, breakers, 5.0)
    assert (c.zone, c.admission) == ("cp", Admission.PROBE)
    assert [(z, t.new) for z, t in c.transitions] == [("cp", H)]


def test_every_zone_open_still_sends_to_the_first():
    breakers = {z: tripped() for z, _ in ORDER}
    c = choose_zone(ORDER, breakers, 1.0)
    assert (c.zone, c.admission) == ("cp", Admission.FORCED)
    c = choose_zone(ORDER, breakers, 1.0, exclude=["cp"])
    assert (c.zone, c.admission) == ("yq", Admission.FORCED)


class BreakerMachine(RuleBasedStateMachine):
    """Random outcomes and time: the state is always one of the table's, OPEN always
    has a deadline, half-open never admits more than the probe budget."""

    def __init__(self) -> None:
        super().__init__()
        self.policy = BreakerPolicy(
            consecutive_errors=2, min_requests=3, cool_down=1.0, max_cool_down=4.0, probes=2
        )
        self.b = Breaker(self.policy)
        self.now = 0.0
        self.open: list[Admission] = []

    @rule(dt=st.floats(0, 3))
    def tick(self, dt):
        self.now += dt
        t = self.b.advance(self.now)
        if t is not None:
            assert TRANSITIONS[(t.old, t.trigger)] is t.new

    @rule()
    def admit(self):
        a = self.b.admit(self.now)
        if a is not Admission.REJECT:
            self.open.append(a)

    @precondition(lambda self: self.open)
    @rule(ok=st.booleans(), i=st.integers(0, 10))
    def finish(self, ok, i):
        a = self.open.pop(i % len(self.open))
        t = self.b.succeeded(a, self.now) if ok else self.b.failed(a, self.now)
        if t is not None:
            assert TRANSITIONS[(t.old, t.trigger)] is t.new
            if t.new is OPEN:
                assert self.policy.cool_down <= t.cool_down <= self.policy.max_cool_down

    @invariant()
    def consistent(self):
        b = self.b
        assert (b.deadline is not None) == (b.state is OPEN)
        assert 0 <= b._in_flight <= self.policy.probes
        if b.state is C:
            assert b.consecutive < self.policy.consecutive_errors


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


@given(st.lists(st.booleans(), max_size=200))
def test_closed_breaker_opens_exactly_at_the_nth_consecutive_error(outcomes):
    b = Breaker(BreakerPolicy(consecutive_errors=3, min_requests=1000))
    run = 0
    for i, ok in enumerate(outcomes):
        t = b.succeeded(b.admit(i), i) if ok else b.failed(b.admit(i), i)
        run = 0 if ok else run + 1
        if run == 3:
            assert t is not None
            assert t.trigger is Trigger.CONSECUTIVE_ERRORS
            return
        assert t is None
