"""The Store contract (MemoryStore, SQLiteStore, EtcdStore on a real cluster), and what
only SQLite does."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.control.topo import first, step
from zonegate.control.etcd import EtcdStore
from zonegate.control.model import AuditEntry, DesiredState
from zonegate.control.sqlite import SQLiteStore
from zonegate.control.store import MemoryStore, Store
from zonegate.errors import StoreError, StoreUnavailable, VersionConflict


@pytest.fixture(params=["memory", "sqlite", "etcd"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    # A long poll interval: an append must wake waiters by itself (or by etcd's watch).
    s: Store
    if request.param == "memory":
        s = MemoryStore()
    elif request.param == "sqlite":
        s = SQLiteStore(tmp_path / "c.db", poll_interval=30)
    else:  # a real 3-member cluster (tests/control/conftest.py), a fresh key prefix
        cluster = request.getfixturevalue("cluster")
        s = EtcdStore(
            cluster.endpoints, prefix=f"/zonegate-test/{uuid.uuid4().hex}/", poll_interval=30
        )
    yield s
    await s.close()


async def fill(store: Store, n: int) -> list[tuple[DesiredState, AuditEntry]]:
    """Append versions 1..n; return them."""
    out = [first()]
    await store.append(*out[0], expected_version=0)
    while len(out) < n:
        state, audit = step(out[-1][0])
        await store.append(state, audit, expected_version=state.version - 1)
        out.append((state, audit))
    return out


# --- contract -----------------------------------------------------------------------


async def test_empty_store(store: Store) -> None:
    assert await store.latest() is None
    assert await store.get(1) is None
    assert await store.history() == []
    assert await store.wait_for(0, timeout=0.01) is None


async def test_append_latest_get_history(store: Store) -> None:
    versions = await fill(store, 5)
    assert await store.latest() == versions[-1][0]
    for state, _ in versions:
        assert await store.get(state.version) == state
    assert await store.get(0) is None
    assert await store.get(6) is None
    assert await store.history() == [a for _, a in versions]
    assert [a.version for a in await store.history(since=2, limit=2)] == [3, 4]
    assert await store.history(since=5) == []


async def test_stale_version_is_a_conflict(store: Store) -> None:
    versions = await fill(store, 2)
    state, audit = step(versions[0][0])  # made from version 1, which is no longer the latest
    with pytest.raises(VersionConflict) as info:
        await store.append(state, audit, expected_version=1)
    assert (info.value.expected, info.value.latest) == (1, 2)
    assert str(info.value) == (
        "version conflict: the change was made from version 1, but the latest version is 2"
    )
    assert isinstance(info.value, StoreError)
    assert await store.latest() == versions[1][0]


async def test_first_append_must_expect_zero(store: Store) -> None:
    await fill(store, 1)
    with pytest.raises(VersionConflict):
        await store.append(*first(), expected_version=0)


async def test_mismatched_versions_are_misuse(store: Store) -> None:
    state, audit = first()
    with pytest.raises(ValueError, match="does not follow"):
        await store.append(state, audit, expected_version=3)
    later, _ = step(state)
    with pytest.raises(ValueError, match="audit version 1 is not state version 2"):
        await store.append(later, audit, expected_version=1)
    with pytest.raises(ValueError, match=r"limit must be in 1\.\.1000"):
        await store.history(limit=0)
    with pytest.raises(ValueError, match="since must be"):
        await store.history(since=-1)
    assert await store.latest() is None


async def test_wait_for_answers_at_once_with_the_newest(store: Store) -> None:
    versions = await fill(store, 3)
    assert await store.wait_for(1, timeout=5) == versions[-1][0]


async def test_wait_for_times_out(store: Store) -> None:
    await fill(store, 2)
    started = time.monotonic()
    assert await store.wait_for(2, timeout=0.05) is None
    assert 0.04 < time.monotonic() - started < 1


async def test_wait_for_wakes_on_append(store: Store) -> None:
    (v1, _), *_ = await fill(store, 1)
    waiters = [asyncio.create_task(store.wait_for(1, timeout=10)) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert not any(w.done() for w in waiters)
    v2, audit = step(v1)
    started = time.monotonic()
    await store.append(v2, audit, expected_version=1)
    assert await asyncio.gather(*waiters) == [v2, v2, v2]
    assert time.monotonic() - started < 1  # woken, not polled (poll interval is 30 s)


async def test_two_appenders_racing_exactly_one_wins_per_version(store: Store) -> None:
    await fill(store, 1)
    for _ in range(20):
        latest = await store.latest()
        assert latest is not None
        a, b = step(latest, who="a"), step(latest, who="b")
        results = await asyncio.gather(
            store.append(*a, expected_version=latest.version),
            store.append(*b, expected_version=latest.version),
            return_exceptions=True,
        )
        assert sum(r is None for r in results) == 1
        assert sum(isinstance(r, VersionConflict) for r in results) == 1
    history = await store.history()
    assert [a.version for a in history] == list(range(1, 22))
    assert all(a.previous_version == a.version - 1 for a in history)


async def test_closed_store_is_unavailable(store: Store) -> None:
    await store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.latest()
    await store.close()  # twice is fine


# --- SQLite only --------------------------------------------------------------------


async def test_sqlite_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    async with SQLiteStore(path) as store:
        versions = await fill(store, 3)
    async with SQLiteStore(path) as store:
        assert await store.latest() == versions[-1][0]
        assert await store.history() == [a for _, a in versions]
        state, audit = step(versions[-1][0])
        await store.append(state, audit, expected_version=3)


async def test_sqlite_is_durable_wal_full_and_append_only(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    async with SQLiteStore(path) as store:
        await fill(store, 2)
        pragmas = await store._run(
            lambda conn: (
                conn.execute("PRAGMA journal_mode").fetchone()[0],
                conn.execute("PRAGMA synchronous").fetchone()[0],
            )
        )
        assert pragmas == ("wal", 2)  # 2: FULL
    conn = sqlite3.connect(path)
    try:
        for sql in ("UPDATE versions SET created = 0", "DELETE FROM versions"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(sql)
        assert conn.execute("SELECT count(*) FROM versions").fetchone()[0] == 2
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    finally:
        conn.close()


async def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    async with SQLiteStore(path) as store:
        with pytest.raises(StoreUnavailable, match="schema version 99 is newer"):
            await store.latest()


async def test_sqlite_two_connections_racing_exactly_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    async with SQLiteStore(path) as one, SQLiteStore(path) as two:
        await fill(one, 1)

        async def writer(store: SQLiteStore, who: str, until: int) -> list[int]:
            won = []
            while True:
                latest = await store.latest()
                assert latest is not None
                if latest.version >= until:
                    return won
                state, audit = step(latest, who)
                try:
                    await store.append(state, audit, expected_version=latest.version)
                except VersionConflict:
                    continue
                won.append(state.version)

        results = await asyncio.gather(
            writer(one, "a", 60), writer(two, "b", 60), writer(one, "c", 60), writer(two, "d", 60)
        )
        won = sorted(v for r in results for v in r)
        assert won == list(range(2, 61))
        history = await two.history()
        who = {a.version: a.who for a in history}
        for name, versions in zip("abcd", results, strict=True):
            assert all(who[v] == name for v in versions)


async def test_sqlite_wait_for_sees_appends_of_another_writer(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    async with (
        SQLiteStore(path, poll_interval=0.02) as follower,
        SQLiteStore(path) as writer,
    ):
        (v1, _), *_ = await fill(writer, 1)
        waiter = asyncio.create_task(follower.wait_for(1, timeout=10))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        v2, audit = step(v1)
        await writer.append(v2, audit, expected_version=1)
        assert await asyncio.wait_for(waiter, 2) == v2
        assert follower._poller is not None
        await asyncio.sleep(0.1)
        assert follower._poller.done()  # no waiter left: the poller stops


async def test_sqlite_close_wakes_waiters_with_unavailable(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "c.db", poll_interval=0.02)
    waiter = asyncio.create_task(store.wait_for(0, timeout=10))
    await asyncio.sleep(0.05)
    await store.close()
    with pytest.raises(StoreUnavailable):
        await waiter
