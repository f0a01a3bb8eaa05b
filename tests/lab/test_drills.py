"""The drill model (pure): samples seen per device zone, routes, failovers, recovery."""

from __future__ import annotations

import pytest

from zonegate.lab.drills import Budget, Sample, Step, StepRun, all_answer, count_check, evaluate


async def _nothing(d, run):
    pass


def _run(budget: Budget | None = None, fault: float | None = 1.0) -> StepRun:
    run = StepRun(Step("s", "t", _nothing, 1.0, budget or Budget()), start=0.0, end=10.0)
    run.fault = fault
    return run


def served(t, zone, home, backend="b", failover=False, version=0) -> Sample:
    return Sample(t, zone, backend, 200, 0.002, "", home, version, failover)


def failed(t, zone, home, error="refused") -> Sample:
    return Sample(t, zone, "", 0, 0.002, error, home)


def test_sample_owner_is_the_device_zone_else_the_zone_asked():
    assert served(0, "b", "a").owner == "a"
    assert Sample(0, "b", "x", 200, 0.1, "").owner == "b"
    assert not failed(0, "a", "a").ok
    assert Sample(0, "a", "x", 503, 0.1, "").ok is False
    assert served(1.0, "a", "a").end == pytest.approx(1.002)


def test_evaluate_routes_and_failovers():
    run = _run()
    samples = [
        served(0.1, "a", "a"),
        served(0.2, "b", "a", failover=True),
        served(0.3, "b", "a", failover=True),
        served(0.4, "b", "b"),
        failed(0.5, "b", "a"),
    ]

    evaluate(run, samples)

    assert run.routes == {"a": {"a": 1, "b": 2}, "b": {"b": 1}}
    assert run.failovers == 2
    assert run.answered == {"a": {"b": 1}, "b": {"b": 3}}
    doc = run.to_json()
    assert doc["routes"] == run.routes
    assert doc["failovers"] == 2
    assert doc["kind"] == "fault"
    assert doc["budget_text"] == "fail<=0"
    assert not run.met  # one failed request


def test_kill_lb_recovery_is_the_first_success_on_the_other_zone_for_the_zone_s_devices():
    # The shape of the kill-lb step: zone a's LB dies at 1.0; a's devices fail over.
    run = _run(Budget(max_failed=0, max_recover=1.0), fault=1.0)
    run.watch_zone = "a"
    run.recover_when = lambda s: s.owner == "a" and s.zone == "b"
    samples = [
        served(0.5, "a", "a"),
        served(1.01, "b", "b"),  # b's own devices do not count
        served(1.02, "b", "a", failover=True),
        served(1.2, "b", "a", failover=True),
    ]

    evaluate(run, samples)

    assert run.recover_s == pytest.approx(0.022)
    assert run.met


def test_a_failure_of_the_watched_zone_s_devices_delays_recovery_wherever_it_was_sent():
    run = _run(Budget(max_failed=5), fault=1.0)
    run.watch_zone = "a"
    run.recover_when = lambda s: s.owner == "a"
    evaluate(run, [served(1.1, "b", "a"), failed(1.5, "b", "a"), served(1.6, "b", "a")])
    assert run.recovered == pytest.approx(1.602)


def test_helper_checks():
    ss = [served(0, "a", "a", backend="x"), served(0, "a", "a", backend="x")]
    check = all_answer(["x", "y"], ss)
    assert (check.ok, check.required, check.detail) == (False, False, "x 2, y 0")
    assert count_check("none", [], 0).ok
    assert not count_check("one", ss[:1], 0).ok
