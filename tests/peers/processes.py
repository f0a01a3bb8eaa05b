"""Start real peer processes for tests: demo backends, ``zonegate lb``, anything.

Every process is started in its own session (so a crash test can kill its whole
process group, workers included), its stdout and stderr go to temp files (a pipe
nobody reads would fill up and block it), and readiness is a regex matched against
those files. A registry remembers every process started here and SIGKILLs the
leftovers when the interpreter exits, by process group id, nothing else.

    with start_backend("b1", zone="z1") as b:
        httpx.get(f"http://{b.address}/")
        b.kill()
        b.restart()           # same port, so an LB config naming it stays valid
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Self, TypeVar

__all__ = [
    "BackendProc",
    "Proc",
    "ProcessError",
    "addr_in_use",
    "free_port",
    "refused_port",
    "retry_addr_in_use",
    "start_backend",
    "start_backends",
    "start_process",
    "wait_port",
]

DEFAULT_TIMEOUT = 10.0
_POLL = 0.01
_BACKEND_READY = r"listening on (?P<host>\S+):(?P<port>\d+)\s*$"

_T = TypeVar("_T")
_registry: dict[int, Proc] = {}
_tmpdir: Path | None = None


class ProcessError(RuntimeError):
    """A peer process died or did not get ready; the message includes its output."""


def _logdir() -> Path:
    global _tmpdir
    if _tmpdir is None:
        _tmpdir = Path(tempfile.mkdtemp(prefix="zonegate-procs-"))
    return _tmpdir


@atexit.register
def _cleanup() -> None:
    for proc in list(_registry.values()):
        with contextlib.suppress(Exception):
            proc.kill()
    if _tmpdir is not None:
        shutil.rmtree(_tmpdir, ignore_errors=True)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago (bind port 0, close).

    Another process may take it before a server binds it. Use it only for a port
    nothing should listen on, or for a port a config file must name before the server
    starts, and then start the server through `retry_addr_in_use`. A server that can
    bind port 0 itself and report its port (a ready line) should do that instead.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


_held: list[socket.socket] = []


def refused_port(host: str = "127.0.0.1") -> int:
    """A TCP port where connections are refused, for as long as this process runs.

    The port stays bound (without listening) by a socket this module keeps, so no
    other process can start listening there, unlike a port from `free_port`.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    _held.append(sock)
    return int(sock.getsockname()[1])


_ADDR_IN_USE = re.compile(r"address already in use|errno 98\b|eaddrinuse", re.IGNORECASE)


def addr_in_use(text: str) -> bool:
    """Whether a server's output (or an exception message) says its port was taken."""
    return _ADDR_IN_USE.search(text) is not None


def retry_addr_in_use(start: Callable[[], _T], *, attempts: int = 5) -> _T:
    """Call `start()` again while it fails because a port it picked was taken.

    For servers whose ports must be written down before they start (listeners in a
    topology file, etcd's peer URLs): `start` picks fresh ports with `free_port` on
    every call, starts the server and returns it (it cleans up after itself when it
    fails). A `RuntimeError` (`ProcessError` included) whose message says "address
    already in use" is retried, up to `attempts` calls; anything else propagates.
    """
    for attempt in range(1, attempts + 1):
        try:
            return start()
        except RuntimeError as exc:
            if attempt == attempts or not addr_in_use(str(exc)):
                raise
    raise AssertionError("unreachable")


def wait_port(host: str, port: int, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Wait until a TCP connect to `host`:`port` succeeds; TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.05, timeout)):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{host}:{port} not accepting after {timeout}s: {exc}") from exc
            time.sleep(_POLL)


