"""Network namespaces, a bridge and veth pairs for the lab and the netns tests (root).

A `Netns` object is a registry: every namespace it creates is named with one run
prefix (``zgl-<pid>-`` by default, so two runs never collide and a crashed run's
leftovers are recognisable) and is deleted by `close()`, which also SIGKILLs the
processes the registry started. `cleanup(prefix)` removes whatever a crashed run left
behind: each namespace whose name starts with `prefix`, after killing (by PID) the
processes still inside it.

Nothing here touches the root namespace's interfaces, routes or sysctls: the bridge
lives in its own "switch" namespace, and each veth pair is created with one end in
the switch and the other directly in the node's namespace.

    with Netns() as lab:
        sw = lab.switch("sw")                       # namespace + bridge br0
        n1 = lab.namespace("n1")
        lab.attach(n1, sw, address="10.99.0.1/24")   # eth0 in n1, port n1 on br0
        proc = lab.popen(n1, ["ping", "-c1", "10.99.0.2"])

Everything is done with the ``ip`` command (iproute2): one well-known tool, the same
commands an operator would type to look at the lab, and no netlink state in this
process to go stale.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

__all__ = [
    "IFNAMSIZ",
    "Netns",
    "NetnsError",
    "Switch",
    "check_ifname",
    "cleanup",
    "list_namespaces",
    "run_prefix",
]

IFNAMSIZ = 15  # usable characters of a Linux interface name (IFNAMSIZ 16 minus the NUL)
NETNS_NAME_MAX = 255  # a name is a file in /run/netns
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_NETNS_RE = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")
IP = "ip"
CMD_TIMEOUT = 20.0  # seconds for one `ip` command


class NetnsError(RuntimeError):
    """An `ip` command failed; the message has the command and its stderr."""


def run_prefix(pid: int | None = None) -> str:
    """The name prefix of one run: ``zgl-<pid>-``."""
    return f"zgl-{os.getpid() if pid is None else pid}-"


def check_ifname(name: str) -> str:
    """Return `name` if it is a valid interface name (1-15 of ``[A-Za-z0-9_.-]``).

    Raises:
        ValueError: too long, empty, or with a character the kernel or ``ip`` refuses.
    """
    if not _IFNAME_RE.match(name):
        raise ValueError(f"bad interface name {name!r}: 1-{IFNAMSIZ} of [A-Za-z0-9_.-]")
    return name


def _check_netns(name: str) -> str:
    if not _NETNS_RE.match(name) or name in (".", ".."):
        raise ValueError(f"bad namespace name {name!r}")
    return name


def ip(*args: str, ns: str | None = None, check: bool = True) -> str:
    """Run ``ip [-n NS] ARGS`` and return its stdout.

    Raises:
        NetnsError: it exited non-zero (when `check`) or did not finish in time.
    """
    argv = [IP, *(("-n", ns) if ns else ()), *args]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=CMD_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise NetnsError(f"{' '.join(argv)}: timed out") from exc
    if check and res.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {res.stderr.strip() or res.returncode}")
    return res.stdout


def list_namespaces() -> list[str]:
    """Names of the existing named network namespaces (``ip netns list``)."""
    out = ip("netns", "list", check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def namespace_pids(ns: str) -> list[int]:
    """PIDs of the processes whose network namespace is `ns` (``ip netns pids``)."""
    out = ip("netns", "pids", ns, check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def _kill_namespace_processes(ns: str, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        pids = namespace_pids(ns)
        if not pids or time.monotonic() > deadline:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def delete_namespace(ns: str) -> None:
    """Kill the processes inside `ns` (by PID), then delete it; quiet if it is gone."""
    _kill_namespace_processes(ns)
    ip("netns", "delete", ns, check=False)


def cleanup(prefix: str) -> list[str]:
    """Delete every namespace whose name starts with `prefix` (a crashed run's leftovers).

    Returns the names deleted. `prefix` must be at least 4 characters, so a typo cannot
    wipe unrelated namespaces.
    """
    if len(prefix) < 4:
        raise ValueError(f"prefix {prefix!r} too short to clean up by")
    gone = [ns for ns in list_namespaces() if ns.startswith(prefix)]
    for ns in gone:
        delete_namespace(ns)
    return gone


@dataclass
class Switch:
    """A switch namespace holding one bridge; `ports` maps node namespace -> port name."""

    ns: str
    bridge: str
    ports: dict[str, str] = field(default_factory=dict)


class Netns:
    """A registry of namespaces and processes, deleted together by `close()`.

    Args:
        prefix: the name prefix of every namespace created (default `run_prefix()`).
    """

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix or run_prefix()
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[Any]] = []
        self._files: list[IO[Any]] = []

    # -- namespaces and links

    def name(self, short: str) -> str:
        """The full namespace name for `short` (``PREFIX + short``)."""
        return _check_netns(self.prefix + short)

    def namespace(self, short: str, *, sysctls: Mapping[str, str] | None = None) -> str:
        """Create namespace PREFIX+`short` with ``lo`` up; return its full name."""
        ns = self.name(short)
        if ns in list_namespaces():
            delete_namespace(ns)  # a leftover of a crashed run with the same PID
        ip("netns", "add", ns)
        self.namespaces.append(ns)
        ip("link", "set", "lo", "up", ns=ns)
        for key, value in (sysctls or {}).items():
            self.sysctl(ns, key, value)
        return ns

    def sysctl(self, ns: str, key: str, value: str) -> None:
        """Set a (network-namespaced) sysctl inside `ns`."""
        self.run(ns, ["sysctl", "-qw", f"{key}={value}"])

    def switch(self, short: str = "sw", bridge: str = "br0") -> Switch:
        """Create a namespace holding a bridge (no STP, no forward delay, no snooping)."""
        ns = self.namespace(short)
        check_ifname(bridge)
        ip(
            "link", "add", bridge, "type", "bridge",
            "forward_delay", "0", "stp_state", "0", "mcast_snooping", "0",
            ns=ns,
        )  # fmt: skip
        ip("link", "set", bridge, "up", ns=ns)
        return Switch(ns, bridge)

    def attach(
        self,
        ns: str,
        switch: Switch,
        *,
        ifname: str = "eth0",
        port: str | None = None,
        address: str | None = None,
        mac: str | None = None,
    ) -> str:
        """Connect `ns` to the bridge with a veth pair; return the switch-side port name.

        The node end is `ifname` inside `ns` (with `address`, e.g. ``10.99.0.1/24``, and
        `mac` if given), the switch end is `port` (default: the namespace's short name)
        enslaved to the bridge. Both ends are up.
        """
        port = check_ifname(port or ns.removeprefix(self.prefix))
        check_ifname(ifname)
        ip(
            "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", ns,
            ns=switch.ns,
        )  # fmt: skip
        ip("link", "set", port, "master", switch.bridge, "up", ns=switch.ns)
        if mac:
            ip("link", "set", ifname, "address", mac, ns=ns)
        if address:
            ip("addr", "add", address, "dev", ifname, ns=ns)
        ip("link", "set", ifname, "up", ns=ns)
        switch.ports[ns] = port
        return port

    def link(self, ns: str, ifname: str, *, up: bool) -> None:
        """Set a link up or down inside `ns`."""
        ip("link", "set", ifname, "up" if up else "down", ns=ns)

    def addresses(self, ns: str, ifname: str) -> list[str]:
        """The IPv4 addresses on `ifname` in `ns`, as ``A.B.C.D/len``."""
        data = json.loads(ip("-j", "-4", "addr", "show", "dev", ifname, ns=ns) or "[]")
        return [
            f"{a['local']}/{a['prefixlen']}" for link in data for a in link.get("addr_info", [])
        ]

    def mac(self, ns: str, ifname: str) -> str:
        """The MAC address of `ifname` in `ns` (lower case)."""
        data = json.loads(ip("-j", "link", "show", "dev", ifname, ns=ns))
        return str(data[0]["address"]).lower()

    def neighbours(self, ns: str) -> list[dict[str, Any]]:
        """The IPv4 neighbour table of `ns` (``ip -j -4 neigh``)."""
        return list(json.loads(ip("-j", "-4", "neigh", "show", ns=ns) or "[]"))

    # -- processes

    def argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        """`argv` wrapped to run inside `ns` (``ip netns exec NS ...``, which execs it)."""
        return [IP, "netns", "exec", ns, *map(os.fspath, argv)]

    def run(
        self, ns: str, argv: Sequence[str], *, check: bool = True, timeout: float = CMD_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run a short command inside `ns` and wait for it.

        Raises:
            NetnsError: it failed (when `check`) or timed out.
        """
        full = self.argv(ns, argv)
        try:
            res = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise NetnsError(f"{' '.join(full)}: timed out after {timeout}s") from exc
        if check and res.returncode != 0:
            raise NetnsError(f"{' '.join(full)}: {res.stderr.strip() or res.returncode}")
        return res

    def popen(
        self,
        ns: str,
        argv: Sequence[str],
        *,
        log: Path | None = None,
        env: Mapping[str, str] | None = None,
        stdout: int | IO[Any] | None = None,
    ) -> subprocess.Popen[Any]:
        """Start a long-running command inside `ns`, in its own session; it is registered.

        Its stdout and stderr go to `log` (appended) when given, else `stdout` (default:
        discarded). `ip netns exec` execs the command, so the Popen's PID is the
        command's own PID.
        """
        full_env = dict(os.environ)
        full_env["PYTHONUNBUFFERED"] = "1"
        if env:
            full_env.update(env)
        out: int | IO[Any] | None = subprocess.DEVNULL if stdout is None else stdout
        err: int | IO[Any] | None = subprocess.DEVNULL if stdout is None else subprocess.STDOUT
        if log is not None:
            f = open(log, "ab")  # noqa: SIM115 - kept open for the child's life
            self._files.append(f)
            out, err = f, subprocess.STDOUT
        proc = subprocess.Popen(
            self.argv(ns, argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=full_env,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen[Any], sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the process group of `proc` (a process started by `popen`)."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)

    def stop(self, proc: subprocess.Popen[Any], timeout: float = 5.0) -> int:
        """SIGTERM `proc`, wait up to `timeout` s, then SIGKILL its group; return the status."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill(proc)
        return proc.wait()

    # -- teardown

    def close(self) -> None:
        """Kill every registered process and delete every namespace created (idempotent)."""
        for proc in self.procs:
            self.kill(proc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5.0)
        self.procs.clear()
        for ns in reversed(self.namespaces):
            delete_namespace(ns)
        self.namespaces.clear()
        for f in self._files:
            f.close()
        self._files.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
