"""Least connections: fewest in flight per weight, ties spread round robin."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zonegate.balance.base import Candidate, Loads, PickContext
from zonegate.balance.leastconn import LeastConnPicker

from .strategies import FAST


def make(weights: list[float], loads: Loads, seed: int = 0) -> LeastConnPicker:
    candidates = [Candidate(i, w) for i, w in enumerate(weights)]
    return LeastConnPicker(candidates, loads, random.Random(seed))


def test_picks_the_least_loaded() -> None:
    loads = Loads.for_pool(4)
    loads.inflight[:] = [5, 2, 7, 3]
    picker = make([1, 1, 1, 1], loads)
    assert {picker.pick(PickContext()) for _ in range(10)} == {1}
    assert picker.pick(PickContext(exclude={1})) == 3


def test_weight_scales_the_load() -> None:
    loads = Loads.for_pool(2)
    loads.inflight[:] = [5, 2]
    # (5 + 1) / 4 = 1.5 < (2 + 1) / 1 = 3
    assert make([4, 1], loads).pick(PickContext()) == 0


def test_idle_pool_spreads_ties() -> None:
    picker = make([1, 1, 1], Loads.for_pool(3))
    counts = Counter(picker.pick(PickContext()) for _ in range(30))
    assert counts == {0: 10, 1: 10, 2: 10}


@FAST
@given(
    weights=st.lists(st.integers(1, 6), min_size=1, max_size=6),
    rounds=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_in_flight_follows_weights(weights: list[int], rounds: int, seed: int) -> None:
    """Requests that never end settle in proportion to the weights."""
    loads = Loads.for_pool(len(weights))
    picker = make([float(w) for w in weights], loads, seed)
    for _ in range(rounds * sum(weights)):
        got = picker.pick(PickContext())
        assert got is not None
        loads.start(got)
    assert loads.inflight == [rounds * w for w in weights]


@FAST
@given(
    inflight=st.lists(st.integers(0, 20), min_size=1, max_size=8),
    weights=st.data(),
    exclude=st.sets(st.integers(0, 7)),
)
def test_choice_has_the_lowest_score(
    inflight: list[int], weights: st.DataObject, exclude: set[int]
) -> None:
    ws = weights.draw(
        st.lists(st.floats(0.1, 10.0), min_size=len(inflight), max_size=len(inflight))
    )
    loads = Loads.for_pool(len(inflight))
    loads.inflight[:] = inflight
    got = make(ws, loads).pick(PickContext(exclude=exclude))
    allowed = [i for i in range(len(ws)) if i not in exclude]
    if not allowed:
        assert got is None
        return
    assert got in allowed
    score = {i: (inflight[i] + 1) / ws[i] for i in allowed}
    assert score[got] == pytest.approx(min(score.values()))
