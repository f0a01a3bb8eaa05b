"""`zonegate demo`: the example topology on loopback, broken on purpose, measured.

The demo answers one question with numbers: what do clients see when parts of a zone
fail? It needs no root and touches nothing but 127.0.0.1:

1. **Topology.** ``examples/two-zones.yaml`` (or ``--topology FILE``) is loaded and
   checked. If any of its ports (backends, listeners, admin endpoints) is taken, the
   whole layout is shifted to free ports and a rewritten copy is written to the run
   directory; the demo says which ports moved.
2. **Processes.** One demo backend per backend of the file
   (``python -m zonegate.lab.backend``) and one ``zonegate lb`` per zone, each in its
   own session, output in a log file of the run directory (printed at start).
3. **Load.** An asyncio client with keep-alive connections sends ``GET /`` with the
   split domain as Host to every zone's listener at a bounded rate (about 300 req/s
   in all). Each request carries a pseudo device id (``X-Device-Id``) and goes to the
   zone the split map gives that device, as the SDK will. Every request is recorded:
   start time, zone, backend (``X-Backend``), status, latency, error kind.
4. **Drill.** A list of `Step`s, each an action and a `Budget` (failed requests
   allowed, longest detection and recovery time) plus step-specific checks:

   ========  ===============================================================
   baseline  traffic only
   kill-one  SIGKILL one backend of the drill zone: retries and ejection must
             hide it from clients (0 failed)
   drain     ``POST /pools/P/backends/B/drain`` on the LB admin API: 0 failed,
             and no request that starts after the answer reaches B
   kill-all  SIGKILL every backend of the zone: once the LB sees the pool empty
             (detection), the backup pool in the other zone answers every
             request of the zone (0 failed after detection)
   restore   restart the backends on their ports, enable the drained one: they
             come back up in the LB's /status and take traffic again
   final     traffic only: no failures, the zone serves itself again
   ========  ===============================================================

5. **Report.** A live table while it runs, then a table per step (requests, failed,
   p50/p99 latency, detection and recovery times, budget met or not); ``--report
   FILE`` writes the same as JSON. The exit status is 1 if any budget was missed.
6. **Cleanup.** Every process the demo started is stopped by its PID at the end, on
   Ctrl-C, SIGTERM and on errors.

The drill zone is derived from the topology: the first zone whose listener routes the
demo Host to a pool with at least two backends and a backup pool in another zone (for
two-zones.yaml: changping, pool web-cp, backup web-yq). To add a drill, write an
action ``async def act(drill, run)`` and append a `Step` in `default_steps`; later
components (DNS, control plane, SDK, VRRP) add their processes in
`Drill.start_processes` and their steps the same way.

``ZONEGATE_DEMO_DIR`` names the run directory (logs, rewritten topology) instead of a
fresh temporary one.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ipaddress
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import httptools
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from zonegate.errors import ConfigErrors
from zonegate.lb.router import RouteTable
from zonegate.topology.load import load_topology
from zonegate.topology.schema import Topology
from zonegate.topology.types import HostPort

__all__ = [
    "Budget",
    "Check",
    "Drill",
    "Sample",
    "Step",
    "StepRun",
    "default_steps",
    "evaluate",
    "find_default_topology",
    "plan_ports",
    "run_demo",
]

DEFAULT_TOPOLOGY = Path("examples") / "two-zones.yaml"
DEFAULT_HOST = "api.example.test"
TOTAL_RATE = 300.0
"""Requests per second over all zones: enough to see every backend every second,
little enough for a two-core laptop that also runs eight servers."""
CONNS_PER_ZONE = 8
REQUEST_TIMEOUT = 3.0
START_TIMEOUT = 15.0
STATUS_POLL = 0.05
"""How often a wait on the LB's /status polls: the resolution of detection times."""
_PORT_SHIFTS = range(1000, 20001, 1000)


def _ephemeral_low() -> int:
    """Start of the kernel's ephemeral port range (32768 if unknown)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class DemoError(Exception):
    """The demo cannot go on (a process did not start, bad topology for a drill)."""


# --- topology: where to find it, where everything listens ---------------------------


def find_default_topology() -> Path | None:
    """``examples/two-zones.yaml`` in the current directory or the source checkout."""
    here = Path(__file__).resolve()
    for root in (Path.cwd(), *here.parents):
        candidate = root / DEFAULT_TOPOLOGY
        if candidate.is_file():
            return candidate
    return None


def topology_addresses(topo: Topology) -> list[HostPort]:
    """Every address the demo's processes listen on: backends, listeners, admins."""
    addrs: list[HostPort] = []
    for pool in topo.pools.values():
        addrs.extend(b.address for b in pool.backends)
    addrs.extend(lst.bind for lst in topo.listeners.values())
    addrs.extend(z.lb_admin for z in topo.zones.values() if z.lb_admin is not None)
    return list(dict.fromkeys(addrs))


