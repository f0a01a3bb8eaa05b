"""The follower's decisions (FollowerState: no I/O) and the background Worker."""

from __future__ import annotations

import json
import threading

import pytest

from zonegate.client._follow import (
    BACKOFF_MAX,
    BACKOFF_MIN,
    Endpoint,
    FollowerState,
    Worker,
    default_cache_path,
    endpoints_of,
)
from zonegate.clock import FakeClock

SPLIT = {"api.example.test": {"zones": {"cp": {"lower": 0, "upper": 100, "domain": "a"}}}}


def state_doc(version: int) -> bytes:
    return json.dumps({"version": version, "split": SPLIT, "zones": {}}).encode()


def make(clock, endpoints=None, interval=None, cache=None):
    eps = endpoints or [Endpoint("http://a"), Endpoint("http://b")]
    return FollowerState(eps, cache, interval, clock.now)


def test_endpoints_accept_a_list_or_a_mapping_per_zone():
    assert endpoints_of(["http://a/", "https://b"]) == [Endpoint("http://a"), Endpoint("https://b")]
    assert endpoints_of({"cp": "http://a", "yq": ["http://b", "http://c"]}) == [
        Endpoint("http://a", "cp"),
        Endpoint("http://b", "yq"),
        Endpoint("http://c", "yq"),
    ]
    with pytest.raises(ValueError, match="not a str"):
        endpoints_of("http://a")
    with pytest.raises(ValueError, match="not an http"):
        endpoints_of(["ftp://a"])


def test_default_cache_path_is_per_control_set(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    a = default_cache_path([Endpoint("http://a"), Endpoint("http://b")])
    assert a == default_cache_path([Endpoint("http://b"), Endpoint("http://a")])
    assert a != default_cache_path([Endpoint("http://c")])
    assert a.parent == tmp_path / "zonegate"


def test_a_higher_version_header_asks_for_one_refresh():
    clock = FakeClock()
    s = make(clock)
    s.offer(s.endpoints[0], state_doc(3))
    assert s.due_in(clock.now()) is None
    assert not s.announce(3)
    assert s.announce(5)
    assert not s.announce(4)  # already wanted
    assert s.due_in(clock.now()) == 0.0
    s.offer(s.endpoints[0], state_doc(5))
    s.round_done(True, clock.now())
    assert s.due_in(clock.now()) is None


def test_behind_after_a_round_backs_off_exponentially():
    clock = FakeClock()
    s = make(clock)
    s.offer(s.endpoints[0], state_doc(3))
    s.announce(9)
    waits = []
    for _ in range(8):
        s.round_done(True, clock.now())  # answered, but still version 3
        waits.append(s.due_in(clock.now()))
    assert waits[0] == pytest.approx(BACKOFF_MIN)
    assert waits == sorted(waits)
    assert waits[-1] == pytest.approx(BACKOFF_MAX)


def test_avoid_puts_the_failing_zones_endpoints_last_and_last_good_first():
    clock = FakeClock()
    eps = [Endpoint("http://cp1", "cp"), Endpoint("http://yq1", "yq"), Endpoint("http://cp2", "cp")]
    s = make(clock, eps)
    s.request(avoid="cp")
    assert [e.url for e in s.order()] == ["http://yq1", "http://cp1", "http://cp2"]
    s.offer(eps[2], state_doc(1))  # cp2 answered last
    s.round_done(True, clock.now())
    assert [e.url for e in s.order()] == ["http://cp2", "http://cp1", "http://yq1"]


def test_older_or_equal_versions_are_never_applied():
    clock = FakeClock()
    s = make(clock)
    seen = []
    s.listeners.append(lambda c: seen.append(c.version))
    assert s.offer(s.endpoints[0], state_doc(4))[1]
    assert not s.offer(s.endpoints[0], state_doc(4))[1]
    assert not s.offer(s.endpoints[1], state_doc(2))[1]
    assert s.version == 4
    assert seen == [4]
    with pytest.raises(ValueError):  # noqa: PT011
        s.offer(s.endpoints[0], b"not json")


def test_periodic_refresh(tmp_path):
    clock = FakeClock()
    s = make(clock, interval=60.0)
    s.offer(s.endpoints[0], state_doc(1))
    s.round_done(True, clock.now())
    assert s.due_in(clock.now()) == 60.0
    clock.advance(61)
    assert s.due_in(clock.now()) == 0.0


def test_cache_round_trip_and_unreadable_cache(tmp_path):
    clock = FakeClock()
    path = tmp_path / "sub" / "cache.json"
    s = make(clock, cache=path)
    assert s.load_cache() is None
    s.save_cache(state_doc(7))
    assert s.load_cache().version == 7
    path.write_text("{broken")
    assert s.load_cache() is None


def test_worker_runs_jobs_in_time_order_and_dedupes_keys():
    import time

    w = Worker("test-worker", time.monotonic)
    ran: list[str] = []
    done = threading.Event()
    w.submit("b", lambda: ran.append("b"), delay=0.05)
    w.submit("a", lambda: ran.append("a"))
    w.submit("a", lambda: ran.append("a-again"))  # already due no later: dropped
    w.submit("c", done.set, delay=0.1)
    assert done.wait(5)
    w.stop()
    assert ran == ["a", "b"]
