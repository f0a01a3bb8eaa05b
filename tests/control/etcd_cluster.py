"""A throwaway 3-member etcd cluster on 127.0.0.1 for the etcd store tests.

Uses Debian's `etcd-server` (installed with apt-get when missing; `ensure_etcd` says
precisely why when that is impossible, for a pytest skip). Every member listens on
free loopback ports (never 2379/2380, so a distro etcd daemon, if one runs, is not
touched and does not interfere), keeps its data in a temporary directory, and uses
quick election settings (heartbeat 50 ms, election timeout 500 ms). Members are
ended by PID only, always: `stop()` kills and reaps every member it started.

    with EtcdCluster(tmp_dir) as cluster:
        cluster.endpoints          # ["http://127.0.0.1:PORT", ...]
        cluster.kill(cluster.leader())   # kill -9 the leader
        cluster.restart(0)         # start it again on its data dir
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Self

from tests.peers.processes import retry_addr_in_use

ETCD = "etcd"
MEMBERS = 3


def ensure_etcd() -> str | None:
    """Make sure the `etcd` binary exists, installing `etcd-server` with apt-get if
    needed. Returns None when it is there, else the reason it cannot be (for a skip)."""
    if shutil.which(ETCD):
        return None
    if not shutil.which("apt-get"):
        return "etcd is not installed and there is no apt-get to install etcd-server"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        done = subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "etcd-server"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"apt-get install etcd-server failed: {exc}"
    if done.returncode != 0 or not shutil.which(ETCD):
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return f"apt-get install etcd-server failed (exit {done.returncode}): {' | '.join(tail)}"
    return None


def free_ports(n: int) -> list[int]:
    """n distinct TCP ports on 127.0.0.1 that were free a moment ago (held open
    together while picking); `EtcdCluster.start` picks again when one was taken."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class EtcdCluster:
    """Three etcd members on loopback (see the module docstring)."""

    def __init__(self, base_dir: str | os.PathLike[str], members: int = MEMBERS) -> None:
        self.base_dir = Path(base_dir)
        self.names = [f"m{i}" for i in range(members)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * members
        self._pick_ports()

    def _pick_ports(self) -> None:
        members = len(self.names)
        ports = free_ports(2 * members)
        self.client_ports = ports[:members]
        self.peer_ports = ports[members:]
        self.token = f"zonegate-test-{uuid.uuid4().hex[:8]}"

    @property
    def endpoints(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.client_ports]

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _command(self, i: int) -> list[str]:
        initial = ",".join(
            f"{name}=http://127.0.0.1:{port}"
            for name, port in zip(self.names, self.peer_ports, strict=True)
        )
        client = f"http://127.0.0.1:{self.client_ports[i]}"
        peer = f"http://127.0.0.1:{self.peer_ports[i]}"
        return [
            ETCD,
            "--name", self.names[i],
            "--data-dir", str(self.base_dir / self.names[i]),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", initial,
            "--initial-cluster-token", self.token,
            "--initial-cluster-state", "new",
            "--heartbeat-interval", "50",
            "--election-timeout", "500",
            "--enable-v2=false",
            "--logger", "zap",
            "--log-level", "warn",
        ]  # fmt: skip

    def _spawn(self, i: int) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.base_dir / f"{self.names[i]}.log", "ab")  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        try:
            self.procs[i] = subprocess.Popen(
                self._command(i),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        finally:
            log.close()

    def start(self, timeout: float = 30.0) -> None:
        """Start every member and wait until each reports healthy.

        The ports must be in every member's command line before it starts; when one
        was taken in the meantime, the whole cluster starts again on fresh ports.
        """
        attempts = 0

        def attempt() -> None:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                self.stop()
                for name in self.names:
                    shutil.rmtree(self.base_dir / name, ignore_errors=True)
                self._pick_ports()
            for i in range(len(self.names)):
                self._spawn(i)
            self.wait_healthy(range(len(self.names)), timeout)

        retry_addr_in_use(attempt)

    def wait_healthy(self, members: range | list[int], timeout: float = 30.0) -> None:
        """Wait until `GET /health` of each member says healthy (it has a leader)."""
        deadline = time.monotonic() + timeout
        for i in members:
            while not self.healthy(i):
                proc = self.procs[i]
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"etcd {self.names[i]} exited: {self.log_tail(i)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"etcd {self.names[i]} not healthy: {self.log_tail(i)}")
                time.sleep(0.05)

    def healthy(self, i: int) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoints[i]}/health", timeout=1) as resp:
                return json.loads(resp.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def leader(self) -> int:
        """The index of the current leader (asks the members' maintenance status)."""
        for i, endpoint in enumerate(self.endpoints):
            if self.procs[i] is None:
                continue
            req = urllib.request.Request(
                f"{endpoint}/v3/maintenance/status",
                data=b"{}",
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(req, timeout=1) as resp:
                    status = json.loads(resp.read())
            except (OSError, ValueError):
                continue
            if status.get("leader") and status["leader"] == status["header"]["member_id"]:
                return i
        raise RuntimeError("no etcd member says it is the leader")

    def log_tail(self, i: int, lines: int = 5) -> str:
        try:
            text = (self.base_dir / f"{self.names[i]}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:])

    def kill(self, i: int) -> None:
        """kill -9 member i (by its PID) and reap it."""
        proc = self.procs[i]
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        self.procs[i] = None

    def restart(self, i: int, timeout: float = 30.0) -> None:
        """Start member i again on its data dir and wait until it is healthy."""
        self.kill(i)
        self._spawn(i)
        self.wait_healthy([i], timeout)

    def stop(self) -> None:
        """Kill every member this object started (by PID) and reap them."""
        for i in range(len(self.procs)):
            try:
                self.kill(i)
            except (OSError, subprocess.TimeoutExpired):
                pass
