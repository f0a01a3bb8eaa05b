"""Pure tests of the health state machine: no event loop, `now` passed explicitly."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zonegate.health import machine
from zonegate.health.machine import (
    RAMP_STEPS,
    AdminState,
    BackendView,
    Ejected,
    EjectionBlocked,
    HealthState,
    PoolHealth,
    TargetHealth,
    Transition,
)
from zonegate.topology.schema import ActiveCheck, Health, PassiveCheck, Pool

UP, DOWN, UNKNOWN = HealthState.UP, HealthState.DOWN, HealthState.UNKNOWN
T0 = 1000.0


def health(
    *,
    rise: int = 2,
    fall: int = 3,
    active: bool = True,
    failures: int = 5,
    base: str = "5s",
    max_ejection: str = "300s",
    max_percent: int = 50,
    slow_start: str | float = 0,
) -> Health:
    return Health(
        active=ActiveCheck(rise=rise, fall=fall) if active else None,
        passive=PassiveCheck(
            consecutive_failures=failures,
            base_ejection=base,
            max_ejection=max_ejection,
            max_ejected_percent=max_percent,
        ),
        slow_start=slow_start,
    )


def pool(*backends: str | dict, cfg: Health | None = None) -> Pool:
    items = [{"address": b} if isinstance(b, str) else b for b in backends]
    return Pool(zone="z1", backends=items, health=cfg or health())


def feed(target: TargetHealth, results: str, now: float = T0) -> list[Transition | None]:
    """Feed active results written as a string: '+' passed, '-' failed."""
    return [target.record_active(c == "+", now) for c in results]


# -- active checks ---------------------------------------------------------------

ACTIVE_CASES = [
    # (initial, rise, fall, results: '+' passed '-' failed, state after, indexes that flip)
    (None, 2, 3, "", UNKNOWN, []),
    (None, 2, 3, "+", UP, [0]),
    (None, 2, 3, "-", DOWN, [0]),
    (None, 3, 3, "-++", DOWN, [0]),
    (None, 3, 3, "-+++", UP, [0, 3]),
    (UP, 2, 3, "--", UP, []),
    (UP, 2, 3, "---", DOWN, [2]),
    (UP, 2, 3, "--+--", UP, []),
    (UP, 2, 3, "--+---", DOWN, [5]),
    (UP, 2, 3, "-+-+-+-+-+", UP, []),
    (UP, 2, 3, "---++", UP, [2, 4]),
    (DOWN, 2, 3, "+", DOWN, []),
    (DOWN, 2, 3, "++", UP, [1]),
    (DOWN, 2, 3, "+-+-+-+-", DOWN, []),
    (DOWN, 1, 1, "+", UP, [0]),
    (UP, 1, 1, "-", DOWN, [0]),
    (UP, 1, 1, "-+-", DOWN, [0, 1, 2]),
    (DOWN, 5, 1, "++++-++++", DOWN, []),
    (DOWN, 5, 1, "+++++", UP, [4]),
]


@pytest.mark.parametrize(("initial", "rise", "fall", "results", "expected", "flips"), ACTIVE_CASES)
def test_active_transitions(initial, rise, fall, results, expected, flips):
    t = TargetHealth(health(rise=rise, fall=fall), T0, initial=initial)
    out = feed(t, results)
    assert t.state is expected
    assert [i for i, tr in enumerate(out) if tr is not None] == flips
    if flips:
        assert out[flips[-1]].new is expected


def test_transition_reasons():
    t = TargetHealth(health(rise=2, fall=3), T0)
    assert t.record_active(False, T0, "connect refused") == Transition(
        UNKNOWN, DOWN, "first check failed: connect refused"
    )
    t.record_active(True, T0)
    assert t.record_active(True, T0, "status 200") == Transition(
        DOWN, UP, "2 consecutive passed checks: status 200"
    )
    t.record_active(False, T0)
    t.record_active(False, T0)
    tr = t.record_active(False, T0, "connect refused")
    assert tr == Transition(UP, DOWN, "3 consecutive failed checks: connect refused")
    assert t.reason == "3 consecutive failed checks: connect refused"


def test_single_check_wording():
    t = TargetHealth(health(rise=1, fall=1), T0, initial=UP)
    assert t.record_active(False, T0).reason == "1 consecutive failed check"


def test_unknown_is_not_available():
    t = TargetHealth(health(), T0)
    assert t.state is UNKNOWN
    assert not t.available(T0)
    assert t.reason == "not checked yet"


def test_active_off_starts_up_and_refuses_results():
    t = TargetHealth(health(active=False), T0, initial=DOWN)
    assert t.state is UP
    assert t.available(T0)
    with pytest.raises(ValueError, match="active checks are off"):
        t.record_active(True, T0)


# -- passive ejection ------------------------------------------------------------


def fail_n(target: TargetHealth, n: int, now: float, **kw):
    out = None
    for _ in range(n):
        out = target.record_passive(False, now, **kw)
    return out


def test_ejection_after_consecutive_failures():
    t = TargetHealth(health(failures=3, base="5s"), T0, initial=UP)
    assert fail_n(t, 2, T0) is None
    ev = t.record_passive(False, T0, "502")
    assert ev == Ejected(T0 + 5, 1, "ejected for 5s after 3 consecutive failures: 502")
    assert not t.available(T0 + 4.999)
    assert t.ejected_until(T0 + 4.999) == T0 + 5
    assert t.reason.startswith("ejected for 5s")
    assert t.available(T0 + 5)
    assert t.ejected_until(T0 + 5) is None


def test_success_resets_failure_run():
    t = TargetHealth(health(failures=3), T0, initial=UP)
    for ok in (False, False, True, False, False, True, False, False):
        assert t.record_passive(ok, T0) is None
    assert t.available(T0)


def test_results_while_ejected_are_ignored():
    t = TargetHealth(health(failures=2, base="10s"), T0, initial=UP)
    fail_n(t, 2, T0)
    assert fail_n(t, 10, T0 + 1) is None
    assert t.passive_failures == 0
    assert t.ejected_until(T0 + 1) == T0 + 10


def test_passive_disabled():
    t = TargetHealth(health(failures=0), T0, initial=UP)
    assert fail_n(t, 1000, T0) is None
    assert t.available(T0)


# (time of the failure run, expected ejection duration, expected k)
BACKOFF = [
    (0.0, 5.0, 1),  # out until 5
    (6.0, 10.0, 2),  # back at 5, fails again at 6 (< 5 + 5): doubled, out until 16
    (17.0, 20.0, 3),  # out until 37
    (38.0, 40.0, 4),  # out until 78
    (79.0, 60.0, 5),  # 80s capped at max_ejection 60s; out until 139
    (140.0, 60.0, 6),  # still capped
    # quiet for as long as the last ejection (60s after 200): k decays to 0
    (200.0 + 60.0, 5.0, 1),
]


def test_ejection_backoff_cap_and_decay():
    t = TargetHealth(health(failures=2, base="5s", max_ejection="60s"), T0, initial=UP)
    for at, duration, k in BACKOFF:
        ev = fail_n(t, 2, T0 + at)
        assert isinstance(ev, Ejected), at
        assert ev.until == pytest.approx(T0 + at + duration)
        assert ev.count == k
        assert t.ejections == k


def test_k_kept_until_quiet_period_ends():
    t = TargetHealth(health(failures=1, base="5s"), T0, initial=UP)
    t.record_passive(False, T0)  # out [0, 5), quiet until 10
    assert t.ejections == 1
    t.record_passive(True, T0 + 9.9)
    assert t.ejections == 1
    t.record_passive(True, T0 + 10)
    assert t.ejections == 0


def test_max_ejected_percent():
    p = pool(*(f"10.0.0.{i}:80" for i in range(1, 5)), cfg=health(failures=1, max_percent=50))
    h = PoolHealth(p, T0, initial=UP)
    assert isinstance(h.record_passive(0, False, T0), Ejected)
    assert isinstance(h.record_passive(1, False, T0), Ejected)
    blocked = h.record_passive(2, False, T0, "reset")
    assert blocked == EjectionBlocked("1 consecutive failure: reset")
    assert [v.available for v in h.view(T0)] == [False, False, True, True]
    # Once an ejection ends there is room again.
    assert isinstance(h.record_passive(2, False, T0 + 5), Ejected)


@pytest.mark.parametrize(
    ("size", "percent", "ejectable"),
    [(1, 50, 0), (1, 100, 1), (2, 50, 1), (3, 50, 1), (10, 10, 1), (10, 0, 0), (5, 100, 5)],
)
def test_max_ejected_percent_table(size, percent, ejectable):
    p = pool(
        *(f"10.0.0.{i}:80" for i in range(1, size + 1)), cfg=health(failures=1, max_percent=percent)
    )
    h = PoolHealth(p, T0, initial=UP)
    results = [h.record_passive(i, False, T0) for i in range(size)]
    assert sum(isinstance(r, Ejected) for r in results) == ejectable


def test_blocked_attempt_restarts_the_run():
    p = pool("10.0.0.1:80", cfg=health(failures=3, max_percent=50))
    h = PoolHealth(p, T0, initial=UP)
    assert [h.record_passive(0, False, T0) for _ in range(3)][-1] == EjectionBlocked(
        "3 consecutive failures"
    )
    assert h.targets[0].passive_failures == 0


# -- slow start ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("elapsed", "factor"),
    [(-1.0, 0.1), (0.0, 0.1), (2.5, 0.325), (5.0, 0.55), (7.5, 0.775), (10.0, 1.0), (99.0, 1.0)],
)
def test_slow_start_ramp_after_down_up(elapsed, factor):
    t = TargetHealth(health(rise=1, fall=1, slow_start="10s"), T0, initial=UP)
    assert t.weight_factor(T0) == 1.0  # up at start: no ramp
    t.record_active(False, T0)
    t.record_active(True, T0 + 100)
    assert t.weight_factor(T0 + 100 + elapsed) == pytest.approx(factor)


def test_slow_start_after_ejection_starts_at_its_end():
    t = TargetHealth(health(failures=1, base="5s", slow_start="10s"), T0, initial=UP)
    t.record_passive(False, T0)
    assert t.weight_factor(T0 + 1) == pytest.approx(0.1)
    assert t.weight_factor(T0 + 5) == pytest.approx(0.1)
    assert t.weight_factor(T0 + 10) == pytest.approx(0.55)
    assert t.weight_factor(T0 + 15) == 1.0


def test_no_slow_start_at_startup():
    t = TargetHealth(health(slow_start="10s"), T0)
    t.record_active(True, T0 + 1)
    assert t.weight_factor(T0 + 1) == 1.0
    assert t.deadline() is None


def test_no_slow_start_when_zero():
    t = TargetHealth(health(rise=1, fall=1), T0, initial=UP)
    t.record_active(False, T0)
    t.record_active(True, T0 + 1)
    assert t.weight_factor(T0 + 1) == 1.0


def test_joining_target_ramps_from_first_up():
    t = TargetHealth(health(slow_start="10s"), T0, joining=True)
    t.record_active(True, T0 + 2)
    assert t.weight_factor(T0 + 7) == pytest.approx(0.55)


# -- admin -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("admin", "available"),
    [("enabled", True), ("drain", False), ("disabled", False), (AdminState.DRAIN, False)],
)
def test_admin_states(admin, available):
    t = TargetHealth(health(), T0, initial=UP)
    t.set_admin(admin)
    assert t.available(T0) is available
    assert t.admin is AdminState(admin)
    if not available:
        assert t.reason == f"admin {AdminState(admin).value}"


def test_admin_from_config_and_runtime():
    p = pool("a:80", {"address": "b:80", "state": "drain"})
    h = PoolHealth(p, T0, initial=UP)
    assert [v.available for v in h.view(T0)] == [True, False]
    h.set_admin(1, "enabled")
    h.set_admin(0, "disabled")
    assert [v.available for v in h.view(T0)] == [False, True]
    with pytest.raises(ValueError, match="bogus"):
        h.set_admin(0, "bogus")


# -- deadline --------------------------------------------------------------------


def test_deadline_ejection():
    t = TargetHealth(health(failures=1, base="5s"), T0, initial=UP)
    assert t.deadline() is None
    t.record_passive(False, T0)
    assert t.deadline() == T0 + 5
    t.available(T0 + 5)
    assert t.deadline() is None


def test_deadline_ramp_steps():
    t = TargetHealth(health(failures=1, base="5s", slow_start="10s"), T0, initial=UP)
    t.record_passive(False, T0)
    assert t.deadline() == T0 + 5  # ejection end = ramp start
    step = 10.0 / RAMP_STEPS
    t.available(T0 + 5)
    assert t.deadline() == pytest.approx(T0 + 5 + step)
    t.available(T0 + 5 + 3 * step + step / 2)
    assert t.deadline() == pytest.approx(T0 + 5 + 4 * step)
    t.available(T0 + 14.99)
    assert t.deadline() == pytest.approx(T0 + 15)
    t.available(T0 + 15)
    assert t.deadline() is None


def test_pool_deadline_is_the_earliest():
    p = pool("a:80", "b:80", "c:80", cfg=health(failures=1, max_percent=100))
    h = PoolHealth(p, T0, initial=UP)
    assert h.deadline() is None
    h.record_passive(1, False, T0 + 3)
    h.record_passive(2, False, T0 + 1)
    assert h.deadline() == T0 + 6


# -- pool view, share, reload ----------------------------------------------------


def test_view_and_healthy_share():
    p = pool(
        {"address": "a:80", "weight": 3},
        {"address": "b:80", "weight": 1, "name": "bee"},
        {"address": "c:80", "weight": 2, "state": "drain"},
        {"address": "d:80", "weight": 4},
        cfg=health(rise=1, fall=1, slow_start="10s"),
    )
    h = PoolHealth(p, T0, initial=UP)
    h.record_active(3, False, T0, "connect refused")
    h.record_active(3, True, T0 + 1)
    views = h.view(T0 + 6)
    assert views[1] == BackendView(
        index=1,
        id="bee",
        available=True,
        weight=1.0,
        state=UP,
        ejected_until=None,
        admin=AdminState.ENABLED,
        reason="",
    )
    assert views[2].available is False
    assert views[2].reason == "admin drain"
    assert views[3].weight == pytest.approx(4 * 0.55)
    assert views[3].reason == "1 consecutive passed check"
    # Configured weights: (3 + 1 + 4) / (3 + 1 + 4), the drained c left out of both.
    assert h.healthy_share(T0 + 6) == 1.0
    h.record_active(0, False, T0 + 7)
    assert h.healthy_share(T0 + 7) == pytest.approx(5 / 8)


def test_healthy_share_nothing_enabled():
    p = pool({"address": "a:80", "state": "disabled"})
    assert PoolHealth(p, T0, initial=UP).healthy_share(T0) == 0.0


def test_carry_over_keeps_health_by_id():
    old = pool("a:80", "b:80", {"address": "c:80", "name": "cee"}, cfg=health(rise=1, fall=1))
    h = PoolHealth(old, T0)
    h.record_active(0, True, T0)
    h.record_active(1, False, T0, "connect refused")
    h.record_active(2, True, T0)
    new = pool(
        {"address": "c2:80", "name": "cee"},  # same id, new address
        "b:80",
        "new:80",
        cfg=health(rise=3, fall=1, slow_start="10s"),
    )
    h2 = h.carry_over(new, T0 + 1)
    assert [t.state for t in h2.targets] == [UP, DOWN, UNKNOWN]
    assert h2.view(T0 + 1)[1].reason == "first check failed: connect refused"
    # New settings apply to kept targets: rise is 3 now.
    assert h2.record_active(1, True, T0 + 2) is None
    assert h2.record_active(1, True, T0 + 2) is None
    assert h2.record_active(1, True, T0 + 2).new is UP
    # New backends ramp when they come up; the old health object is untouched.
    h2.record_active(2, True, T0 + 2)
    assert h2.targets[2].weight_factor(T0 + 7) == pytest.approx(0.55)
    assert [t.state for t in h.targets] == [UP, DOWN, UP]


def test_carry_over_keeps_ejection():
    old = pool("a:80", "b:80", cfg=health(failures=1, base="5s"))
    h = PoolHealth(old, T0, initial=UP)
    h.record_passive(0, False, T0)
    h2 = h.carry_over(pool("b:80", "a:80", cfg=health(failures=1)), T0 + 1)
    assert [v.ejected_until for v in h2.view(T0 + 1)] == [None, T0 + 5]


@pytest.mark.parametrize(
    ("old_state", "runtime", "new_state", "expected"),
    [
        ("enabled", "drain", "enabled", AdminState.DRAIN),  # file unchanged: runtime wins
        ("enabled", "drain", "disabled", AdminState.DISABLED),  # file changed: file wins
        ("drain", "enabled", "drain", AdminState.ENABLED),
        ("drain", None, "enabled", AdminState.ENABLED),
    ],
)
def test_carry_over_admin(old_state, runtime, new_state, expected):
    h = PoolHealth(pool({"address": "a:80", "state": old_state}), T0, initial=UP)
    if runtime:
        h.set_admin(0, runtime)
    h2 = h.carry_over(pool({"address": "a:80", "state": new_state}), T0 + 1)
    assert h2.targets[0].admin is expected


def test_carry_over_turning_active_off_brings_down_targets_up():
    h = PoolHealth(pool("a:80", "b:80", cfg=health(slow_start="10s")), T0, initial=UP)
    for _ in range(3):
        h.record_active(1, False, T0)
    h2 = h.carry_over(pool("a:80", "b:80", cfg=health(active=False, slow_start="10s")), T0 + 1)
    assert [v.available for v in h2.view(T0 + 1)] == [True, True]
    assert h2.targets[1].weight_factor(T0 + 6) == pytest.approx(0.55)
    assert h2.targets[0].weight_factor(T0 + 1) == 1.0


def test_carry_over_duplicate_ids_pair_in_order():
    h = PoolHealth(pool("a:80", "a:80", cfg=health(rise=1, fall=1)), T0, initial=UP)
    h.record_active(1, False, T0)
    h2 = h.carry_over(pool("a:80", "a:80", "a:80", cfg=health(rise=1, fall=1)), T0)
    assert [t.state for t in h2.targets] == [UP, DOWN, UNKNOWN]


# -- properties ------------------------------------------------------------------

events = st.lists(
    st.one_of(
        st.tuples(st.just("active"), st.booleans()),
        st.tuples(st.just("passive"), st.booleans()),
        st.tuples(st.just("advance"), st.floats(0.0, 30.0)),
        st.tuples(st.just("admin"), st.sampled_from(list(AdminState))),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(
    rise=st.integers(1, 4),
    fall=st.integers(1, 4),
    failures=st.integers(0, 4),
    base_ms=st.integers(100, 10_000),
    max_ms=st.integers(100, 60_000),
    slow_ms=st.integers(0, 20_000),
    initial=st.sampled_from([None, UP, DOWN]),
    joining=st.booleans(),
    script=events,
)
def test_target_invariants(
    rise, fall, failures, base_ms, max_ms, slow_ms, initial, joining, script
):
    cfg = health(
        rise=rise,
        fall=fall,
        failures=failures,
        base=f"{base_ms}ms",
        max_ejection=f"{max_ms}ms",
        slow_start=f"{slow_ms}ms" if slow_ms else 0,
    )
    now = T0
    t = TargetHealth(cfg, now, initial=initial, joining=joining)
    state = t.state
    run_ok: bool | None = None  # outcome of the current run of active results
    run = 0
    for kind, arg in script:
        if kind == "advance":
            now += arg
        elif kind == "admin":
            t.set_admin(arg)
        elif kind == "passive":
            ev = t.record_passive(arg, now)
            if isinstance(ev, Ejected):
                assert ev.until > now
                assert ev.until - now <= cfg.passive.max_ejection + 1e-9
                assert not arg
        else:
            run = run + 1 if run_ok is arg else 1
            run_ok = arg
            tr = t.record_active(arg, now)
            if state is UNKNOWN:
                assert tr is not None
                assert tr.new is (UP if arg else DOWN)
            elif tr is None:
                # No flip: the run toward the other state is still short.
                if state is UP and not arg:
                    assert run < fall
                if state is DOWN and arg:
                    assert run < rise
            else:
                assert tr.old is state
                assert run >= (rise if arg else fall)
                assert tr.new is (UP if arg else DOWN)
            if tr is not None:
                assert tr.new is t.state
                run = 0
                run_ok = None
            state = t.state

        factor = t.weight_factor(now)
        assert machine.SLOW_START_MIN <= factor <= 1.0
        if t.available(now):
            assert t.state is UP
            assert t.admin is AdminState.ENABLED
            assert t.ejected_until(now) is None
        deadline = t.deadline()
        assert deadline is None or deadline > now
        assert not math.isnan(factor)


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(1, 8),
    percent=st.integers(0, 100),
    script=st.lists(st.tuples(st.integers(0, 7), st.booleans(), st.floats(0.0, 3.0)), max_size=120),
)
def test_pool_never_ejects_more_than_max_percent(size, percent, script):
    cfg = health(failures=1, base="2s", max_percent=percent)
    h = PoolHealth(pool(*(f"10.0.0.{i}:80" for i in range(1, size + 1)), cfg=cfg), T0, initial=UP)
    now = T0
    for index, ok, advance in script:
        now += advance
        h.record_passive(index % size, ok, now)
        ejected = sum(v.ejected_until is not None for v in h.view(now))
        assert ejected * 100 <= percent * size
        share = h.healthy_share(now)
        assert 0.0 <= share <= 1.0
        deadline = h.deadline()
        assert deadline is None or deadline > now


# -- architecture ----------------------------------------------------------------

FORBIDDEN = {"asyncio", "socket", "time", "logging", "threading", "prometheus_client", "uvloop"}


def test_machine_is_pure():
    tree = ast.parse(Path(machine.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN


def _pool_for_uneject():
    from zonegate.topology.load import load_topology_text

    topo = load_topology_text(
        """
