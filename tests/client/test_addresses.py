"""HTTPDNS cache freshness and address ranking (pure; `now` passed in)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zonegate.client._addresses import AddressBook, Answer, CachePolicy, Freshness, RankPolicy

POLICY = CachePolicy(min_ttl=1.0, max_ttl=600.0, refresh_ahead=0.75, max_stale=30.0)


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (0.0, Freshness.FRESH),
        (7.4, Freshness.FRESH),
        (7.5, Freshness.REFRESH),
        (9.99, Freshness.REFRESH),
        (10.0, Freshness.STALE),
        (39.9, Freshness.STALE),
        (40.0, Freshness.EXPIRED),
    ],
)
def test_freshness_by_age(age, expected):
    a = Answer("api-cp.example.test", ("10.0.0.1",), 100.0, 10.0, "httpdns")
    assert a.freshness(100.0 + age, POLICY) is expected


def test_ttl_is_clamped():
    assert POLICY.clamp(0) == 1.0
    assert POLICY.clamp(30) == 30.0
    assert POLICY.clamp(86400) == 600.0
    assert POLICY.clamp(math.nan) == 1.0


@pytest.mark.parametrize(
    "kw",
    [
        {"min_ttl": -1},
        {"min_ttl": 10, "max_ttl": 5},
        {"refresh_ahead": 0},
        {"refresh_ahead": 1.5},
        {"max_stale": -1},
        {"fallback_ttl": 0.5},
    ],
)
def test_cache_policy_rejects_bad_values(kw):
    with pytest.raises(ValueError):  # noqa: PT011
        CachePolicy(**kw)


def test_no_history_keeps_the_resolver_order_and_drops_duplicates():
    book = AddressBook()
    assert book.rank(["b", "a", "b", "c"], 0.0) == ["b", "a", "c"]


def test_a_recent_failure_goes_last_until_the_penalty_ends_or_it_succeeds():
    book = AddressBook(RankPolicy(penalty=10.0))
    book.record("a", False, 100.0)
    assert book.rank(["a", "b"], 101.0) == ["b", "a"]
    # After the penalty the failure rate still ranks it behind a clean address...
    assert book.rank(["a", "b"], 111.0) == ["b", "a"]
    # ...and once its decayed failures are tiny next to fresh successes it is back.
    for i in range(20):
        book.record("a", True, 300.0 + i)
    book.record("b", True, 250.0)
    assert book.rank(["b", "a"], 320.0) == ["a", "b"]


def test_lower_failure_rate_first_then_recent_success_then_more_successes():
    book = AddressBook(RankPolicy(penalty=0.0, half_life=1e9, rate_step=0.1))
    for _ in range(5):
        book.record("flaky", True, 1.0)
        book.record("flaky", False, 1.0)
    book.record("flaky", True, 2.0)  # no penalty: its last outcome is a success
    book.record("old", True, 1.0)
    book.record("recent", True, 5.0)
    assert book.rank(["flaky", "old", "recent", "new"], 10.0) == ["recent", "old", "new", "flaky"]
    book.record("old", True, 5.0)
    book.record("old", True, 5.0)
    assert book.rank(["recent", "old"], 10.0) == ["old", "recent"]


def test_failures_decay_with_the_half_life():
    book = AddressBook(RankPolicy(half_life=10.0))
    book.record("a", True, 0.0)
    book.record("a", False, 0.0)
    assert book.failure_rate("a", 0.0) == pytest.approx(0.5)
    book.record("a", True, 10.0)  # the old pair now weighs 1/2
    assert book.failure_rate("a", 10.0) == pytest.approx(0.5 / 2.0)
    assert book.failure_rate("unknown", 10.0) == 0.0


def test_memory_is_bounded():
    book = AddressBook(RankPolicy(max_addresses=3))
    for i in range(10):
        book.record(f"10.0.0.{i}", True, float(i))
    assert len(book) == 3


events = st.lists(st.tuples(st.sampled_from("abcde"), st.booleans(), st.floats(0, 5)), max_size=40)


@given(events, st.lists(st.sampled_from("abcdef"), max_size=8))
def test_rank_is_a_permutation_and_a_fresh_failure_never_beats_a_clean_address(evs, addrs):
    book = AddressBook(RankPolicy(penalty=1000.0))
    now = 0.0
    for addr, ok, dt in evs:
        now += dt
        book.record(addr, ok, now)
    ranked = book.rank(addrs, now)
    assert sorted(ranked) == sorted(set(addrs))
    # An address never seen ranks ahead of one whose last outcome was a failure.
    last: dict[str, bool] = {}
    for addr, ok, _ in evs:
        last[addr] = ok
    for bad in [a for a in ranked if last.get(a) is False]:
        for clean in [a for a in ranked if a not in last]:
            assert ranked.index(clean) < ranked.index(bad)