def port_is_free(addr: HostPort) -> bool:
    """True if a server could bind `addr` now (with SO_REUSEADDR, as ours do)."""
    family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((addr.host, addr.port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def plan_ports(
    addrs: Sequence[HostPort], is_free: Callable[[HostPort], bool] | None = None
) -> dict[HostPort, HostPort]:
    """Where to move the layout when some of its ports are taken; {} if none is.

    The whole layout moves by the same offset (8101 -> 9101, 8080 -> 9080, ...) so
    it stays recognisable; if no offset frees every port, only the busy ports move,
    to ports the kernel hands out. `is_free` defaults to `port_is_free`.
    """
    is_free = is_free or port_is_free
    if all(is_free(a) for a in addrs):
        return {}
    # A shifted layout stays below the ephemeral range, where an outgoing connection
    # could take a port from under a backend that the drill restarts.
    limit = min(_ephemeral_low(), 65536)
    for shift in _PORT_SHIFTS:
        moved = {a: HostPort(a.host, a.port + shift) for a in addrs}
        if all(m.port < limit for m in moved.values()) and all(is_free(m) for m in moved.values()):
            return moved
    taken = {a.port for a in addrs}
    out: dict[HostPort, HostPort] = {}
    for a in addrs:
        if not is_free(a):
            port = free_port(a.host)
            while port in taken:
                port = free_port(a.host)
            taken.add(port)
            out[a] = HostPort(a.host, port)
    return out


def rewrite_topology(
    topo: Topology, moved: dict[HostPort, HostPort], dest: Path
) -> tuple[Path, Topology]:
    """Write `topo` with the addresses in `moved` replaced; load it back to validate."""
    from ruamel.yaml import YAML

    names = {str(old): str(new) for old, new in moved.items()}

    def sub(value: str) -> str:
        return names.get(value, value)

    doc = topo.model_dump(mode="json", exclude_defaults=True)
    for zone in doc.get("zones", {}).values():
        if "lb_admin" in zone:
            zone["lb_admin"] = sub(zone["lb_admin"])
    for pool in doc.get("pools", {}).values():
        for backend in pool["backends"]:
            backend["address"] = sub(backend["address"])
    for lst in doc.get("listeners", {}).values():
        lst["bind"] = sub(lst["bind"])
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    with open(dest, "w", encoding="utf-8") as f:
        f.write("# Written by `zonegate demo`: the demo topology with its busy ports moved.\n")
        f.write("# " + ", ".join(f"{o} -> {n}" for o, n in names.items()) + "\n")
        yaml.dump(doc, f)
    return dest, load_topology(dest)


def _check_loopback(topo: Topology) -> None:
    for addr in topology_addresses(topo):
        try:
            loopback = ipaddress.ip_address(addr.host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise DemoError(f"the demo runs on loopback only; {addr} is not a loopback address")


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """A demo backend process to start."""

    name: str
    zone: str
    address: HostPort


@dataclass(frozen=True, slots=True)
class LbSpec:
    """A `zonegate lb` process to start, and where the client reaches it."""

    zone: str
    listener: str
    bind: HostPort
    admin: HostPort
    admin_in_file: bool


@dataclass(frozen=True, slots=True)
class Scenario:
    """What the drills break: a zone, the pool its traffic goes to, that pool's backup."""

    zone: str
    home: str
    backup: str
    home_backends: tuple[str, ...]
    backup_backends: tuple[str, ...]
    kill_one: str
    drain: str


@dataclass(frozen=True, slots=True)
class Layout:
    """Everything the demo starts, derived from one (possibly rewritten) topology."""

    path: Path
    topo: Topology
    host: str
    backends: tuple[BackendSpec, ...]
    lbs: tuple[LbSpec, ...]
    shares: dict[str, float]
    scenario: Scenario


def plan_layout(topo: Topology, path: Path) -> Layout:
    """Derive the processes, the client's targets and the drill scenario."""
    _check_loopback(topo)
    host = next(iter(topo.split), DEFAULT_HOST)
    backends: dict[HostPort, BackendSpec] = {}
    for pool in topo.pools.values():
        for b in pool.backends:
            backends.setdefault(b.address, BackendSpec(b.id, pool.zone, b.address))
    lbs: list[LbSpec] = []
    used = {a.port for a in topology_addresses(topo)}
    for zone_name, zone in topo.zones.items():
        http = [(n, lst) for n, lst in topo.listeners.items() if lst.zone == zone_name]
        http = [(n, lst) for n, lst in http if lst.protocol == "http"]
        if not http:
            continue
        admin = zone.lb_admin
        if admin is None:
            # The drills need the admin API: give the zone's LB one with --admin.
            port = free_port()
            while port in used:
                port = free_port()
            used.add(port)
            admin = HostPort("127.0.0.1", port)
        name, lst = http[0]
        lbs.append(LbSpec(zone_name, name, lst.bind, admin, zone.lb_admin is not None))
    if not lbs:
        raise DemoError(f"{path}: no zone has an http listener; nothing to send traffic to")
    scenario = _pick_scenario(topo, host, lbs)
    if scenario is None:
        raise DemoError(
            f"{path}: the drills need a zone whose listener routes Host {host} to a pool "
            "with at least two backends and a backup pool in another zone"
        )
    return Layout(
        path, topo, host, tuple(backends.values()), tuple(lbs), _shares(topo, host, lbs), scenario
    )


def _pick_scenario(topo: Topology, host: str, lbs: list[LbSpec]) -> Scenario | None:
    for lb in lbs:
        pool_name = RouteTable(topo.listeners[lb.listener].routes).match(host, b"/")
        pool = topo.pools.get(pool_name or "")
        if pool is None or not pool.backup or len(pool.backends) < 2:
            continue
        backup = topo.pools[pool.backup]
        if backup.zone == lb.zone:
            continue
        ids = tuple(b.id for b in pool.backends)
        # The last backend dies first and the one before it is drained, so the first
        # (in the example the heaviest, weight 2) keeps the zone serving itself.
        return Scenario(
            lb.zone,
            pool_name or "",
            pool.backup,
            ids,
            tuple(b.id for b in backup.backends),
            ids[-1],
            ids[-2],
        )
    return None


def _shares(topo: Topology, host: str, lbs: list[LbSpec]) -> dict[str, float]:
    """Each LB zone's share of the traffic: the split map's, else equal."""
    zones = [lb.zone for lb in lbs]
    split = topo.split.get(host)
    if split is not None:
        shares = {
            z: (split.zones[z].upper - split.zones[z].lower) / split.sharding
            for z in zones
            if z in split.zones
        }
        if sum(shares.values()) > 0:
            return {z: shares.get(z, 0.0) for z in zones}
    return {z: 1 / len(zones) for z in zones}


def device_ids(topo: Topology, host: str, zone: str, zones: Sequence[str], n: int) -> list[str]:
    """`n` pseudo device ids that the split map assigns to `zone`.

    Stand-in for the SDK's shard router: crc32(id) % sharding in [lower, upper).
    """
    split = topo.split.get(host)
    out: list[str] = []
    i = 0
    while len(out) < n and i < 100 * n:
        dev = f"dev-{i:06d}"
        h = zlib.crc32(dev.encode())
        if split is not None and zone in split.zones:
            sz = split.zones[zone]
            mine = sz.lower <= h % split.sharding < sz.upper
        else:
            mine = zones[h % len(zones)] == zone
        if mine:
            out.append(dev)
        i += 1
    return out or [f"dev-{zone}"]


# --- processes --------------------------------------------------------------------------

_children: dict[int, Child] = {}


@atexit.register
def _kill_leftovers() -> None:
    """Last resort: SIGKILL what is still registered (each by its own PID)."""
    for child in list(_children.values()):
        child.kill()


class Child:
    """A process the demo started: own session, output appended to one log file.

    Its own session keeps a Ctrl-C in the terminal from reaching it: the demo decides
    the order of shutdown. It is signalled by PID only (its process group is its
    PID, so helpers it might start die with it on SIGKILL).
    """

    def __init__(self, name: str, argv: list[str], ready: str, log: Path) -> None:
        self.name = name
        self.argv = argv
        self.ready = ready
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []
        """Every PID this child has had (it is restarted by some drills)."""
        self._offset = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        """Start the process (fork and exec only; `wait_ready` waits)."""
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        _children[self.proc.pid] = self
        self.pids.append(self.proc.pid)

    def output(self) -> str:
        """What this run of the process wrote so far."""
        with open(self.log, "rb") as f:
            f.seek(self._offset)
            return f.read().decode("utf-8", "replace")

    async def wait_ready(self, within: float = START_TIMEOUT) -> None:
        """Wait for the ready line; DemoError (with the log's tail) if it never comes."""
        assert self.proc is not None
        deadline = time.monotonic() + within
        while True:
            exited = self.proc.poll() is not None
            text = self.output()
            if self.ready in text:
                return
            if exited or time.monotonic() > deadline:
                self.kill()
                why = f"exited with status {self.proc.returncode}" if exited else "timed out"
                tail = "\n".join(text.splitlines()[-15:])
                raise DemoError(f"{self.name} {why} before printing {self.ready!r}:\n{tail}")
            await asyncio.sleep(0.02)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL (a crash: no cleanup in the child) and reap."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        _children.pop(self.proc.pid, None)


def stop_all(children: Iterable[Child], timeout: float) -> None:
    """SIGTERM them all, give them `timeout` s together to exit, SIGKILL the rest."""
    children = [c for c in children if c.proc is not None]
    for c in children:
        c.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for c in children:
        assert c.proc is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            c.proc.wait(max(0.0, deadline - time.monotonic()))
        c.kill()


# --- a minimal HTTP/1.1 client (keep-alive, one request at a time) ------------------


class _Response:
    """httptools callbacks: the status comes from the parser, X-Backend from here."""

    __slots__ = ("backend", "body", "done", "keep_body", "status")

    def __init__(self, keep_body: bool = False) -> None:
        self.backend = ""
        self.body = b""
        self.done = False
        self.keep_body = keep_body
        self.status = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"x-backend":
            self.backend = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        if self.keep_body:
            self.body += body

    def on_message_complete(self) -> None:
        self.done = True


class HttpConnection:
    """One client connection, reopened after an error or a Connection: close."""

    def __init__(self, addr: HostPort) -> None:
        self.addr = addr
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, head: bytes, within: float, keep_body: bool = False) -> _Response:
        """Send a bodyless request and read the whole response `within` s."""
        resp = _Response(keep_body)
        parser = httptools.HttpResponseParser(resp)
        async with asyncio.timeout(within):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(
                    self.addr.host, self.addr.port
                )
            assert self.reader is not None
            self.writer.write(head)
            while not resp.done:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionResetError("connection closed before the response ended")
                parser.feed_data(data)
        resp.status = parser.get_status_code()
        if not parser.should_keep_alive():
            self.close()
        return resp

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, httptools.HttpParserError):
        return "bad_response"
    if isinstance(exc, ConnectionError):
        return "reset"
    return type(exc).__name__


async def admin_call(addr: HostPort, method: str, path: str) -> tuple[int, bytes]:
    """One request to an LB admin endpoint (it closes after each answer)."""
    conn = HttpConnection(addr)
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    try:
        resp = await conn.request(head, 2.0, keep_body=True)
    finally:
        conn.close()
    return resp.status, resp.body


# --- load -------------------------------------------------------------------------------


class Sample(NamedTuple):
    """One request as the client saw it; times in seconds since the demo started."""

    t: float
    zone: str
    backend: str
    status: int
    latency: float
    error: str

    @property
    def ok(self) -> bool:
        return not self.error and 200 <= self.status < 400

    @property
    def end(self) -> float:
        return self.t + self.latency


@dataclass(frozen=True, slots=True)
class Target:
    """Where one zone's clients send their requests, and how many per second."""

    zone: str
    listener: str
    addr: HostPort
    rate: float
    devices: tuple[str, ...]


class LoadGen:
    """Paced closed-loop clients: `conns` keep-alive connections per zone.

    Each connection sends at 1/`conns` of its zone's rate; a slow answer delays that
    connection's next request but never causes a burst to catch up, so the rate is
    an upper bound whatever the LB does.
    """

    def __init__(
        self,
        targets: Sequence[Target],
        host: str,
        clock: Callable[[], float],
        conns: int = CONNS_PER_ZONE,
    ) -> None:
        self.targets = targets
        self.host = host
        self.clock = clock
        self.conns = conns
        self.samples: list[Sample] = []
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for target in self.targets:
            if target.rate <= 0:
                continue
            for i in range(self.conns):
                self._tasks.append(loop.create_task(self._client(target, i)))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _client(self, target: Target, i: int) -> None:
        conn = HttpConnection(target.addr)
        rng = random.Random(f"{target.zone}-{i}")
        interval = self.conns / target.rate
        next_t = self.clock() + interval * i / self.conns
        prefix = f"GET / HTTP/1.1\r\nHost: {self.host}\r\nUser-Agent: zonegate-demo\r\n"
        try:
            while True:
                delay = next_t - self.clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_t = max(next_t + interval, self.clock() - interval)
                head = f"{prefix}X-Device-Id: {rng.choice(target.devices)}\r\n\r\n".encode()
                t = self.clock()
                try:
                    resp = await conn.request(head, REQUEST_TIMEOUT)
                except (OSError, TimeoutError, httptools.HttpParserError) as exc:
                    conn.close()
                    self.samples.append(
                        Sample(t, target.zone, "", 0, self.clock() - t, _error_kind(exc))
                    )
                    continue
                self.samples.append(
                    Sample(t, target.zone, resp.backend, resp.status, self.clock() - t, "")
                )
        finally:
            conn.close()


# --- steps and budgets --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Budget:
    """What a step may cost clients. Times are seconds after the step's fault."""

    max_failed: int = 0
    failed_after_detect: bool = False
    """Count only requests started after the LB detected the fault."""
    max_detect: float | None = None
    max_recover: float | None = None

    def describe(self) -> str:
        """Short form for the table: `fail<=0 (after det) det<=5s rec<=1s`."""
        parts = [f"fail<={self.max_failed}" + (" after det" if self.failed_after_detect else "")]
        if self.max_detect is not None:
            parts.append(f"det<={self.max_detect:g}s")
        if self.max_recover is not None:
            parts.append(f"rec<={self.max_recover:g}s")
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "max_failed": self.max_failed,
            "failed_after_detect": self.failed_after_detect,
            "max_detect_s": self.max_detect,
            "max_recover_s": self.max_recover,
        }


