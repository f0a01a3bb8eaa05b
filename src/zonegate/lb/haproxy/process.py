"""Supervise one HAProxy master-worker process (shell).

Theory of operation
-------------------
`HaproxyProcess.start` runs ``haproxy -W -S <master.sock> -f <cfg> -p <pidfile>`` as
a child in its own process group. It is ready when its master lists a worker and that
worker answers `show info` on the stats socket; if HAProxy exits first, start raises
`HaproxyStartError` with HAProxy's own alerts.

::

    start ──► ready ──(exits by itself)──► log, restarts += 1, back-off ──► start
                │                              (0.1 s doubling to 5 s; reset once it
                │                               stayed up STABLE_AFTER seconds)
                ├─ reload: `reload` on the master socket, then `show proc` until the
                │          master's reload count moves: failed -> HaproxyReloadError
                └─ stop: SIGUSR1 (soft stop: finish in-flight requests), after the
                         drain timeout SIGTERM, then SIGKILL to the whole group

No HAProxy outlives zonegate: the master gets PR_SET_PDEATHSIG (SIGTERM when the
thread that started it dies, so start it from the event loop's thread), and its
workers exit when their master does. HAProxy's output is read continuously and
logged; the last lines are kept for error messages.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Protocol

from zonegate.errors import TransportError, ZonegateError
from zonegate.lb.haproxy.runtime import MasterClient, RuntimeClient

log = logging.getLogger("zonegate.lb.haproxy")

MIN_VERSION = (2, 6)
"""The oldest HAProxy this engine drives (Debian 12's)."""
READY_TIMEOUT = 10.0
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
STABLE_AFTER = 10.0
"""Seconds up after which a crash counts as the first again (back-off reset)."""
KILL_GRACE = 2.0
"""Seconds between SIGTERM (hard stop) and SIGKILL at stop."""
OUTPUT_LINES = 200
_POLL = 0.05
_SEARCH = ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")
_VERSION = re.compile(r"version (\d+)\.(\d+)(?:\.(\d+))?")


class HaproxyNotFound(ZonegateError):
    """HAProxy is not installed: apt-get install haproxy (Debian's package, 2.6 or later)."""


class HaproxyTooOld(HaproxyNotFound):
    """The installed HAProxy is older than 2.6."""


class HaproxyStartError(ZonegateError):
    """HAProxy did not start; the message is HAProxy's own output."""


class HaproxyReloadError(ZonegateError):
    """HAProxy refused to reload; the message is HAProxy's own output."""


class Paths(Protocol):
    """What the supervisor needs of render.py's HaproxyPaths."""

    @property
    def stats_socket(self) -> PurePath: ...
    @property
    def master_socket(self) -> PurePath: ...
    @property
    def state_dir(self) -> PurePath: ...


def haproxy_version(binary: str) -> tuple[int, int, int]:
    """`haproxy -v` as (major, minor, patch).

    Raises:
        HaproxyNotFound: `binary` cannot be run or does not print a version.
    """
    try:
        out = subprocess.run(
            [binary, "-v"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise HaproxyNotFound(f"cannot run {binary} -v: {e}") from e
    m = _VERSION.search(out.stdout + out.stderr)
    if m is None:
        raise HaproxyNotFound(f"{binary} -v printed no version: {out.stdout.strip()[:200]}")
    return int(m[1]), int(m[2]), int(m[3] or 0)


def find_haproxy(binary: str | None = None) -> str:
    """The HAProxy executable to run: `binary`, else `haproxy` on PATH or in /usr/sbin.

    Raises:
        HaproxyNotFound: none found (the message names the Debian package).
        HaproxyTooOld: the one found is older than MIN_VERSION.
    """
    if binary is not None:
        found = shutil.which(binary)
        if found is None:
            raise HaproxyNotFound(f"{binary}: not found. {HaproxyNotFound.__doc__}")
    else:
        found = shutil.which("haproxy") or next((p for p in _SEARCH if os.access(p, os.X_OK)), None)
        if found is None:
            raise HaproxyNotFound()
    version = haproxy_version(found)
    if version[:2] < MIN_VERSION:
        have = ".".join(map(str, version))
        raise HaproxyTooOld(
            f"{found} is HAProxy {have}; zonegate needs 2.6 or later (apt-get install haproxy "
            "from Debian 12 or newer, or haproxy.debian.net)"
        )
    return found


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A preexec function asking Linux to SIGTERM the child when we die (or None)."""
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None  # not Linux: stop() still takes care of the normal paths
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


async def check_config(binary: str, cfg: str | os.PathLike[str]) -> str | None:
    """Run `haproxy -c -f cfg`; None when HAProxy accepts it, else HAProxy's alerts."""
    proc = await asyncio.create_subprocess_exec(
        binary, "-c", "-f", os.fspath(cfg),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    if proc.returncode == 0:
        return None
    text = out.decode("utf-8", "replace").strip()
    return _alerts(text.splitlines()) or text or f"haproxy -c exited with {proc.returncode}"


def _alerts(lines: list[str]) -> str:
    return "\n".join(line for line in lines if "[ALERT]" in line)


class HaproxyProcess:
    """One supervised HAProxy master (and its workers).

    Attributes: `pid` (the master's, None when not running), `restarts` (crashes
    recovered), `last_exit` (the status of the last unexpected exit).
    """

    def __init__(
        self,
        binary: str,
        cfg_path: str | os.PathLike[str],
        paths: Paths,
        *,
        ready_timeout: float = READY_TIMEOUT,
        backoff_first: float = BACKOFF_FIRST,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        self.binary = binary
        self.cfg_path = Path(cfg_path)
        self.paths = paths
        self.ready_timeout = ready_timeout
        self.backoff_first = backoff_first
        self.backoff_max = backoff_max
        self.pid_file = Path(paths.state_dir) / "haproxy.pid"
        self.runtime = RuntimeClient(str(paths.stats_socket))
        self.master = MasterClient(str(paths.master_socket))
        self.restarts = 0
        self.last_exit: int | None = None
        self.lines: collections.deque[str] = collections.deque(maxlen=OUTPUT_LINES)
        self._line_count = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._ready: asyncio.subprocess.Process | None = None
        """The process `_wait_ready` last saw ready: its signal handlers are set."""
        self._reader: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        p = self._proc
        return p.pid if p is not None and p.returncode is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def argv(self) -> list[str]:
        return [
            self.binary, "-W", "-S", str(self.paths.master_socket),
            "-f", str(self.cfg_path), "-p", str(self.pid_file),
        ]  # fmt: skip

    # start

    async def start(self) -> None:
        """Start HAProxy and wait until it serves; then keep it running.

        Raises:
            HaproxyStartError: it exited or did not get ready (HAProxy's words inside).
        """
        self._stopping = False
        await self._spawn()
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _spawn(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_pdeathsig_preexec(),
        )
        assert self._proc.stdout is not None
        self._reader = asyncio.get_running_loop().create_task(self._read(self._proc.stdout))
        try:
            await self._wait_ready(self._proc)
        except Exception:
            await self._kill()
            raise
        # Cancelled (stop() during a restart): the process stays for stop() to drain.
        log.info("haproxy ready: master pid %d", self._proc.pid)

    async def _wait_ready(self, proc: asyncio.subprocess.Process) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ready_timeout
        mark = self._line_count
        why = "no answer yet"
        while True:
            if proc.returncode is not None:
                if self._reader is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(self._reader), 1.0)
                raise HaproxyStartError(
                    f"haproxy exited with status {proc.returncode}:\n{self._output_since(mark)}"
                )
            try:
                table = await self.master.show_proc()
                info = await self.runtime.show_info()
                if int(info["Pid"]) in {w.pid for w in table.workers}:
                    self._ready = proc
                    return
                why = f"stats socket answered by pid {info['Pid']}, not a current worker"
            except (ZonegateError, ValueError, KeyError) as e:
                why = str(e)
            if loop.time() >= deadline:
                raise HaproxyStartError(
                    f"haproxy not ready after {self.ready_timeout}s ({why}):\n"
                    f"{self._output_since(mark)}"
                )
            await asyncio.sleep(_POLL)

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line longer than the stream's limit
                continue
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip()
            self.lines.append(line)
            self._line_count += 1
            level = logging.WARNING if ("[ALERT]" in line or "[WARNING]" in line) else logging.INFO
            log.log(level, "haproxy: %s", line)

    def _output_since(self, mark: int) -> str:
        n = min(self._line_count - mark, len(self.lines))
        lines = list(self.lines)[len(self.lines) - n :] if n > 0 else []
        return _alerts(lines) or "\n".join(lines) or "(no output)"

    async def _watch(self) -> None:
        """Restart HAProxy whenever it exits without being asked to."""
        loop = asyncio.get_running_loop()
        delay = self.backoff_first
        while not self._stopping:
            proc = self._proc
            if proc is None:
                return
            started = loop.time()
            code = await proc.wait()
            if self._stopping or proc is not self._proc:
                return
            self.last_exit = code
            self.restarts += 1
            if loop.time() - started >= STABLE_AFTER:
                delay = self.backoff_first
            log.error(
                "haproxy (pid %d) exited with status %s; restart %d in %.1fs: %s",
                proc.pid, code, self.restarts, delay, self._output_since(self._line_count - 5),
            )  # fmt: skip
            while not self._stopping:
                await asyncio.sleep(delay)
                delay = min(self.backoff_max, delay * 2)
                if self._stopping:
                    return
                try:
                    await self._spawn()
                    break
                except (HaproxyStartError, OSError) as e:
                    log.error("haproxy restart failed (retrying in %.1fs): %s", delay, e)

    # reload

    async def check(self, cfg: str | os.PathLike[str] | None = None) -> str | None:
        """`haproxy -c` on `cfg` (default: the running file); None if accepted."""
        return await check_config(self.binary, cfg if cfg is not None else self.cfg_path)

    async def reload(self, wait: float = READY_TIMEOUT) -> None:
        """Reload seamlessly through the master socket and wait for the outcome.

        Raises:
            HaproxyReloadError: HAProxy refused the new file (its alerts inside), or
                the master did not report the reload in time. The old workers go on
                serving either way.
        """
        loop = asyncio.get_running_loop()
        before = await self.master.show_proc()
        mark = self._line_count
        await self.master.reload()
        deadline = loop.time() + wait
        while True:
            await asyncio.sleep(_POLL)
            try:
                table = await self.master.show_proc()
            except (TransportError, ZonegateError):
                table = None  # the master re-executes itself: its socket is back shortly
            if table is not None and table.master.reloads > before.master.reloads:
                if table.master.failed_reloads > 0:
                    raise HaproxyReloadError(
                        f"haproxy refused the reload:\n{self._output_since(mark)}"
                    )
                new = {w.pid for w in table.workers}
                try:
                    info = await self.runtime.show_info()
                    if int(info["Pid"]) in new:
                        log.info("haproxy reloaded: workers %s", sorted(new))
                        return
                except (ZonegateError, ValueError, KeyError):
                    pass
            if loop.time() >= deadline:
                raise HaproxyReloadError(
                    f"haproxy did not finish reloading in {wait}s:\n{self._output_since(mark)}"
                )

    # stop

    async def stop(self, drain_timeout: float = 30.0) -> int | None:
        """Soft-stop (in-flight requests finish), SIGTERM after `drain_timeout`, then
        SIGKILL the group; return the master's exit status (None: was not running)."""
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        proc = self._proc
        if proc is None:
            return None
        if proc.returncode is None and proc is not self._ready:
            # Restarted and still starting: a SIGUSR1 before HAProxy has set its signal
            # handlers would kill it outright. It serves nothing yet, so wait briefly.
            with contextlib.suppress(HaproxyStartError, TimeoutError):
                await asyncio.wait_for(
                    self._wait_ready(proc), min(drain_timeout, self.ready_timeout)
                )
        if not await self._signal_until_exit(proc, signal.SIGUSR1, drain_timeout):
            log.warning("haproxy still draining after %.1fs: stopping it", drain_timeout)
            await self._signal_until_exit(proc, signal.SIGTERM, KILL_GRACE)
        await self._kill()
        return proc.returncode

    async def _signal_until_exit(
        self, proc: asyncio.subprocess.Process, sig: int, within: float
    ) -> bool:
        """Send `sig` once and wait up to `within` seconds for the master to exit.

        Once only: a second SIGUSR1 kills HAProxy workers that are already
        soft-stopping (their in-flight requests with them).
        """
        if proc.returncode is None:
            self._signal(proc, sig)
        try:
            await asyncio.wait_for(proc.wait(), within)
        except TimeoutError:
            return False
        return True

    def _signal(self, proc: asyncio.subprocess.Process, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)

    async def _kill(self) -> None:
        """SIGKILL whatever is left of the process group (workers included) and reap."""
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._reader, 1.0)
