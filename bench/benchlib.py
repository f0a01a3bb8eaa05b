"""What the benchmark scripts share: processes, CPU accounting, tools, machine facts.

Imported by bench/lb_bench.py, bench/dns_bench.py and bench/vrrp_bench.py, which run
as scripts (`python3 bench/X.py`): Python puts bench/ on the path, so a plain
`import benchlib` works without installing anything.

- `Proc` / `Procs`: children in their own session, stopped by PID, then by group.
- CPU accounting from /proc: the whole machine (`machine_times`, `machine_busy`,
  `cpu_busy`), one process (`proc_cpu`), process groups (`cpu_by_group`), everyone
  but us (`process_times`), and `settle` (wait for a quiet machine: the CPUs are
  shared with other people's work).
- Tools: `which` (also in sbin), `apt_install` (Debian packages, services not
  started), `tool_version`, `deb_version`.
- `machine_info` and `git_state`: what a RESULTS.md entry records about the run;
  `write_results`: every figure of a run as JSON (`--json`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

STOP_GRACE = 5.0
"""Seconds between SIGTERM and SIGKILL."""
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CLK_TCK = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parent.parent

OUR_PIDS: set[int] = {os.getpid()}
"""This script and every process `Procs` started: not "others" in `process_times`."""


# --------------------------------------------------------------------------- tools


def which(name: str) -> str | None:
    """The path of a program, looking in sbin directories too (Debian daemons)."""
    return shutil.which(name, path=os.environ.get("PATH", "") + ":" + SBIN_PATH)


def apt_install(pkgs: str | Sequence[str], who: str = "bench") -> bool:
    """`apt-get install -y PKGS` without starting distro services (policy-rc.d 101).

    Returns False (after printing apt's error) when the install failed.
    """
    pkgs = [pkgs] if isinstance(pkgs, str) else list(pkgs)
    policy = Path("/usr/sbin/policy-rc.d")
    created = False
    if not policy.exists():
        policy.write_text(f"#!/bin/sh\n# {who}: do not start services during install\nexit 101\n")
        policy.chmod(0o755)
        created = True
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        r = subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", *pkgs],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except subprocess.TimeoutExpired:
        print(f"apt-get install {' '.join(pkgs)}: timed out", file=sys.stderr)
        return False
    finally:
        if created:
            policy.unlink(missing_ok=True)
    if r.returncode != 0:
        print(f"apt-get install {' '.join(pkgs)} failed:\n{r.stderr[-2000:]}", file=sys.stderr)
        return False
    return True


def tool_version(argv: Sequence[str], pattern: str = "") -> str:
    """The first line of a tool's version output (matching `pattern`, if given)."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"? ({e})"
    for line in (r.stdout + r.stderr).strip().splitlines():
        if not pattern or re.search(pattern, line):
            return line.strip()
    return "?"


def deb_version(pkg: str) -> str:
    """The installed version of a Debian package, or '?'."""
    try:
        r = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", pkg],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return r.stdout.strip() or "?"


# --------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo ("?" if unknown)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def machine_info(
    tools: Mapping[str, str] | None = None, versions: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Date, CPUs, kernel, Python, uvloop, zonegate, load and checkout of this run.

    Args:
        tools: name -> path of the tools the script found (recorded as "tools").
        versions: extra "name -> version text" entries (peers, load generators).
    """
    model = cpu_model()
    try:
        import uvloop

        uv = uvloop.__version__
    except ImportError:
        uv = "not installed"
    try:
        import zonegate

        zg = zonegate.__version__
    except ImportError:
        zg = "not importable"
    info: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "nproc": os.cpu_count(),
        "cpus_allowed": sorted(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvloop": uv,
        "zonegate": zg,
    }
    info.update(versions or {})
    info["loadavg_at_start"] = Path("/proc/loadavg").read_text().split()[:3]
    info["git"] = git_state()
    if tools:
        info["tools"] = dict(tools)
    return info


def git_state() -> str:
    """HEAD of the checkout being measured, and whether src/zonegate is modified."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "src/zonegate"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.split("\n")
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    n = len([x for x in dirty if x.strip()])
    digest = hashlib.sha256()
    for f in sorted((REPO / "src" / "zonegate").rglob("*.py")):
        digest.update(f.relative_to(REPO).as_posix().encode() + b"\0" + f.read_bytes())
    return (
        f"{head or '?'}"
        + (f" (+{n} uncommitted files under src/zonegate)" if n else "")
        + f", src sha256 {digest.hexdigest()[:12]}"
    )


# --------------------------------------------------------------------------- CPU accounting


def write_results(
    path: str, machine: Mapping[str, Any], settings: Any, runs: Sequence[Any], **extra: Any
) -> None:
    """Write the machine facts, the settings (a dataclass), the command line, every run
    (dataclasses) and `extra` to `path` as JSON."""
    data = {
        "machine": dict(machine),
        "settings": asdict(settings),
        "command": " ".join([sys.executable, *sys.argv]),
        "runs": [asdict(r) for r in runs],
        **extra,
    }
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
    print(f"results written to {path}")


def machine_times() -> dict[str, float]:
    """CPU seconds so far, all CPUs: "procs" (user+nice+system, i.e. time charged to
    processes), "kern" (irq+softirq: loopback delivery runs largely here) and "steal"
    (taken by the hypervisor)."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return {
        "procs": (v[0] + v[1] + v[2]) / CLK_TCK,
        "kern": (v[5] + v[6]) / CLK_TCK,
        "steal": v[7] / CLK_TCK,
    }


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine so far (all CPUs, from /proc/stat)."""
    t = machine_times()
    return t["procs"] + t["kern"]


def cpu_busy() -> dict[str, float]:
    """Busy CPU seconds so far per CPU ("cpu0", ...), softirq included."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *parts = line.split()
        v = [int(x) for x in parts]
        out[name] = (sum(v[:8]) - v[3] - v[4]) / CLK_TCK
    return out


def _stat_fields(pid: int | str) -> list[str] | None:
    """/proc/PID/stat after the command name (field 3 onwards), or None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    f = _stat_fields(pid)
    return 0.0 if f is None else (int(f[11]) + int(f[12])) / CLK_TCK


def cpu_by_group() -> dict[int, tuple[float, float]]:
    """CPU seconds (user, system) of every live process, summed by process group."""
    out: dict[int, tuple[float, float]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        f = _stat_fields(d)
        if f is None:
            continue
        pgrp = int(f[2])
        u, sy = out.get(pgrp, (0.0, 0.0))
        out[pgrp] = (u + int(f[11]) / CLK_TCK, sy + int(f[12]) / CLK_TCK)
    return out


def process_times() -> dict[tuple[int, int], float]:
    """CPU seconds of every user-space process but ours (`OUR_PIDS` and their process
    groups), keyed by (pid, start time).

    Exact per process (the scheduler's run time), unlike the tick-sampled /proc/stat.
    """
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in OUR_PIDS:
            continue
        f = _stat_fields(d)
        if f is None:
            continue
        if d == "2" or f[1] == "2":  # kthreadd and kernel threads
            continue
        if int(f[2]) in OUR_PIDS:  # a worker of a server we started (its group)
            continue
        out[(int(d), int(f[19]))] = (int(f[11]) + int(f[12])) / CLK_TCK
    return out


def settle(max_wait: float, limit: float = 0.3) -> float:
    """Wait (up to `max_wait` s) for a 1 s window in which the machine is nearly idle.

    Our own servers are idle at this point, so what is busy is someone else (the
    CPUs are shared). Returns the busy cores seen in the last window.
    """
    deadline = time.monotonic() + max_wait
    while True:
        b0, t0 = machine_busy(), time.monotonic()
        time.sleep(1.0)
        busy = (machine_busy() - b0) / (time.monotonic() - t0)
        if busy <= limit or time.monotonic() >= deadline:
            return busy


# --------------------------------------------------------------------------- processes


def group_members(pgid: int) -> list[int]:
    """PIDs whose process group is `pgid` (every process we start leads its own group)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        f = _stat_fields(d)
        if f is not None and int(f[2]) == pgid:
            pids.append(int(d))
    return pids


class Proc:
    """A child process in its own session; stopped by PID (then its group, by PGID)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        cpus: str | None,
        taskset: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        argv = list(argv)
        if cpus and taskset:
            argv = [taskset, "-c", cpus, *argv]  # taskset execs: the PID stays the same
        self.argv = argv
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM the PID, wait, then SIGKILL what is left of its process group."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                print(f"  {self.name} (pid {self.pid}) ignored SIGTERM; killing", flush=True)
        deadline = time.monotonic() + grace
        while True:
            members = group_members(self.pid)
            if not members:
                break
            if time.monotonic() > deadline or not self.alive():
                # The leader is gone (or stuck): kill its leftover children by group id.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                if time.monotonic() > deadline + grace:
                    print(f"  {self.name}: pids {members} survive SIGKILL", flush=True)
                    break
            time.sleep(0.05)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(grace)
        self._log.close()


class Procs:
    """Every process started, so that `finally` can stop them all."""

    def __init__(self) -> None:
        self.items: list[Proc] = []

    def start(self, *args: Any, **kw: Any) -> Proc:
        """Start a `Proc` (same arguments) and remember it (also in `OUR_PIDS`)."""
        p = Proc(*args, **kw)
        self.items.append(p)
        OUR_PIDS.add(p.pid)
        return p

    def stop(self, p: Proc) -> None:
        try:
            p.stop()
        finally:
            if p in self.items:
                self.items.remove(p)

    def stop_all(self) -> None:
        while self.items:
            self.stop(self.items[-1])


__all__ = [
    "CLK_TCK",
    "OUR_PIDS",
    "SBIN_PATH",
    "STOP_GRACE",
    "Proc",
    "Procs",
    "apt_install",
    "cpu_busy",
    "cpu_by_group",
    "deb_version",
    "git_state",
    "group_members",
    "machine_busy",
    "machine_info",
    "machine_times",
    "proc_cpu",
    "process_times",
    "settle",
    "tool_version",
    "which",
]