@dataclass(frozen=True, slots=True)
class Check:
    """A step-specific condition, with what was measured.

    A check that is not `required` is advisory: shown (as "warn"), never a budget miss.
    """

    name: str
    ok: bool
    detail: str
    required: bool = True


Action = Callable[["Drill", "StepRun"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Step:
    """One drill: do `action`, observe for at least `duration` s, judge by `budget`.

    `detect_means`/`recover_means` say what the detection and recovery times measure
    for this step (they are shown in the report).
    """

    name: str
    title: str
    action: Action
    duration: float
    budget: Budget = Budget()
    settle: float = 1.0
    """Least observation time after the action returns."""
    detect_means: str = ""
    recover_means: str = ""


@dataclass
class StepRun:
    """One step's measurements. Actions fill in `fault`, `detect`, checks."""

    step: Step
    start: float
    end: float = 0.0
    fault: float | None = None
    detect: float | None = None
    recovered: float | None = None
    watch_zone: str | None = None
    recover_when: Callable[[Sample], bool] | None = None
    """Recovery = the first success matching this after the fault and after the last
    failure in `watch_zone` (unless the action set `recovered` itself)."""
    checks: list[Check] = field(default_factory=list)
    late_checks: list[Callable[[list[Sample]], Check]] = field(default_factory=list)
    """Evaluated on the step's samples when it ends."""
    events: list[tuple[float, str]] = field(default_factory=list)
    # results (see `evaluate`)
    requests: int = 0
    failed: int = 0
    counted_failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    answered: dict[str, dict[str, int]] = field(default_factory=dict)
    """Successful requests per client zone and backend."""
    p50: float | None = None
    p99: float | None = None
    missed: list[str] = field(default_factory=list)
    met: bool = False

    @property
    def detect_s(self) -> float | None:
        if self.detect is None or self.fault is None:
            return None
        return self.detect - self.fault

    @property
    def recover_s(self) -> float | None:
        if self.recovered is None or self.fault is None:
            return None
        return self.recovered - self.fault

    def to_json(self) -> dict[str, Any]:
        def r(x: float | None, scale: float = 1.0) -> float | None:
            return None if x is None else round(x * scale, 4)

        return {
            "name": self.step.name,
            "title": self.step.title,
            "start_s": r(self.start),
            "end_s": r(self.end),
            "requests": self.requests,
            "failed": self.failed,
            "failed_counted": self.counted_failed,
            "errors": self.errors,
            "answered": self.answered,
            "p50_ms": r(self.p50, 1000),
            "p99_ms": r(self.p99, 1000),
            "fault_s": r(self.fault),
            "detect_s": r(self.detect_s),
            "recover_s": r(self.recover_s),
            "detect_means": self.step.detect_means,
            "recover_means": self.step.recover_means,
            "budget": self.step.budget.to_json(),
            "checks": [
                {"name": c.name, "ok": c.ok, "detail": c.detail, "required": c.required}
                for c in self.checks
            ],
            "events": [{"t_s": r(t), "event": e} for t, e in self.events],
            "missed": self.missed,
            "met": self.met,
        }


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of already sorted values."""
    if not sorted_values:
        return None
    k = max(0, math.ceil(q / 100 * len(sorted_values)) - 1)
    return sorted_values[k]


def evaluate(run: StepRun, samples: Sequence[Sample]) -> None:
    """Fill in `run`'s results from the requests that started during the step."""
    failed = [s for s in samples if not s.ok]
    run.requests = len(samples)
    run.failed = len(failed)
    run.errors = dict(Counter(s.error or f"http_{s.status}" for s in failed))
    answered: dict[str, Counter[str]] = {}
    for s in samples:
        if s.ok:
            answered.setdefault(s.zone, Counter())[s.backend] += 1
    run.answered = {z: dict(sorted(c.items())) for z, c in answered.items()}
    latencies = sorted(s.latency for s in samples)
    run.p50 = percentile(latencies, 50)
    run.p99 = percentile(latencies, 99)
    for late in run.late_checks:
        run.checks.append(late(list(samples)))
    run.late_checks = []
    if run.recovered is None and run.fault is not None and run.recover_when is not None:
        after = run.fault
        for s in failed:
            if s.end >= after and (run.watch_zone is None or s.zone == run.watch_zone):
                after = s.end
        run.recovered = min(
            (s.end for s in samples if s.ok and s.end >= after and run.recover_when(s)),
            default=None,
        )
    b = run.step.budget
    since = run.start
    if b.failed_after_detect:
        # Undetected: everything after the fault counts.
        since = run.detect if run.detect is not None else (run.fault or run.start)
    run.counted_failed = sum(1 for s in failed if s.t >= since)
    missed = []
    if run.counted_failed > b.max_failed:
        missed.append(f"{run.counted_failed} failed > {b.max_failed}")
    for label, limit, value in (
        ("detect", b.max_detect, run.detect_s),
        ("recover", b.max_recover, run.recover_s),
    ):
        if limit is None:
            continue
        if value is None:
            missed.append(f"no {label}")
        elif value > limit:
            missed.append(f"{label} {value:.2f}s > {limit:g}s")
    missed.extend(f"check {c.name}" for c in run.checks if c.required and not c.ok)
    run.missed = missed
    run.met = not missed


# --- the drill steps ----------------------------------------------------------------


def default_steps(scn: Scenario, quick: bool) -> list[Step]:
    """The LB drills on the scenario's zone; `quick` shortens the observation windows."""
    q = quick
    zone, home, backup = scn.zone, scn.home, scn.backup

    everyone = (*scn.home_backends, *scn.backup_backends)

    async def baseline(d: Drill, run: StepRun) -> None:
        # Also proves the layout: the names in X-Backend are the topology's.
        run.late_checks.append(lambda ss: _all_answer(everyone, ss))

    async def kill_one(d: Drill, run: StepRun) -> None:
        victim = scn.kill_one
        run.watch_zone = zone
        run.recover_when = lambda s: s.zone == zone
        d.kill_backend(run, victim)
        gone = await d.wait_status(
            zone, lambda st: not _backend(st, home, victim).get("available", True), 10.0
        )
        if gone:
            run.detect = d.now()
            d.event(run, f"{zone} LB: {home}/{victim} {_describe(d.status[zone], home, victim)}")
        run.checks.append(
            Check("ejected", gone, f"{victim} {'left' if gone else 'still in'} the rotation")
        )
        start = run.fault or 0.0
        run.late_checks.append(
            lambda ss: _count_check(
                "dead backend answers nothing",
                [s for s in ss if s.backend == victim and s.t > start + 0.05],
                0,
            )
        )

    async def drain(d: Drill, run: StepRun) -> None:
        victim = scn.drain
        run.fault = d.now()
        status, _ = await d.admin_post(zone, f"/pools/{home}/backends/{victim}/drain")
        acked = run.detect = d.now()
        d.event(run, f"POST /pools/{home}/backends/{victim}/drain -> {status}")
        run.checks.append(Check("admin API", status == 200, f"answered {status}"))
        # The LB applies the state before it answers, so no request the client sends
        # after the answer may reach the drained backend.
        run.late_checks.append(
            lambda ss: _count_check(
                f"no new requests to {victim} after the drain",
                [s for s in ss if s.backend == victim and s.t >= acked],
                0,
            )
        )

    async def kill_all(d: Drill, run: StepRun) -> None:
        run.watch_zone = zone
        backups = set(scn.backup_backends)
        run.recover_when = lambda s: s.zone == zone and s.backend in backups
        for name in scn.home_backends:
            if d.backends[name].alive:
                d.kill_backend(run, name)
        if run.fault is None:
            run.fault = d.now()
        empty = await d.wait_status(zone, lambda st: _pool(st, home).get("healthy") == 0, 15.0)
        if empty:
            run.detect = d.now()
            d.event(run, f"{zone} LB: {home} {_pool(d.status[zone], home).get('plan', '')}")
        run.checks.append(
            Check("detected", empty, f"{home} {'empty' if empty else 'not seen empty'} in /status")
        )
        await d.wait_samples(lambda s: s.t > (run.fault or 0) and run.recover_when(s), 10.0)  # type: ignore[misc]

        def served_by_backup(ss: list[Sample]) -> Check:
            since = run.detect if run.detect is not None else math.inf
            mine = [s for s in ss if s.zone == zone and s.t >= since]
            by_backup = sum(1 for s in mine if s.ok and s.backend in backups)
            ok = bool(mine) and by_backup == len(mine)
            return Check(
                f"{backup} serves {zone}",
                ok,
                f"{by_backup}/{len(mine)} requests to {zone} after detection answered by {backup}",
            )

        run.late_checks.append(served_by_backup)

    async def restore(d: Drill, run: StepRun) -> None:
        run.fault = d.now()
        dead = [n for n in scn.home_backends if not d.backends[n].alive]
        await d.restart_backends(run, dead)
        status, _ = await d.admin_post(zone, f"/pools/{home}/backends/{scn.drain}/enable")
        d.event(run, f"POST /pools/{home}/backends/{scn.drain}/enable -> {status}")
        run.checks.append(Check("admin API", status == 200, f"enable answered {status}"))
        up = await d.wait_status(
            zone,
            lambda st: all(_backend(st, home, n).get("available") for n in scn.home_backends),
            30.0,
        )
        if up:
            run.detect = d.now()
            d.event(run, f"{zone} LB: every backend of {home} available")
        run.checks.append(Check("back up", up, f"{home} {'all' if up else 'not all'} available"))
        since = run.detect or math.inf
        want = set(scn.home_backends)
        seen: set[str] = set()

        def taking(s: Sample) -> bool:
            if s.t >= since and s.zone == zone and s.ok and s.backend in want:
                seen.add(s.backend)
            return seen == want

        if up and await d.wait_samples(taking, 20.0):
            run.recovered = d.now()
            d.event(run, f"every backend of {home} answers {zone}'s clients again")
        run.checks.append(
            Check(
                "taking traffic",
                seen == want,
                f"{len(seen)}/{len(want)} of {home} answered requests after coming back",
            )
        )

    async def final(d: Drill, run: StepRun) -> None:
        def home_serves(ss: list[Sample]) -> Check:
            mine = [s for s in ss if s.zone == zone and s.ok]
            local = sum(1 for s in mine if s.backend in scn.home_backends)
            return Check(
                f"{zone} serves itself",
                bool(mine) and local == len(mine),
                f"{local}/{len(mine)} of {zone}'s requests answered by {home}",
            )

        run.late_checks.append(home_serves)
        run.late_checks.append(lambda ss: _all_answer(everyone, ss))

    return [
        Step("baseline", "traffic only", baseline, 2.0 if q else 5.0),
        Step(
            "kill-one",
            f"SIGKILL {scn.kill_one}: retries hide it, the LB ejects it",
            kill_one,
            2.0 if q else 6.0,
            Budget(max_failed=0, max_detect=5.0, max_recover=1.0),
            detect_means=f"{scn.kill_one} unavailable in the LB's /status",
            recover_means=f"first success in {zone} after the last failure",
        ),
        Step(
            "drain",
            f"drain {scn.drain} via the admin API: no new requests reach it",
            drain,
            2.0 if q else 5.0,
            Budget(max_failed=0, max_detect=1.0),
            detect_means="admin API answer",
        ),
        Step(
            "kill-all",
            f"SIGKILL every backend of {home}: {backup} serves {zone}",
            kill_all,
            3.5 if q else 8.0,
            Budget(max_failed=0, failed_after_detect=True, max_detect=6.0, max_recover=6.0),
            settle=1.5 if q else 3.0,
            detect_means=f"{home} empty in the LB's /status",
            recover_means=f"{backup} answers {zone} with no failure after",
        ),
        Step(
            "restore",
            f"restart {home}'s backends, enable {scn.drain}",
            restore,
            2.0 if q else 8.0,
            Budget(max_failed=0, max_detect=15.0, max_recover=20.0),
            detect_means=f"all of {home} available in /status",
            recover_means=f"all of {home} answering {zone} again",
        ),
        Step("final", "traffic only: the zone serves itself again", final, 2.0 if q else 5.0),
    ]


def _pool(status: dict[str, Any] | None, pool: str) -> dict[str, Any]:
    return ((status or {}).get("pools") or {}).get(pool) or {}


def _backend(status: dict[str, Any] | None, pool: str, backend: str) -> dict[str, Any]:
    for b in _pool(status, pool).get("backends", []):
        if b.get("id") == backend:
            return b
    return {}


def _describe(
    status: dict[str, Any] | None, pool: str, backend: str, *, reason: bool = True
) -> str:
    b = _backend(status, pool, backend)
    if not b:
        return "?"
    text = b["health"]
    if b.get("admin") != "enabled":
        text += f", {b['admin']}"
    if b.get("ejected_for"):
        text += f", ejected {b['ejected_for']:.1f}s"
    if reason and b.get("reason") and not b.get("available"):
        text += f" ({b['reason']})"
    return text


def _all_answer(names: Iterable[str], samples: list[Sample]) -> Check:
    """Advisory: a healthy backend that answers nothing points at the balancer."""
    answered = Counter(s.backend for s in samples if s.ok)
    counts = ", ".join(f"{n} {answered[n]}" for n in names)
    silent = [n for n in names if not answered[n]]
    return Check("every backend answers", not silent, counts, required=False)


def _count_check(name: str, bad: list[Sample], limit: int) -> Check:
    return Check(name, len(bad) <= limit, f"{len(bad)} seen (allowed {limit})")


# --- the drill runner -------------------------------------------------------------------


class Drill:
    """Starts the processes, drives the load and the steps, renders progress."""

    def __init__(
        self, layout: Layout, steps: Sequence[Step], run_dir: Path, console: Console
    ) -> None:
        self.layout = layout
        self.steps = steps
        self.run_dir = run_dir
        self.console = console
        self.t0 = time.monotonic()
        self.backends: dict[str, Child] = {}
        self.lbs: dict[str, Child] = {}
        self.status: dict[str, dict[str, Any] | None] = {lb.zone: None for lb in layout.lbs}
        self.runs: list[StepRun] = []
        self.current: StepRun | None = None
        self.load: LoadGen | None = None
        self._step_index = 0  # first sample of the current step
        self._poller: asyncio.Task[None] | None = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    def event(self, run: StepRun | None, msg: str) -> None:
        t = self.now()
        if run is not None:
            run.events.append((t, msg))
        self.console.print(f"[dim]{t:7.2f}s[/dim]  {escape(msg)}")

    # processes

    async def start_processes(self) -> None:
        """Backends first (so the LBs' first health round finds them), then the LBs."""
        py = sys.executable
        for b in self.layout.backends:
            argv = [py, "-m", "zonegate.lab.backend", "--listen", str(b.address)]
            argv += ["--name", b.name, "--zone", b.zone]
            self.backends[b.name] = Child(
                b.name, argv, "listening on", self.run_dir / f"backend-{b.name}.log"
            )
        for lb in self.layout.lbs:
            argv = [py, "-m", "zonegate", "lb", str(self.layout.path), "--zone", lb.zone]
            argv += ["--drain-timeout", "2s"]
            if not lb.admin_in_file:
                argv += ["--admin", str(lb.admin)]
            self.lbs[lb.zone] = Child(
                f"lb {lb.zone}", argv, "zonegate lb ready", self.run_dir / f"lb-{lb.zone}.log"
            )
        for group in (self.backends, self.lbs):
            for child in group.values():
                child.spawn()
            for child in group.values():
                await child.wait_ready()
        for b in self.layout.backends:
            self.event(
                None, f"backend {b.name} ({b.zone}) on {b.address}, pid {self.backends[b.name].pid}"
            )
        for lb in self.layout.lbs:
            self.event(
                None,
                f"zonegate lb --zone {lb.zone}: {lb.listener} on {lb.bind}, admin {lb.admin}, "
                f"pid {self.lbs[lb.zone].pid}",
            )

    def kill_backend(self, run: StepRun, name: str) -> None:
        """SIGKILL a backend; the step's fault time is the first kill."""
        child = self.backends[name]
        pid = child.pid
        if run.fault is None:
            run.fault = self.now()
        child.kill()
        self.event(run, f"SIGKILL {name} (pid {pid})")

    async def restart_backends(self, run: StepRun, names: Sequence[str]) -> None:
        """Start them again on their ports (retrying while a port is briefly busy)."""
        for name in names:
            self.backends[name].spawn()
        for name in names:
            child = self.backends[name]
            deadline = time.monotonic() + 10.0
            while True:
                try:
                    await child.wait_ready()
                    break
                except DemoError:
                    if "in use" not in child.output() or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
                    child.spawn()
            self.event(run, f"restarted {name} (pid {child.pid})")

    async def shutdown(self) -> None:
        """Stop the load, then the LBs (so they never see backends vanish), then the rest."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self.load is not None:
            await self.load.stop()
        stop_all(self.lbs.values(), 5.0)
        stop_all(self.backends.values(), 3.0)

    # the LB's view

    async def fetch_status(self, zone: str) -> dict[str, Any] | None:
        lb = next(lb for lb in self.layout.lbs if lb.zone == zone)
        try:
            status, body = await admin_call(lb.admin, "GET", "/status")
            doc = json.loads(body) if status == 200 else None
        except (OSError, TimeoutError, ValueError, httptools.HttpParserError):
            doc = None
        self.status[zone] = doc
        return doc

    async def wait_status(
        self, zone: str, pred: Callable[[dict[str, Any]], bool], within: float
    ) -> bool:
        """Poll `zone`'s /status until `pred` holds; False after `within` s."""
        deadline = time.monotonic() + within
        while True:
            doc = await self.fetch_status(zone)
            if doc is not None and pred(doc):
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(STATUS_POLL)

    async def wait_samples(self, pred: Callable[[Sample], bool], within: float) -> bool:
        """Wait until a request recorded from now on (or in this step) satisfies `pred`."""
        assert self.load is not None
        i = self._step_index
        deadline = time.monotonic() + within
        while True:
            samples = self.load.samples
            while i < len(samples):
                if pred(samples[i]):
                    return True
                i += 1
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)

    async def admin_post(self, zone: str, path: str) -> tuple[int, bytes]:
        lb = next(lb for lb in self.layout.lbs if lb.zone == zone)
        try:
            return await admin_call(lb.admin, "POST", path)
        except (OSError, TimeoutError, httptools.HttpParserError) as exc:
            return 0, str(exc).encode()

    async def _poll_status(self) -> None:
        while True:
            for zone in self.status:
                await self.fetch_status(zone)
            await asyncio.sleep(0.5)

    # the run

    async def run(self) -> list[StepRun]:
        """Run every step under load, with a live view; return the measured steps."""
        lay = self.layout
        zones = [lb.zone for lb in lay.lbs]
        targets = [
            Target(
                lb.zone,
                lb.listener,
                lb.bind,
                TOTAL_RATE * lay.shares[lb.zone],
                tuple(device_ids(lay.topo, lay.host, lb.zone, zones, 2000)),
            )
            for lb in lay.lbs
        ]
        self.load = LoadGen(targets, lay.host, self.now)
        self.load.start()
        self._poller = asyncio.get_running_loop().create_task(self._poll_status())
        with Live(self.render(), console=self.console, auto_refresh=False, transient=True) as live:
            ticker = asyncio.get_running_loop().create_task(self._refresh(live))
            try:
                for i, step in enumerate(self.steps, 1):
                    await self._run_step(i, step)
            finally:
                ticker.cancel()
        return self.runs

    async def _refresh(self, live: Live) -> None:
        while True:
            live.update(self.render(), refresh=True)
            await asyncio.sleep(0.25)

    async def _run_step(self, i: int, step: Step) -> None:
        assert self.load is not None
        self._step_index = len(self.load.samples)
        run = StepRun(step, self.now())
        self.current = run
        self.runs.append(run)
        self.console.rule(f"step {i}/{len(self.steps)}  {step.name}: {step.title}", align="left")
        await step.action(self, run)
        end = max(run.start + step.duration, self.now() + step.settle)
        await asyncio.sleep(max(0.0, end - self.now()))
        run.end = self.now()
        samples = [s for s in self.load.samples[self._step_index :] if s.t < run.end]
        evaluate(run, samples)
        verdict = (
            "[green]budget met[/green]"
            if run.met
            else f"[red]MISSED: {'; '.join(run.missed)}[/red]"
        )
        self.console.print(
            f"[dim]{run.end:7.2f}s[/dim]  {step.name}: {run.requests} requests, "
            f"{run.failed} failed: {verdict}"
        )

    # display

    def render(self) -> Group:
        """The live view: the current step, traffic per zone, requests per backend."""
        run = self.current
        samples = self.load.samples[self._step_index :] if self.load else []
        now = self.now()
        head = Text(f"zonegate demo  t={now:5.1f}s  ", style="bold")
        if run is not None:
            n = self.runs.index(run) + 1
            head.append(f"step {n}/{len(self.steps)} {run.step.name}", style="bold cyan")
            head.append(f" ({now - run.start:.1f}s): {run.step.title}")
        else:
            head.append("starting")
        traffic = Table(title="traffic this step", title_justify="left", expand=False)
        for col in ("zone", "listener", "req/s", "requests", "failed", "errors", "p99 1s"):
            traffic.add_column(
                col, justify="left" if col in ("zone", "listener", "errors") else "right"
            )
        per_backend: Counter[tuple[str, str]] = Counter()
        for lb in self.layout.lbs:
            mine = [s for s in samples if s.zone == lb.zone]
            recent = [s for s in mine if s.t >= now - 1.0]
            bad = [s for s in mine if not s.ok]
            kinds = Counter(s.error or f"http_{s.status}" for s in bad)
            lat = sorted(s.latency for s in recent)
            p99 = percentile(lat, 99)
            traffic.add_row(
                lb.zone,
                f"{lb.listener} {lb.bind}",
                str(len(recent)),
                str(len(mine)),
                Text(str(len(bad)), style="red" if bad else "green"),
                ", ".join(f"{k} {v}" for k, v in kinds.most_common(3)),
                f"{p99 * 1000:.1f} ms" if p99 is not None else "-",
            )
            for s in mine:
                if s.ok:
                    per_backend[(s.backend, lb.zone)] += 1
        zone = self.layout.scenario.zone
        backends = Table(title=f"answered by (health as {zone}'s LB sees it)", title_justify="left")
        backends.add_column("backend")
        backends.add_column("zone")
        backends.add_column("process")
        backends.add_column("health")
        for lb in self.layout.lbs:
            backends.add_column(f"via {lb.zone}", justify="right")
        status = self.status.get(zone)
        pools = {
            b.id: name
            for name in (self.layout.scenario.home, self.layout.scenario.backup)
            for b in self.layout.topo.pools[name].backends
        }
        for b in self.layout.backends:
            child = self.backends.get(b.name)
            proc = Text("up", style="green") if child and child.alive else Text("dead", style="red")
            pool = pools.get(b.name)
            health = _describe(status, pool, b.name, reason=False) if pool else "-"
            style = "green" if health.startswith("up") and "," not in health else "yellow"
            backends.add_row(
                b.name,
                b.zone,
                proc,
                Text(health, style=style if health != "-" else ""),
                *(str(per_backend[(b.name, lb.zone)]) for lb in self.layout.lbs),
            )
        return Group(head, traffic, backends)


# --- report ---------------------------------------------------------------------------


def _fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}s"


