"""Where versions live: the `Store` protocol, and an in-memory store for tests.

A store persists what `service.apply` decided and nothing more: it never looks inside
a state. Its one rule is optimistic concurrency: `append(state, audit,
expected_version=V)` stores version V + 1 only if V is still the latest version, and
raises `VersionConflict` otherwise, atomically (two writers racing from V: exactly
one wins). The history is append-only: a version, once acknowledged, is never
changed or removed, and a rollback is a new version.

Backends: `MemoryStore` (this module; one process, nothing survives it; the fake for
API tests), `sqlite.SQLiteStore` (the default: durable, one machine), and next an
etcd store (survives a zone). All implement `Store`.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, Self

from zonegate.control.model import AuditEntry, DesiredState
from zonegate.errors import StoreUnavailable, VersionConflict

HISTORY_LIMIT_MAX = 1000
"""The most entries one `history` call returns."""


class Store(Protocol):
    """Durable, versioned, append-only storage of desired states and their audit."""

    async def latest(self) -> DesiredState | None:
        """The newest state, or None if the store is empty."""
        ...

    async def append(
        self, state: DesiredState, audit: AuditEntry, *, expected_version: int
    ) -> None:
        """Store a new version if `expected_version` is still the latest.

        When this returns, the version is durable (it survives a crash of the process).

        Args:
            state: The new state; its version must be `expected_version + 1`.
            audit: Its audit entry, of the same version.
            expected_version: The version the change was made from; 0 for the first
                version of an empty store.

        Raises:
            VersionConflict: The latest stored version is not `expected_version`.
            ValueError: The versions of state, audit and expected_version disagree.
            StoreUnavailable: The store cannot be written.
        """
        ...

    async def get(self, version: int) -> DesiredState | None:
        """The state of one version, or None if there is no such version."""
        ...

    async def history(self, since: int = 0, limit: int = 100) -> list[AuditEntry]:
        """Audit entries of the versions after `since` (exclusive), oldest first.

        Args:
            since: Return versions > since.
            limit: At most this many (1 to HISTORY_LIMIT_MAX).
        """
        ...

    async def wait_for(
        self,
        after_version: int,
        timeout: float,  # noqa: ASYNC109 (a long-poll answers None at its timeout)
    ) -> DesiredState | None:
        """Long-poll: the newest state once a version > after_version exists.

        Returns at once if there is one already. The state returned is the newest, not
        necessarily `after_version + 1` (a follower wants the latest; `history` gives
        the steps in between).

        Args:
            after_version: The version the caller has.
            timeout: Seconds to wait at most.

        Returns:
            The newest state, or None if no newer version appeared in time.
        """
        ...

    async def close(self) -> None:
        """Release the store; later calls raise StoreUnavailable."""
        ...


def check_append(state: DesiredState, audit: AuditEntry, expected_version: int) -> None:
    """The argument checks every `Store.append` makes before storing.

    Raises:
        ValueError: state.version is not expected_version + 1, or audit.version is
            not state.version, or audit.previous_version is not expected_version.
    """
    if state.version != expected_version + 1:
        raise ValueError(
            f"state version {state.version} does not follow expected version {expected_version}"
        )
    if audit.version != state.version:
        raise ValueError(f"audit version {audit.version} is not state version {state.version}")
    if audit.previous_version != expected_version:
        raise ValueError(
            f"audit previous_version {audit.previous_version} is not {expected_version}"
        )


def check_history_args(since: int, limit: int) -> None:
    """Raise ValueError unless `since >= 0` and `1 <= limit <= HISTORY_LIMIT_MAX`."""
    if since < 0:
        raise ValueError(f"since must be ≥ 0, got {since}")
    if not 1 <= limit <= HISTORY_LIMIT_MAX:
        raise ValueError(f"limit must be in 1..{HISTORY_LIMIT_MAX}, got {limit}")


class VersionSignal:
    """The newest version a shared store's object has seen, and the waiters on it.

    For stores that other processes write too (SQLite, etcd): what this object learns
    (its own appends, its reads, its poller or watcher) goes through `_observe`, which
    wakes every `wait_for` waiting on `_changed`; `_waiters` counts those, so the
    poller or watcher runs only while someone waits. Also an async context manager
    that closes the store.
    """

    def __init__(self) -> None:
        self._changed = asyncio.Condition()
        self._known = 0
        """The newest version this object has seen."""
        self._waiters = 0
        self._closed = False

    async def close(self) -> None:  # pragma: no cover - every store has its own
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _observe(self, version: int | None) -> None:
        if version is not None and version > self._known:
            self._known = version
            async with self._changed:
                self._changed.notify_all()

    async def _mark_closed(self) -> bool:
        """Mark the store closed and wake every waiter; False if it already was."""
        if self._closed:
            return False
        self._closed = True
        async with self._changed:
            self._changed.notify_all()
        return True


class MemoryStore:
    """A `Store` in memory: one process, lost when it ends (tests, demos)."""

    def __init__(self) -> None:
        self._states: list[DesiredState] = []
        self._audits: list[AuditEntry] = []
        self._changed = asyncio.Condition()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("store is closed")

    async def latest(self) -> DesiredState | None:
        self._check_open()
        return self._states[-1] if self._states else None

    async def append(
        self, state: DesiredState, audit: AuditEntry, *, expected_version: int
    ) -> None:
        self._check_open()
        check_append(state, audit, expected_version)
        if len(self._states) != expected_version:
            raise VersionConflict(expected_version, len(self._states) or None)
        self._states.append(state)
        self._audits.append(audit)
        async with self._changed:
            self._changed.notify_all()

    async def get(self, version: int) -> DesiredState | None:
        self._check_open()
        return self._states[version - 1] if 1 <= version <= len(self._states) else None

    async def history(self, since: int = 0, limit: int = 100) -> list[AuditEntry]:
        self._check_open()
        check_history_args(since, limit)
        return self._audits[since : since + limit]

    async def wait_for(
        self,
        after_version: int,
        timeout: float,  # noqa: ASYNC109 (a long-poll answers None at its timeout)
    ) -> DesiredState | None:
        self._check_open()
        if len(self._states) > after_version:
            return self._states[-1]
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: len(self._states) > after_version)
        except TimeoutError:
            return None
        return self._states[-1]

    async def close(self) -> None:
        self._closed = True


__all__ = [
    "HISTORY_LIMIT_MAX",
    "MemoryStore",
    "Store",
    "VersionSignal",
    "check_append",
    "check_history_args",
]
