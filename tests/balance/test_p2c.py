"""Least load (P2C): low latency x in-flight wins, new backends tried but not flooded."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zonegate.balance.base import Candidate, Loads, PickContext
from zonegate.balance.p2c import LeastLoadPicker

from .strategies import FAST


def make(weights: list[float], loads: Loads, seed: int = 0) -> LeastLoadPicker:
    candidates = [Candidate(i, w) for i, w in enumerate(weights)]
    return LeastLoadPicker(candidates, loads, random.Random(seed))


def run(picker: LeastLoadPicker, loads: Loads, picks: int, ends_after: int) -> Counter[int]:
    """Each request ends after `ends_after` later picks, with its backend's latency."""
    counts: Counter[int] = Counter()
    live: list[int] = []
    for _ in range(picks):
        got = picker.pick(PickContext())
        assert got is not None
        counts[got] += 1
        loads.start(got)
        live.append(got)
        if len(live) > ends_after:
            done = live.pop(0)
            loads.done(done, loads.latency[done], now=0.0)  # latency stays as set
    return counts


def test_prefers_the_fast_backend_strongly() -> None:
    loads = Loads.for_pool(4)
    loads.latency[:] = [0.050, 0.050, 0.005, 0.050]
    counts = run(make([1, 1, 1, 1], loads, seed=1), loads, picks=20_000, ends_after=8)
    # Ten times faster: it wins every pair it is in (~1/2 of picks) and more as the
    # others queue up; the slow ones share the rest.
    assert counts[2] / 20_000 > 0.45
    assert all(counts[i] / 20_000 < 0.2 for i in (0, 1, 3))


def test_in_flight_counts_against_a_fast_backend() -> None:
    loads = Loads.for_pool(2)
    loads.latency[:] = [0.010, 0.020]
    loads.inflight[:] = [5, 0]  # 0.010 * 6 > 0.020 * 1
    picker = make([1, 1], loads)
    assert {picker.pick(PickContext()) for _ in range(20)} == {1}


def test_new_backend_is_tried_but_not_flooded() -> None:
    loads = Loads.for_pool(4)
    loads.latency[:] = [0.020, 0.020, 0.020, 0.0]  # 3: no sample yet
    picker = make([1, 1, 1, 1], loads, seed=2)
    counts: Counter[int] = Counter()
    for _ in range(400):  # nothing ends: in-flight only grows
        got = picker.pick(PickContext())
        assert got is not None
        counts[got] += 1
        loads.start(got)
    assert 0.15 < counts[3] / 400 < 0.35


def test_weights_bias_the_draws() -> None:
    loads = Loads.for_pool(3)
    loads.latency[:] = [0.010, 0.010, 0.010]
    counts = run(make([8, 1, 1], loads, seed=3), loads, picks=10_000, ends_after=0)
    assert counts[0] / 10_000 > 0.6


@FAST
@given(
    latency=st.lists(st.floats(1e-4, 1.0), min_size=2, max_size=6),
    seed=st.integers(0, 2**16),
    exclude=st.sets(st.integers(0, 5), max_size=4),
)
def test_never_picks_excluded_and_never_the_costliest(
    latency: list[float], seed: int, exclude: set[int]
) -> None:
    n = len(latency)
    loads = Loads.for_pool(n)
    loads.latency[:] = latency
    picker = make([1.0] * n, loads, seed)
    allowed = [i for i in range(n) if i not in exclude]
    for _ in range(20):
        got = picker.pick(PickContext(exclude=exclude))
        if not allowed:
            assert got is None
            continue
        assert got in allowed
        worst = max(latency[i] for i in allowed)
        if [latency[i] for i in allowed].count(worst) == 1 and len(allowed) >= 2:
            assert latency[got] < worst  # it met someone cheaper than the unique worst


def test_two_draws_are_distinct() -> None:
    """With two candidates, the slower one is never chosen (it always meets the faster)."""
    loads = Loads.for_pool(2)
    loads.latency[:] = [0.001, 0.002]
    picker = make([100, 1], loads)  # heavy weight: draws would often collide
    assert {picker.pick(PickContext()) for _ in range(2000)} == {0}


@pytest.mark.parametrize("known", [[], [0.010, 0.030]])
def test_default_latency_for_unsampled(known: list[float]) -> None:
    loads = Loads.for_pool(3)
    loads.latency[: len(known)] = known
    picker = make([1, 1, 1], loads)
    assert picker._default_latency() == pytest.approx(0.020 if known else 0.001)


def test_a_backend_with_one_bad_early_sample_is_not_starved() -> None:
    """Finagle-style idle decay: a backend that lost every comparison because of one slow
    sample comes back once it has been idle for a while, and a fresh sample corrects it."""
    import random as _random

    from zonegate.balance.base import Candidate, Loads, PickContext
    from zonegate.balance.p2c import LeastLoadPicker

    loads = Loads.for_pool(3)
    now = 100.0
    loads.start(0)
    loads.done(0, 0.050, now)  # one slow early answer
    for i in (1, 2):
        loads.start(i)
        loads.done(i, 0.002, now)
    picker = LeastLoadPicker([Candidate(i, 1.0) for i in range(3)], loads, _random.Random(3))
    hits = [0, 0, 0]
    for _ in range(3000):  # 30 s of traffic, one request every 10 ms, answered at once
        now += 0.01
        i = picker.pick(PickContext())
        hits[i] += 1
        loads.start(i)
        loads.done(i, 0.002, now)
    assert hits[0] > 300, hits