def _fmt_ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.1f} ms"


def summary_table(runs: Sequence[StepRun]) -> Table:
    """The end-of-demo table: one row per step."""
    table = Table(title="zonegate demo: what clients saw", title_justify="left")
    for col, just in (
        ("step", "left"),
        ("requests", "right"),
        ("failed", "right"),
        ("p50", "right"),
        ("p99", "right"),
        ("detect", "right"),
        ("recover", "right"),
        ("budget", "left"),
        ("met", "left"),
    ):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for run in runs:
        b = run.step.budget
        failed = str(run.failed)
        if b.failed_after_detect:
            failed += f" ({run.counted_failed} after)"
        table.add_row(
            run.step.name,
            str(run.requests),
            Text(failed, style="red" if run.counted_failed else ""),
            _fmt_ms(run.p50),
            _fmt_ms(run.p99),
            _fmt_s(run.detect_s),
            _fmt_s(run.recover_s),
            b.describe(),
            Text("yes", style="bold green") if run.met else Text("NO", style="bold red"),
        )
    return table


def print_summary(console: Console, runs: Sequence[StepRun]) -> None:
    """The summary table, then what each step's times mean and its checks."""
    console.print()
    console.print(summary_table(runs))
    notes = Table.grid(padding=(0, 2))
    notes.add_column(style="bold")
    notes.add_column()
    for run in runs:
        lines = []
        if run.step.detect_means and run.detect_s is not None:
            lines.append(f"[dim]detect:[/dim]  {escape(run.step.detect_means)}")
        if run.step.recover_means and run.recover_s is not None:
            lines.append(f"[dim]recover:[/dim] {escape(run.step.recover_means)}")
        for c in run.checks:
            if c.ok:
                mark = "[green]ok  [/green]"
            else:
                mark = "[red]FAIL[/red]" if c.required else "[yellow]warn[/yellow]"
            lines.append(f"{mark} {escape(c.name)}: {escape(c.detail)}")
        if run.errors:
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(run.errors.items()))
            lines.append(f"[red]errors:[/red] {kinds}")
        for i, line in enumerate(lines):
            notes.add_row(run.step.name if i == 0 else "", line)
    console.print(notes)