zones: {a: {}}
pools:
  p:
    zone: a
    backends: [{address: "127.0.0.1:1"}, {address: "127.0.0.1:2"}, {address: "127.0.0.1:3"}, {address: "127.0.0.1:4"}]
    health:
      active: {type: tcp, rise: 1, fall: 1}
      passive: {consecutive_failures: 1, base_ejection: 30s, max_ejected_percent: 25}
"""
    )
    return topo.pools["p"]


def test_active_recovery_ends_a_passive_ejection():
    pool = _pool_for_uneject()
    ph = PoolHealth(pool, 0.0, initial=HealthState.UP)
    ph.record_passive(0, False, 1.0)
    assert not ph.view(2.0)[0].available
    ph.record_active(0, False, 2.0)  # DOWN
    ph.record_active(0, True, 3.0)  # UP again: back at once, not at t=31
    assert ph.view(3.5)[0].available


def test_a_down_target_does_not_use_up_the_ejection_budget():
    pool = _pool_for_uneject()
    ph = PoolHealth(pool, 0.0, initial=HealthState.UP)
    assert isinstance(ph.record_passive(0, False, 1.0), Ejected)
    ph.record_active(0, False, 1.5)  # also DOWN by checks
    # 25% of 4 = one ejection allowed; backend 0 is DOWN anyway, so 1 may be ejected.
    assert isinstance(ph.record_passive(1, False, 2.0), Ejected)
    assert isinstance(ph.record_passive(2, False, 2.5), EjectionBlocked)
