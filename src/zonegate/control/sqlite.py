"""The default store: one SQLite file, durable across crashes of the process.

Layout: one append-only table, one row per version::

    versions(version INTEGER PRIMARY KEY, state TEXT (JSON), audit TEXT (JSON),
             created REAL (unix seconds when stored))

Triggers refuse UPDATE and DELETE on it, so the history is append-only even against
a hand-run sqlite3 shell. `PRAGMA user_version` holds the schema version.

Durability: WAL journal with `synchronous=FULL`, so every COMMIT fsyncs the WAL before
`append` returns: an acknowledged version survives kill -9 of the process and power
loss of the machine (as far as the disk honours fsync). A crash in the middle of an
append leaves either the whole row or nothing.

Concurrency: `append` runs `BEGIN IMMEDIATE` (take the write lock), compares
`max(version)` with `expected_version`, inserts and commits, all in one transaction:
of two writers racing from the same version, in this process or another one on the
same file, exactly one wins and the other gets `VersionConflict`. Every SQLite call
runs on one worker thread owned by the store (a single-thread executor holding the
one connection), so the event loop never blocks on disk and the connection never
crosses threads. A caller cancelled while its append is on the worker may still see
that append committed: every acknowledged version is stored, but a stored version is
not always acknowledged.

Long-poll: `wait_for` wakes on an append made through this store object at once, and
on an append by another process (or another store object) within `poll_interval`
(100 ms by default): while anyone waits, one poller task per store reads
`max(version)` at that interval, however many callers wait.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from zonegate.control.model import AuditEntry, DesiredState
from zonegate.control.store import VersionSignal, check_append, check_history_args
from zonegate.errors import StoreUnavailable, VersionConflict

T = TypeVar("T")

SCHEMA_VERSION = 1
"""`PRAGMA user_version` of files this module writes."""

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS versions (
        version INTEGER PRIMARY KEY CHECK (version >= 1),
        state TEXT NOT NULL CHECK (json_valid(state)),
        audit TEXT NOT NULL CHECK (json_valid(audit)),
        created REAL NOT NULL
    )""",
    """CREATE TRIGGER IF NOT EXISTS versions_append_only_u BEFORE UPDATE ON versions
    BEGIN SELECT RAISE(ABORT, 'zonegate history is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS versions_append_only_d BEFORE DELETE ON versions
    BEGIN SELECT RAISE(ABORT, 'zonegate history is append-only'); END""",
)