def write_report(path: str, doc: dict[str, Any]) -> None:
    dest = Path(path)
    if dest.parent != Path():
        dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


# --- entry point ----------------------------------------------------------------------


def _run_dir() -> Path:
    chosen = os.environ.get("ZONEGATE_DEMO_DIR")
    if chosen:
        path = Path(chosen)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return Path(tempfile.mkdtemp(prefix="zonegate-demo-"))


def prepare(topology: str | None, run_dir: Path, console: Console) -> Layout:
    """Find and load the topology, move busy ports, derive the layout."""
    if topology is not None:
        path = Path(topology)
    else:
        found = find_default_topology()
        if found is None:
            raise DemoError(
                f"cannot find {DEFAULT_TOPOLOGY} (run from the zonegate checkout, "
                "or pass --topology FILE)"
            )
        path = found
    try:
        topo = load_topology(path)
    except ConfigErrors as e:
        raise DemoError(f"invalid topology:\n{e}") from None
    _check_loopback(topo)
    console.print(f"topology  {path}")
    addrs = topology_addresses(topo)
    moved = plan_ports(addrs)
    if moved:
        busy = [str(a) for a in addrs if not port_is_free(a)] or [str(a) for a in moved]
        path, topo = rewrite_topology(topo, moved, run_dir / "topology.yaml")
        console.print(
            f"[yellow]ports busy: {', '.join(busy)}; moved the layout "
            f"({', '.join(f'{o.port}->{n.port}' for o, n in moved.items())}); "
            f"rewritten topology: {path}[/yellow]"
        )
    layout = plan_layout(topo, path)
    scn = layout.scenario
    console.print(
        f"drill     zone {scn.zone}: pool {scn.home} ({', '.join(scn.home_backends)}), "
        f"backup {scn.backup}"
    )
    console.print(f"logs      {run_dir}")
    return layout


