"""The runtime side of the control plane: follow the desired state, keep the last good.

A runtime (`zonegate lb`, `zonegate dns` or `zonegate httpdns` with `--control URL`)
runs one `ControlFollower`, started by `start_following`:

    start ── GET /v1/state from the first URL that answers ──► apply, write the cache
      │        none answers: load the cache file (last good copy), apply it
      ▼
    loop ── GET /v1/state?since=V (long-poll) ──► a newer version: apply, write the cache
             an error: try the next URL, back off (0.1 s doubling to 2 s); keep serving
             the version already applied

The cache is written atomically (temp file, fsync, rename), so a crash never leaves a
half-written copy. States are applied in version order only: an older or equal version
is never applied twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from zonegate.control.model import DesiredState

log = logging.getLogger("zonegate.control")

POLL_TIMEOUT = 30.0
BACKOFF_MIN = 0.1
BACKOFF_MAX = 2.0

Apply = Callable[[DesiredState], None]


@dataclass(frozen=True, slots=True)
class ControlOptions:
    """How a runtime follows the control plane (`--control`, `--control-cache`,
    `--control-token`)."""

    urls: tuple[str, ...] = ()
    """Control plane base URLs, tried in order; empty: follow nothing, the file alone."""
    cache: str | None = None
    """The last good state's file, read when no control plane answers at start."""
    token: str | None = None
    """A read token (Bearer), if the control plane requires one."""


NO_CONTROL = ControlOptions()
"""Follow no control plane: the topology file alone."""


async def start_following(opts: ControlOptions, on_state: Apply) -> ControlFollower | None:
    """Follow the control plane when `opts.urls` is set: the first state (from the
    control plane, else the cache) is applied before this returns, so a runtime that
    awaits it serves its first request with the control plane's config.

    Returns:
        The running follower (stop it with `stop()`), or None without URLs.
    """
    if not opts.urls:
        return None
    follower = ControlFollower(opts.urls, on_state, cache_path=opts.cache, token=opts.token)
    if not await follower.start():
        log.warning("no control plane answered and no cache: serving the file's config")
    return follower


class ControlFollower:
    """Follows a control plane and calls `on_state` with every newer version.

    Args:
        urls: control plane base URLs, tried in order.
        on_state: called (in the event loop) with each new state, oldest first.
        cache_path: where the last good state is kept; None: no cache.
        token: a read token (Bearer), if the control plane requires one.
    """

    def __init__(
        self,
        urls: Sequence[str],
        on_state: Apply,
        *,
        cache_path: str | None = None,
        token: str | None = None,
        poll_timeout: float = POLL_TIMEOUT,
    ) -> None:
        if not urls:
            raise ValueError("ControlFollower needs at least one control URL")
        self.urls = [u.rstrip("/") for u in urls]
        self.on_state = on_state
        self.cache_path = Path(cache_path) if cache_path else None
        self.poll_timeout = poll_timeout
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(headers=headers, timeout=poll_timeout + 5.0)
        self.version = 0
        self.source = ""
        self._current = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self, first_timeout: float = 3.0) -> bool:
        """Get a first state (control plane, else cache) and start following.

        Returns:
            Whether a state was applied (False: neither the control plane nor a cache).
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(first_timeout):
                for _ in range(len(self.urls)):
                    if await self._fetch(since=None):
                        break
        if self.version == 0:
            cached = self._load_cache()
            if cached is not None:
                log.warning(
                    "control plane unreachable at start: serving cached version %d from %s",
                    cached.version,
                    self.cache_path,
                )
                self._apply(cached, "cache")
        self._task = asyncio.get_running_loop().create_task(self._follow())
        return self.version > 0

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._client.aclose()

    async def _follow(self) -> None:
        backoff = BACKOFF_MIN
        while True:
            if await self._fetch(since=self.version):
                backoff = BACKOFF_MIN
                continue
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _fetch(self, since: int | None) -> bool:
        """One request to the current URL; False (and the next URL) on any failure."""
        url = self.urls[self._current]
        params = {} if since is None else {"since": str(since), "timeout": str(self.poll_timeout)}
        try:
            r = await self._client.get(f"{url}/v1/state", params=params)
        except httpx.HTTPError as e:
            self._next_url(f"{url}: {e.__class__.__name__}: {e}")
            return False
        if r.status_code == 304:
            return True
        if r.status_code != 200:
            self._next_url(f"{url}: HTTP {r.status_code} {r.text[:200]}")
            return False
        try:
            state = DesiredState.model_validate_json(r.content)
        except ValueError as e:
            self._next_url(f"{url}: invalid state: {e}")
            return False
        if state.version > self.version:
            self._apply(state, url)
            self._save_cache(state)
        return True

    def _next_url(self, why: str) -> None:
        log.warning("control plane: %s", why)
        self._current = (self._current + 1) % len(self.urls)

    def _apply(self, state: DesiredState, source: str) -> None:
        self.version = state.version
        self.source = source
        log.info("control version %d from %s", state.version, source)
        self.on_state(state)

    def _save_cache(self, state: DesiredState) -> None:
        path = self.cache_path
        if path is None:
            return
        try:
            write_cache_file(path, state.model_dump_json())
        except OSError as e:
            log.warning("cannot write control cache %s: %s", path, e)

    def _load_cache(self) -> DesiredState | None:
        path = self.cache_path
        if path is None or not path.exists():
            return None
        try:
            return DesiredState.model_validate(json.loads(path.read_text()))
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable control cache %s: %s", path, e)
            return None


def write_cache_file(path: str | os.PathLike[str], text: str) -> None:
    """Write a last-good state file atomically: temp file, fsync, rename.

    A crash (or a concurrent reader) sees the old file or the new one, never half of
    one. Shared by `ControlFollower` and the client SDK (`zonegate.client`), so both
    write the same format (the `DesiredState` JSON) the same way.

    Raises:
        OSError: the directory cannot be created or the file written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A unique temp name: several writers in one process (threads) never share one.
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with open(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