class Proc:
    """A started process, its captured output and the ready line it printed.

    Attributes: `argv`, `proc` (the `subprocess.Popen`), `pid`, `match` (the
    `re.Match` of the ready line, or None when no regex was given), `stdout_path`,
    `stderr_path`.
    """

    def __init__(
        self,
        argv: Sequence[str],
        ready_line_regex: str | re.Pattern[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        self.argv = [os.fspath(a) for a in argv]
        if isinstance(ready_line_regex, str):
            ready_line_regex = re.compile(ready_line_regex)
        self.ready = ready_line_regex
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.match: re.Match[str] | None = None
        self.proc: subprocess.Popen[bytes] = None  # type: ignore[assignment]
        self.stdout_path = self.stderr_path = Path()
        self._files: list[IO[bytes]] = []
        self._generation = 0

    # -- lifecycle

    def spawn(self) -> Self:
        """Start the process (without waiting for readiness)."""
        if self.alive:
            raise RuntimeError(f"already running: pid {self.pid}")
        self._close_files()
        self._generation += 1
        stem = f"{Path(self.argv[0]).name}-{os.getpid()}-{id(self):x}-{self._generation}"
        self.stdout_path = _logdir() / f"{stem}.out"
        self.stderr_path = _logdir() / f"{stem}.err"
        out = open(self.stdout_path, "wb")  # noqa: SIM115 - kept open for the child's life
        err = open(self.stderr_path, "wb")  # noqa: SIM115
        self._files = [out, err]
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        if self.env:
            env.update(self.env)
        self.match = None
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            cwd=self.cwd,
            start_new_session=True,
        )
        _registry[self.proc.pid] = self
        return self

    def wait_ready(self, timeout: float = DEFAULT_TIMEOUT) -> Self:
        """Wait until the ready regex matches a line of stdout (or stderr)."""
        if self.ready is None:
            return self
        deadline = time.monotonic() + timeout
        while True:
            # Poll before reading: a line printed just before exiting is still seen.
            exited = self.proc.poll() is not None
            for path in (self.stdout_path, self.stderr_path):
                for line in path.read_text(errors="replace").splitlines():
                    m = self.ready.search(line)
                    if m:
                        self.match = m
                        return self
            if exited:
                self.kill()
                raise ProcessError(
                    f"exited with status {self.proc.returncode} before printing a line "
                    f"matching {self.ready.pattern!r}\n{self.describe()}"
                )
            if time.monotonic() >= deadline:
                self.kill()
                raise ProcessError(
                    f"not ready after {timeout}s (no line matching {self.ready.pattern!r}); "
                    f"killed it\n{self.describe()}"
                )
            time.sleep(_POLL)

    def start(self, timeout: float = DEFAULT_TIMEOUT) -> Self:
        """`spawn`, then `wait_ready`."""
        return self.spawn().wait_ready(timeout)

    def restart(self, timeout: float = DEFAULT_TIMEOUT) -> Self:
        """Stop it if running, then start the same argv again."""
        self.stop()
        return self.start(timeout)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def signal(self, sig: int, *, group: bool = False) -> None:
        """Send `sig` to the process (or to its whole process group)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(self.proc.pid, sig)
            elif self.proc.poll() is None:
                self.proc.send_signal(sig)

    def kill(self) -> int | None:
        """SIGKILL the process group (a crash, workers included) and reap it."""
        if self.proc is None:
            return None
        self.signal(signal.SIGKILL, group=True)
        self.proc.wait()
        self._forget()
        return self.proc.returncode

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, wait up to `timeout` s, then SIGKILL what is left; return the status."""
        if self.proc is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        # Also reaps workers the leader left behind.
        return self.kill()

    def _forget(self) -> None:
        if self.proc is not None:
            _registry.pop(self.proc.pid, None)
        self._close_files()

    def _close_files(self) -> None:
        for f in self._files:
            f.close()
        self._files = []

    # -- output

    def output(self) -> str:
        """Everything captured so far: stdout, then stderr."""
        return self.stdout() + self.stderr()

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.name else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.name else ""

    def describe(self, tail: int = 4000) -> str:
        """argv, pid and the last `tail` characters of stdout and stderr."""
        return (
            f"argv: {self.argv}\npid: {self.proc.pid if self.proc else None}\n"
            f"--- stdout ---\n{self.stdout()[-tail:]}\n--- stderr ---\n{self.stderr()[-tail:]}"
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(timeout=3.0)

    def __repr__(self) -> str:
        state = "running" if self.alive else f"exited {self.returncode}"
        return f"<{type(self).__name__} pid={self.proc.pid if self.proc else None} {state}>"


def start_process(
    argv: Sequence[str],
    ready_line_regex: str | re.Pattern[str] | None,
    timeout: float = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
    *,
    cwd: str | os.PathLike[str] | None = None,
) -> Proc:
    """Start `argv` and wait up to `timeout` s for a stdout/stderr line matching the regex.

    `env` adds to (overrides) the current environment. Raises `ProcessError`, with the
    captured output, when the process exits first or the wait times out.
    """
    return Proc(argv, ready_line_regex, env=env, cwd=cwd).start(timeout)


class BackendProc(Proc):
    """A ``python -m zonegate.lab.backend`` process; `restart` reuses its port."""

    def __init__(self, name: str = "b1", zone: str = "z", port: int = 0, host: str = "127.0.0.1"):
        self.name = name
        self.zone = zone
        self.host = host
        self.port = port
        super().__init__(self._argv(), _BACKEND_READY)

    def _argv(self) -> list[str]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return [
            sys.executable,
            "-m",
            "zonegate.lab.backend",
            "--listen",
            f"{host}:{self.port}",
            "--name",
            self.name,
            "--zone",
            self.zone,
        ]

    @property
    def address(self) -> str:
        """``HOST:PORT`` (brackets around an IPv6 host)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def wait_ready(self, timeout: float = DEFAULT_TIMEOUT) -> Self:
        super().wait_ready(timeout)
        assert self.match is not None
        self.port = int(self.match["port"])
        # Pin the port: a restart must come back where the LB config points.
        self.argv = self._argv()
        return self

    def restart(self, timeout: float = DEFAULT_TIMEOUT) -> Self:
        """Stop it if running and start it again on the same port.

        Retries while the port is briefly taken (e.g. by an outgoing connection that
        got it as its ephemeral port), until `timeout`.
        """
        self.stop()
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.start(max(0.1, deadline - time.monotonic()))
            except ProcessError:
                if (
                    "address already in use" not in self.stderr().lower()
                    or time.monotonic() > deadline
                ):
                    raise
                time.sleep(0.05)


def start_backend(
    name: str = "b1", zone: str = "z", port: int = 0, *, timeout: float = DEFAULT_TIMEOUT
) -> BackendProc:
    """Start one demo backend process and wait until it listens."""
    return BackendProc(name, zone, port).start(timeout)


def start_backends(
    n: int, zone: str = "z", *, prefix: str = "b", timeout: float = DEFAULT_TIMEOUT
) -> list[BackendProc]:
    """Start `n` backends named PREFIX1..PREFIXn in parallel and wait for all of them."""
    procs = [BackendProc(f"{prefix}{i}", zone).spawn() for i in range(1, n + 1)]
    try:
        for p in procs:
            p.wait_ready(timeout)
    except BaseException:
        for p in procs:
            p.kill()
        raise
    return procs


CONTROL_READY = r"zonegate control ready: (?P<url>http://\S+) version (?P<version>\d+)"
CONTROL_OPERATOR = "op-secret"
"""The operator token of `start_control`'s control planes (send it as Bearer)."""


def start_control(
    tmp_path: Path, topology: Path, store: str | None = None, *, timeout: float = 20
) -> tuple[Proc, str]:
    """Start `zonegate control` on a free port with one operator token
    (`CONTROL_OPERATOR`) and anonymous reads; returns the process and its base URL.

    `store` defaults to a SQLite file in `tmp_path`.
    """
    from zonegate.control.api import hash_token

    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        f"tokens:\n  - {{name: ops, role: operator, sha256: {hash_token(CONTROL_OPERATOR)}}}\n"
    )
    argv = [
        sys.executable, "-m", "zonegate.control.server", str(topology),
        "--store", store or f"sqlite://{tmp_path / 'control.db'}",
        "--listen", "127.0.0.1:0", "--tokens", str(tokens),
    ]  # fmt: skip
    proc = start_process(argv, CONTROL_READY, timeout=timeout, env={"ZONEGATE_BUG_RAISE": "0"})
    assert proc.match is not None
    return proc, proc.match["url"]