@dataclass
class _Outcome:
    """What `_main` leaves behind for `run_demo`, whether it returns or is interrupted."""

    drill: Drill | None = None
    signal: str | None = None


async def _main(
    layout: Layout, steps: Sequence[Step], run_dir: Path, out: _Outcome, console: Console
) -> None:
    drill = out.drill = Drill(layout, steps, run_dir, console)
    task = asyncio.current_task()
    assert task is not None

    def on_sigterm() -> None:
        out.signal = "SIGTERM"
        task.cancel()

    # SIGTERM unwinds like Ctrl-C (on SIGINT the runner cancels this task), through the
    # finally below, which stops every process.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        await drill.start_processes()
        await drill.run()
    finally:
        await drill.shutdown()


def run_demo(topology: str | None, quick: bool, report: str | None) -> int:
    """`zonegate demo`: 0 if every step met its budget, 1 if not (or it failed), 2 if it
    could not start, 130/143 on SIGINT/SIGTERM."""
    import uvloop

    # Piped output (CI, tests) gets a width that fits the summary table, not rich's 80.
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    console = Console(highlight=False, width=120 if piped else None)
    run_dir = _run_dir()
    started = time.monotonic()
    try:
        layout = prepare(topology, run_dir, console)
    except DemoError as e:
        console.print(f"[red]zonegate demo: {escape(str(e))}[/red]")
        return 2
    steps = default_steps(layout.scenario, quick)
    out = _Outcome()
    error: str | None = None
    try:
        uvloop.run(_main(layout, steps, run_dir, out, console))
    except DemoError as e:
        error = str(e)
    except (KeyboardInterrupt, asyncio.CancelledError):
        out.signal = out.signal or "SIGINT"
    finally:
        # Normally Drill.shutdown did it; this covers a second Ctrl-C during it.
        for child in list(_children.values()):
            child.kill()
    done = [r for r in (out.drill.runs if out.drill else []) if r.end]
    elapsed = time.monotonic() - started
    if done:
        print_summary(console, done)
    ok = not error and not out.signal and len(done) == len(steps) and all(r.met for r in done)
    if report:
        procs = {}
        if out.drill is not None:
            for c in (*out.drill.backends.values(), *out.drill.lbs.values()):
                procs[c.name] = c.pids
        write_report(
            report,
            {
                "topology": str(layout.path),
                "quick": quick,
                "run_dir": str(run_dir),
                "duration_s": round(elapsed, 2),
                "ok": ok,
                "error": error,
                "interrupted": out.signal,
                "processes": procs,
                "steps": [r.to_json() for r in done],
            },
        )
    console.print()
    if out.signal:
        console.print(f"[yellow]{out.signal} after {elapsed:.1f}s: every process stopped[/yellow]")
        return 143 if out.signal == "SIGTERM" else 130
    if error:
        console.print(f"[red]zonegate demo failed: {escape(error)}[/red]")
        console.print(f"logs: {run_dir}")
        return 1
    missed = [r.step.name for r in done if not r.met]
    if missed:
        console.print(f"[bold red]budget missed: {', '.join(missed)}[/bold red] ({elapsed:.1f}s)")
    else:
        console.print(f"[bold green]every budget met[/bold green] ({elapsed:.1f}s)")
    console.print(f"logs: {run_dir}" + (f"   report: {report}" if report else ""))
    return 0 if ok else 1