class SQLiteStore(VersionSignal):
    """A `Store` in one SQLite file (see the module docstring).

    Args:
        path: The database file; created (with its schema) if missing.
        poll_interval: Seconds between checks for versions appended by other
            processes while someone waits in `wait_for`.
        busy_timeout: Seconds to wait for another process's write lock before
            `StoreUnavailable`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        poll_interval: float = 0.1,
        busy_timeout: float = 5.0,
    ) -> None:
        self.path = os.fspath(path)
        self.poll_interval = poll_interval
        self.busy_timeout = busy_timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zonegate-sqlite")
        self._conn: sqlite3.Connection | None = None
        """Opened, used and closed on the worker thread only."""
        self._poller: asyncio.Task[None] | None = None
        super().__init__()

    # --- Store -----------------------------------------------------------------------

    async def latest(self) -> DesiredState | None:
        """The newest state, or None if the store is empty."""
        return await self._run(_latest)

    async def append(
        self, state: DesiredState, audit: AuditEntry, *, expected_version: int
    ) -> None:
        """Store version `expected_version + 1` durably (see `Store.append`)."""
        check_append(state, audit, expected_version)
        await self._run(_append, state, audit, expected_version)
        await self._observe(state.version)

    async def get(self, version: int) -> DesiredState | None:
        """The state of one version, or None."""
        return await self._run(_get, version)

    async def history(self, since: int = 0, limit: int = 100) -> list[AuditEntry]:
        """Audit entries of versions > since, oldest first, at most `limit`."""
        check_history_args(since, limit)
        return await self._run(_history, since, limit)

    async def wait_for(
        self,
        after_version: int,
        timeout: float,  # noqa: ASYNC109 (a long-poll answers None at its timeout)
    ) -> DesiredState | None:
        """The newest state once a version > after_version exists, or None after
        `timeout` seconds (see `Store.wait_for`)."""
        await self._observe(await self._run(_max_version))
        if self._known <= after_version:
            self._waiters += 1
            try:
                self._ensure_poller()
                async with asyncio.timeout(max(0.0, timeout)), self._changed:
                    await self._changed.wait_for(
                        lambda: self._known > after_version or self._closed
                    )
            except TimeoutError:
                return None
            finally:
                self._waiters -= 1
        return await self.latest()

    async def close(self) -> None:
        """Close the connection and the worker; later calls raise StoreUnavailable."""
        if not await self._mark_closed():
            return
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.wait([self._poller])  # not `await`: its CancelledError is not ours
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_conn)
        self._executor.shutdown(wait=False)

    # --- internals -------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self._closed:
            raise StoreUnavailable(f"store {self.path} is closed")
        loop = asyncio.get_running_loop()
        job = functools.partial(self._in_worker, fn, *args)
        try:
            return await loop.run_in_executor(self._executor, job)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"store {self.path}: {exc}") from exc

    def _in_worker(self, fn: Callable[..., T], *args: object) -> T:
        if self._conn is None:
            self._conn = _open(self.path, self.busy_timeout)
        return fn(self._conn, *args)

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name=f"sqlite-poll {self.path}")

    async def _poll(self) -> None:
        while self._waiters > 0 and not self._closed:
            await asyncio.sleep(self.poll_interval)
            try:
                version = await self._run(_max_version)
            except StoreUnavailable:
                continue  # closed (the loop ends), or locked/failing: try again
            await self._observe(version)


# --- on the worker thread ---------------------------------------------------------


def _open(path: str, busy_timeout: float) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        mode = _journal_mode_wal(conn, busy_timeout)
        if mode.lower() != "wal":
            raise StoreUnavailable(f"store {path}: cannot use WAL journal (got {mode!r})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = conn.execute("PRAGMA user_version").fetchone()[0]
            if found > SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"store {path}: schema version {found} is newer than this zonegate's "
                    f"({SCHEMA_VERSION})"
                )
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
    except BaseException:
        conn.close()
        raise
    return conn


def _journal_mode_wal(conn: sqlite3.Connection, busy_timeout: float) -> str:
    # Switching a new file to WAL needs an exclusive lock, and SQLite answers BUSY at
    # once instead of calling the busy handler when another process is opening the
    # same file: retry until busy_timeout, as the handler would.
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(0.005)


def _max_version(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT max(version) FROM versions").fetchone()
    return None if row[0] is None else int(row[0])


def _latest(conn: sqlite3.Connection) -> DesiredState | None:
    row = conn.execute("SELECT state FROM versions ORDER BY version DESC LIMIT 1").fetchone()
    return None if row is None else DesiredState.model_validate_json(row[0])


def _get(conn: sqlite3.Connection, version: int) -> DesiredState | None:
    row = conn.execute("SELECT state FROM versions WHERE version = ?", (version,)).fetchone()
    return None if row is None else DesiredState.model_validate_json(row[0])


def _history(conn: sqlite3.Connection, since: int, limit: int) -> list[AuditEntry]:
    rows = conn.execute(
        "SELECT audit FROM versions WHERE version > ? ORDER BY version LIMIT ?", (since, limit)
    ).fetchall()
    return [AuditEntry.model_validate_json(row[0]) for row in rows]


def _append(
    conn: sqlite3.Connection, state: DesiredState, audit: AuditEntry, expected: int
) -> None:
    state_json, audit_json = state.model_dump_json(), audit.model_dump_json()
    conn.execute("BEGIN IMMEDIATE")
    try:
        latest = _max_version(conn)
        if (latest or 0) != expected:
            raise VersionConflict(expected, latest)
        try:
            conn.execute(
                "INSERT INTO versions (version, state, audit, created) VALUES (?, ?, ?, ?)",
                (state.version, state_json, audit_json, time.time()),
            )
        except sqlite3.IntegrityError:
            # Only a writer that skipped the check above could get here first.
            raise VersionConflict(expected, _max_version(conn)) from None
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


__all__ = ["SCHEMA_VERSION", "SQLiteStore"]
