"""Round robin: every candidate in turn, weights ignored."""

from __future__ import annotations

import itertools
import random
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from zonegate.balance.base import Candidate, Loads, PickContext
from zonegate.balance.rr import RoundRobinPicker

from .strategies import FAST


def make(weights: list[float], seed: int = 0) -> RoundRobinPicker:
    candidates = [Candidate(i * 2, w) for i, w in enumerate(weights)]  # sparse indexes
    return RoundRobinPicker(candidates, Loads.for_pool(2 * len(weights)), random.Random(seed))


@FAST
@given(
    weights=st.lists(st.floats(min_value=0.1, max_value=100.0), min_size=1, max_size=10),
    seed=st.integers(0, 2**16),
    rounds=st.integers(1, 4),
)
def test_each_candidate_once_per_round_whatever_its_weight(
    weights: list[float], seed: int, rounds: int
) -> None:
    picker = make(weights, seed)
    n = len(weights)
    seq = [picker.pick(PickContext()) for _ in range(n * rounds)]
    assert Counter(seq) == {2 * i: rounds for i in range(n)}
    # Always the same order: each round is the previous one again.
    assert seq[n:] == seq[:-n]


def test_order_follows_the_list_from_a_random_start() -> None:
    starts = set()
    for seed in range(20):
        picker = make([1, 1, 1, 1], seed)
        seq = [picker.pick(PickContext()) for _ in range(8)]
        starts.add(seq[0])
        assert all(b == (a + 2) % 8 for a, b in itertools.pairwise(seq))
    assert len(starts) > 1


def test_exclusion_moves_on_to_the_next_allowed() -> None:
    picker = make([1, 1, 1, 1], seed=0)
    first = picker.pick(PickContext())
    assert first is not None
    nxt, after = (first + 2) % 8, (first + 4) % 8
    assert picker.pick(PickContext(exclude={nxt})) == after
    assert picker.pick(PickContext()) == (after + 2) % 8
