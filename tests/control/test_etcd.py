"""EtcdStore on a real 3-member etcd cluster (Debian etcd-server) on loopback: the Store
contract, two instances (two control planes) on one cluster, watch propagation, and
losing a member."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from tests.control.etcd_cluster import EtcdCluster
from tests.control.etcd_peers import holding_member, slow_proxy
from tests.control.test_store import fill
from tests.control.topo import first, step
from tests.peers.processes import refused_port
from zonegate.control.etcd import EtcdStore, parse_etcd_url
from zonegate.control.server import StoreUrlError, open_store
from zonegate.errors import StoreUnavailable, VersionConflict

T = TypeVar("T")

PROPAGATION: list[float] = []
"""Measured seconds from an append on one instance to wait_for waking on the other."""


@pytest.fixture
def prefix() -> str:
    return f"/zonegate-test/{uuid.uuid4().hex}/"


@pytest.fixture
async def store(cluster: EtcdCluster, prefix: str) -> AsyncIterator[EtcdStore]:
    # A long poll interval: wake-ups must come from the append or the watch.
    s = EtcdStore(cluster.endpoints, prefix=prefix, poll_interval=30)
    yield s
    await s.close()


@pytest.fixture
async def other(cluster: EtcdCluster, prefix: str) -> AsyncIterator[EtcdStore]:
    """A second instance on the same prefix (another control plane), endpoints rotated."""
    endpoints = cluster.endpoints[1:] + cluster.endpoints[:1]
    s = EtcdStore(endpoints, prefix=prefix, poll_interval=30)
    yield s
    await s.close()


# The Store contract runs on etcd too: tests/control/test_store.py. Here: what only
# etcd does (two instances, watch, members).


async def test_history_orders_by_number_past_nine(store: EtcdStore) -> None:
    versions = await fill(store, 12)
    assert [a.version for a in await store.history(since=8)] == [9, 10, 11, 12]
    assert await store.latest() == versions[-1][0]


async def test_two_instances_racing_exactly_one_wins_per_version(
    store: EtcdStore, other: EtcdStore
) -> None:
    await fill(store, 1)
    for _ in range(10):
        latest = await store.latest()
        assert latest is not None
        a, b = step(latest, who="a"), step(latest, who="b")
        results = await asyncio.gather(
            store.append(*a, expected_version=latest.version),
            other.append(*b, expected_version=latest.version),
            return_exceptions=True,
        )
        assert sum(r is None for r in results) == 1
        assert sum(isinstance(r, VersionConflict) for r in results) == 1
    history = await other.history()
    assert [a.version for a in history] == list(range(1, 12))


async def test_close_wakes_waiters(store: EtcdStore) -> None:
    waiter = asyncio.create_task(store.wait_for(0, timeout=10))
    await asyncio.sleep(0.1)
    await store.close()
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(waiter, 2)


async def test_no_member_answering_is_unavailable() -> None:
    dead = [f"127.0.0.1:{refused_port()}" for _ in range(2)]
    async with EtcdStore(dead, timeout=0.3) as store:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="no endpoint answered"):
            await store.latest()
        assert time.monotonic() - started < 1.5


async def test_a_member_that_holds_requests_costs_one_attempt_not_the_deadline(
    cluster: EtcdCluster, prefix: str
) -> None:
    """Issue 12 item 18: a member that takes a write and never answers (a follower
    during an election) used to get the whole 2 s deadline, then 503. Each attempt now
    has its own short timeout and the next member is tried within the deadline."""
    acked = [first()]

    async def through_holder(op: Callable[[EtcdStore], Awaitable[T]]) -> T:
        # a fresh store starts at its first endpoint: the holding member
        async with EtcdStore([holder, *cluster.endpoints], prefix=prefix) as store:
            return await op(store)

    async with holding_member() as holder:
        await through_holder(lambda s: s.append(*acked[0], expected_version=0))
        for i in range(3):
            state, audit = step(acked[-1][0], who=f"held-{i}")
            await through_holder(lambda s: s.append(state, audit, expected_version=i + 1))  # noqa: B023
            acked.append((state, audit))
        assert await through_holder(lambda s: s.history()) == [a for _, a in acked]
        assert await through_holder(lambda s: s.latest()) == acked[-1][0]


async def test_a_slow_cluster_gets_longer_attempts(cluster: EtcdCluster, prefix: str) -> None:
    """Every member answers after 0.35 s, beyond the first attempt timeout: the store
    doubles the attempt timeout after a round of timeouts instead of failing, and an
    append whose timed-out attempt was applied is recognised as ours (not a conflict)."""
    async with contextlib.AsyncExitStack() as stack:
        slow = [await stack.enter_async_context(slow_proxy(e, 0.35)) for e in cluster.endpoints]
        store = EtcdStore(slow, prefix=prefix, timeout=3, attempt_timeout=0.2, poll_interval=30)
        stack.push_async_callback(store.close)
        acked = await fill(store, 3)
        assert await store.history() == [a for _, a in acked]
        assert await store.latest() == acked[-1][0]


def test_attempt_timeout_must_fit_the_deadline() -> None:
    for bad in (0, -1, 3):
        with pytest.raises(ValueError, match="attempt_timeout"):
            EtcdStore(["127.0.0.1:1"], timeout=2, attempt_timeout=bad)


# --- two control planes -------------------------------------------------------------


async def test_two_instances_serve_the_same_versions(store: EtcdStore, other: EtcdStore) -> None:
    versions = await fill(store, 3)
    assert await other.latest() == versions[-1][0]
    assert await other.history() == [a for _, a in versions]
    state, audit = step(versions[-1][0], who="other")
    await other.append(state, audit, expected_version=3)
    assert await store.latest() == state
    assert await store.get(4) == state


async def test_write_on_one_wakes_wait_for_on_the_other(store: EtcdStore, other: EtcdStore) -> None:
    await fill(store, 1)
    for n in range(1, 6):
        waiter = asyncio.create_task(other.wait_for(n, timeout=10))
        await asyncio.sleep(0.15)  # the watch is set up
        assert not waiter.done()
        latest = await store.latest()
        assert latest is not None
        state, audit = step(latest)
        await store.append(state, audit, expected_version=n)
        started = time.monotonic()
        assert await asyncio.wait_for(waiter, 5) == state
        elapsed = time.monotonic() - started
        PROPAGATION.append(elapsed)
        assert elapsed < 1  # the watch, not the 30 s poll
    print(f"\npropagation (append acked -> wait_for woke on the other): {PROPAGATION}")


# --- losing a member ----------------------------------------------------------------


async def test_killing_a_member_loses_nothing_and_writes_continue(
    cluster: EtcdCluster, store: EtcdStore, other: EtcdStore
) -> None:
    acked = await fill(store, 5)
    waiter = asyncio.create_task(other.wait_for(5, timeout=15))
    await asyncio.sleep(0.15)
    # Kill the leader: the survivors must elect a new one, and the instance whose
    # preferred member died must fail over.
    victim = cluster.leader()
    cluster.kill(victim)
    try:
        killed_at = time.monotonic()
        writers = (store, other)
        for i in range(10):
            writer = writers[i % 2]
            latest = await writer.latest()
            assert latest is not None
            state, audit = step(latest, who=f"after-kill-{i}")
            await writer.append(state, audit, expected_version=latest.version)
            acked.append((state, audit))
            if i == 0:
                first_write = time.monotonic() - killed_at
        assert first_write < 3
        assert (await asyncio.wait_for(waiter, 5)).version >= 6
        for s in writers:
            assert await s.history() == [a for _, a in acked]
            assert await s.latest() == acked[-1][0]
    finally:
        cluster.restart(victim)
    # the restarted member catches up and serves everything acknowledged
    only0 = EtcdStore([cluster.endpoints[victim]], prefix=store.prefix, timeout=5)
    try:
        assert await only0.history() == [a for _, a in acked]
    finally:
        await only0.close()


# --- the control plane's store URL --------------------------------------------------


def test_parse_etcd_url() -> None:
    assert parse_etcd_url("etcd://127.0.0.1:2379,10.0.0.2:2379") == (
        ["http://127.0.0.1:2379", "http://10.0.0.2:2379"],
        "/zonegate/",
    )
    assert parse_etcd_url("etcd://h:1/cp-a") == (["http://h:1"], "/cp-a/")
    for bad in ("etcd://", "etcd://host", "etcd://h:x", "etcd://h:1,:2"):
        with pytest.raises(ValueError, match="etcd"):
            parse_etcd_url(bad)


async def test_open_store_etcd_url(cluster: EtcdCluster, tmp_path: Path) -> None:
    hosts = ",".join(e.removeprefix("http://") for e in cluster.endpoints)
    url = f"etcd://{hosts}/zonegate-test/{uuid.uuid4().hex}"
    s, shown = open_store(url, str(tmp_path))
    try:
        assert isinstance(s, EtcdStore)
        assert shown == url
        await fill(s, 2)
        latest = await s.latest()
        assert latest is not None
        assert latest.version == 2
    finally:
        await s.close()
    with pytest.raises(StoreUrlError, match="no etcd endpoint"):
        open_store("etcd://", str(tmp_path))
