"""Weighted random: shares follow weights, reproducible from the seed."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from zonegate.balance.base import Candidate, Loads, PickContext
from zonegate.balance.rand import RandomPicker

PICKS = 60_000


def make(weights: list[float], seed: int = 7) -> RandomPicker:
    candidates = [Candidate(i, w) for i, w in enumerate(weights)]
    return RandomPicker(candidates, Loads.for_pool(len(weights)), random.Random(seed))


@pytest.mark.parametrize(
    "weights", [[1, 1, 1, 1], [5, 1, 1], [0.25, 3.5, 1.0, 10.0], [10000, 1, 1000]]
)
def test_shares_follow_weights(weights: list[float]) -> None:
    picker = make(weights)
    ctx = PickContext()
    counts = Counter(picker.pick(ctx) for _ in range(PICKS))
    total = sum(weights)
    for i, w in enumerate(weights):
        assert counts[i] / PICKS == pytest.approx(w / total, abs=0.01)


def test_shares_among_allowed_follow_weights_when_excluding() -> None:
    picker = make([5, 1, 3, 1])
    ctx = PickContext(exclude={0})
    counts = Counter(picker.pick(ctx) for _ in range(PICKS))
    assert set(counts) == {1, 2, 3}
    for i, share in ((1, 0.2), (2, 0.6), (3, 0.2)):
        assert counts[i] / PICKS == pytest.approx(share, abs=0.01)


def test_same_seed_same_sequence() -> None:
    ctx = PickContext()
    a, b = make([1, 2, 3], seed=42), make([1, 2, 3], seed=42)
    assert [a.pick(ctx) for _ in range(200)] == [b.pick(ctx) for _ in range(200)]
