"""Contract every picker keeps: exclusion, empty pools, zero weights, bad input."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zonegate.balance import PICKERS, PickerClass, make_picker
from zonegate.balance.base import Candidate, Loads, PickContext

from .strategies import FAST, pickable, pools

ALL = sorted(PICKERS.values(), key=lambda cls: cls.name)
ids = [cls.name for cls in ALL]

keys = st.one_of(st.none(), st.binary(max_size=8))


@pytest.mark.parametrize("cls", ALL, ids=ids)
@FAST
@given(
    pool=pools(),
    seed=st.integers(0, 2**32),
    steps=st.lists(st.tuples(keys, st.sets(st.integers(0, 11)), st.booleans()), max_size=30),
)
def test_exclusion_is_never_violated(
    cls: PickerClass,
    pool: tuple[list[Candidate], Loads],
    seed: int,
    steps: list[tuple[bytes | None, set[int], bool]],
) -> None:
    candidates, loads = pool
    allowed = pickable(candidates)
    picker = cls(candidates, loads, random.Random(seed), balance_factor=1.25)
    for key, exclude, start in steps:
        got = picker.pick(PickContext(hash_key=key, exclude=exclude))
        if allowed - exclude:
            assert got in allowed - exclude
            if start:  # the proxy sends the request: loads move under the picker
                loads.start(got)
        else:
            assert got is None


@pytest.mark.parametrize("cls", ALL, ids=ids)
@pytest.mark.parametrize("key", [None, b"k"])
def test_all_excluded_gives_none(cls: PickerClass, key: bytes | None) -> None:
    candidates = [Candidate(0, 1.0), Candidate(1, 2.0), Candidate(2, 0.0)]
    picker = cls(candidates, Loads.for_pool(3), random.Random(1))
    for exclude in ({0, 1}, frozenset({0, 1, 2}), {0, 1, 7}):
        assert picker.pick(PickContext(hash_key=key, exclude=exclude)) is None
    assert picker.pick(PickContext(hash_key=key, exclude={0})) == 1


@pytest.mark.parametrize("cls", ALL, ids=ids)
@pytest.mark.parametrize("key", [None, b"k"])
def test_empty_pool_gives_none(cls: PickerClass, key: bytes | None) -> None:
    picker = cls([], Loads.for_pool(0), random.Random(1))
    assert picker.pick(PickContext(hash_key=key)) is None
    assert picker.pick(PickContext(hash_key=key, exclude={0})) is None


@pytest.mark.parametrize("cls", ALL, ids=ids)
@pytest.mark.parametrize("key", [None, b"k"])
def test_zero_and_negative_weights_are_never_picked(cls: PickerClass, key: bytes | None) -> None:
    candidates = [Candidate(0, 0.0), Candidate(1, 3.0), Candidate(2, -1.0), Candidate(3, 0.5)]
    loads = Loads.for_pool(4)
    loads.latency[:] = [0.001, 0.5, 0.001, 0.2]  # zero-weight ones look best
    loads.inflight[:] = [0, 9, 0, 4]
    picker = cls(candidates, loads, random.Random(2))
    got = {picker.pick(PickContext(hash_key=key)) for _ in range(300)}
    assert got <= {1, 3}
    only_zero = cls([Candidate(0, 0.0), Candidate(1, -2.0)], loads, random.Random(2))
    assert only_zero.pick(PickContext(hash_key=key)) is None


@pytest.mark.parametrize("cls", ALL, ids=ids)
@pytest.mark.parametrize("key", [None, b"k"])
def test_single_candidate(cls: PickerClass, key: bytes | None) -> None:
    picker = cls([Candidate(4, 2.5)], Loads.for_pool(5), random.Random(3))
    assert [picker.pick(PickContext(hash_key=key)) for _ in range(5)] == [4] * 5
    assert picker.pick(PickContext(hash_key=key, exclude={4})) is None


@pytest.mark.parametrize("name", sorted(PICKERS))
@pytest.mark.parametrize(
    "candidates",
    [
        [Candidate(0, float("nan"))],
        [Candidate(0, float("inf"))],
        [Candidate(-1, 1.0)],
        [Candidate(1, 1.0), Candidate(1, 2.0)],
    ],
    ids=["nan", "inf", "negative-index", "duplicate-index"],
)
def test_bad_candidates_are_rejected(name: str, candidates: list[Candidate]) -> None:
    with pytest.raises(ValueError, match="candidate"):
        make_picker(name, candidates, Loads.for_pool(2), random.Random(0))
