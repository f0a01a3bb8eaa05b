"""`zonegate demo`: a whole two-zone access layer on loopback, broken on purpose, measured.

The demo answers one question with numbers: what do clients see when parts of the
access layer fail, layer by layer? It needs no root and touches nothing but
127.0.0.1:

1. **Topology.** ``examples/two-zones.yaml`` (or ``--topology FILE``) is loaded and
   checked. If any of its ports (backends, listeners, LB admins, DNS, HTTPDNS, and
   the control plane's 9900) is taken, the whole layout is shifted to free ports and
   a rewritten copy is written to the run directory; the demo says which ports moved.
2. **Processes**, each in its own session, its output in a log file of the run
   directory (printed at start), each checked ready by its ready line:
   one demo backend per backend of the file (``python -m zonegate.lab.backend``);
   ``zonegate control`` (SQLite store in the run directory, an operator token written
   to ``tokens.yaml`` there); one ``zonegate lb`` per zone, ``zonegate dns`` and
   ``zonegate httpdns``, all three following the control plane (``--control``, with a
   ``--control-cache`` file each).
3. **Load.** `zonegate.lab.load.LoadGen`: about 300 requests/s of ``GET
   http://api.example.test/`` from many devices. Where each request goes is one
   pluggable `Router` (`make_router`): by default the SDK (`zonegate.client`, see
   `zonegate.lab.sdkload`): 40 devices, one ``AsyncTransport`` each, zone domains
   pinned to the LB listeners; with ``ZONEGATE_DEMO_CLIENT=split`` the demo's own
   `SplitRouter` (5,000 device ids): the control plane's split map, refreshed on a
   higher ``X-Zonegate-Version``, and a retry of the GET on the other zone after a
   network error. Every request is recorded (`zonegate.lab.drills.Sample`).
4. **Drill.** A list of `Step`s, each an action and a `Budget` (failed requests
   allowed, longest detection and recovery time) plus step-specific checks. Zone A
   is the drill zone (changping), zone B the other one (yanqing):

   ========  ===============================================================
   baseline  traffic only; HTTPDNS and DNS answer the zone domains
   kill-one  SIGKILL one backend of zone A: retries and ejection hide it
             (0 failed)
   drain     drain a backend through the control API: the LB applies it
             (detect), and no request that starts after that reaches it
   kill-all  SIGKILL every backend of zone A: once the LB sees the pool empty,
             the backup pool in zone B answers every request (0 failed after
             detection)
   kill-lb   SIGKILL zone A's LB: zone A's devices fail over to zone B in
             the client (0 failed; recover = first success on B)
   cutover   ``POST /v1/cutover/DOMAIN {"to": B}``: once the client follows
             the new version (detect), every request goes to zone B (0 failed)
   restore   restart the backends and zone A's LB, enable the drained backend
             and restore the split through the control API: zone A serves its
             devices with all of its backends again
   final     traffic only: no failures, each zone serves its own devices
   ========  ===============================================================

5. **Report.** A live view while it runs (the step, requests/s and errors per zone,
   every process); then a table per step (requests, failed, p50/p99 latency, detect
   and recovery times, budget met or not); ``report.json`` and ``report.html`` (a
   timeline of requests/s and errors per zone with the steps and faults marked, see
   `zonegate.lab.report`) in the run directory, or at ``--report FILE`` (and the same
   name with ``.html``). The exit status is 1 if any budget was missed.
6. **Cleanup.** Every process the demo started is stopped by its PID at the end, on
   Ctrl-C, SIGTERM and on errors.

The drill zone is derived from the topology: the first zone whose listener routes the
demo Host to a pool with at least two backends and a backup pool in another zone (for
two-zones.yaml: changping, pool web-cp, backup web-yq). To add a drill, write an
action ``async def act(drill, run)`` and append a `Step` in `default_steps`.

``ZONEGATE_DEMO_DIR`` names the run directory (logs, rewritten topology, store,
reports) instead of a fresh temporary one.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import ipaddress
import json
import logging
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httptools
import httpx
from rich import box
from rich.cells import cell_len
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.segment import Segment, Segments
from rich.table import Table
from rich.text import Text

from zonegate.errors import ConfigErrors
from zonegate.lab.drills import (
    Budget,
    Check,
    Sample,
    Step,
    StepRun,
    all_answer,
    count_check,
    evaluate,
    percentile,
)
from zonegate.lab.load import LoadGen, Router, SplitRouter, admin_call
from zonegate.lab.report import bucket_samples, render_html
from zonegate.lb.router import RouteTable
from zonegate.topology.load import load_topology
from zonegate.topology.schema import Topology
from zonegate.topology.types import HostPort

__all__ = [
    "Budget",
    "Check",
    "DemoError",
    "Drill",
    "Sample",
    "Step",
    "StepRun",
    "default_steps",
    "evaluate",
    "find_default_topology",
    "plan_layout",
    "plan_ports",
    "population",
    "rewrite_topology",
    "run_demo",
]

DEFAULT_TOPOLOGY = Path("examples") / "two-zones.yaml"
DEFAULT_HOST = "api.example.test"
DEFAULT_CONTROL = HostPort("127.0.0.1", 9900)
TOTAL_RATE = 300.0
"""Requests per second over all zones: enough to see every backend every second,
little enough for a two-core laptop that also runs eleven servers."""
DEVICES = 5000
WORKERS = 16
START_TIMEOUT = 20.0
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
    """Every address of the file the demo's processes listen on: backends, listeners,
    LB admins, and the dns section's listen, admin and httpdns_listen."""
    addrs: list[HostPort] = []
    for pool in topo.pools.values():
        addrs.extend(b.address for b in pool.backends)
    addrs.extend(lst.bind for lst in topo.listeners.values())
    addrs.extend(z.lb_admin for z in topo.zones.values() if z.lb_admin is not None)
    dns = topo.dns
    addrs.extend(a for a in (dns.listen, dns.admin, dns.httpdns_listen) if a is not None)
    return list(dict.fromkeys(addrs))


def port_is_free(addr: HostPort) -> bool:
    """True if a server could bind `addr` now, TCP and UDP (with SO_REUSEADDR, as ours do)."""
    family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(family, kind) as sock:
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
        return int(sock.getsockname()[1])


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
    dns = doc.get("dns") or {}
    for key in ("listen", "admin", "httpdns_listen"):
        if key in dns:
            dns[key] = sub(dns[key])
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
    engine: str = "builtin"
    """What moves its bytes: builtin or haproxy (the zone's lb_engine, or --engine)."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """What the drills break: a zone, the pool its traffic goes to, that pool's backup
    (in `other`, the zone that takes over)."""

    zone: str
    home: str
    backup: str
    home_backends: tuple[str, ...]
    backup_backends: tuple[str, ...]
    kill_one: str
    drain: str
    other: str = ""
    host: str = DEFAULT_HOST


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
    control: HostPort = DEFAULT_CONTROL
    dns: HostPort | None = None
    dns_admin: HostPort | None = None
    httpdns: HostPort | None = None


def plan_layout(
    topo: Topology,
    path: Path,
    control: HostPort = DEFAULT_CONTROL,
    engine: str | None = None,
) -> Layout:
    """Derive the processes, the client's targets and the drill scenario.

    `engine` (builtin or haproxy) runs every zone's LB on that engine; None keeps each
    zone's `lb_engine`.
    """
    _check_loopback(topo)
    host = next(iter(topo.split), DEFAULT_HOST)
    backends: dict[HostPort, BackendSpec] = {}
    for pool in topo.pools.values():
        for b in pool.backends:
            backends.setdefault(b.address, BackendSpec(b.id, pool.zone, b.address))
    lbs: list[LbSpec] = []
    used = {a.port for a in topology_addresses(topo)} | {control.port}
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
        lbs.append(
            LbSpec(
                zone_name,
                name,
                lst.bind,
                admin,
                zone.lb_admin is not None,
                engine or zone.lb_engine,
            )
        )
    if len(lbs) < 2:
        raise DemoError(
            f"{path}: the drills need two zones with an http listener; "
            f"found {', '.join(lb.zone for lb in lbs) or 'none'}"
        )
    if host not in topo.split:
        raise DemoError(f"{path}: the drills need a split map (section split) to cut over")
    scenario = _pick_scenario(topo, host, lbs)
    if scenario is None:
        raise DemoError(
            f"{path}: the drills need a zone whose listener routes Host {host} to a pool "
            "with at least two backends and a backup pool in another zone"
        )
    dns = topo.dns
    gslb = bool(dns.domains)
    return Layout(
        path,
        topo,
        host,
        tuple(backends.values()),
        tuple(lbs),
        _shares(topo, host, lbs),
        scenario,
        control,
        dns.listen if gslb else None,
        dns.admin if gslb else None,
        dns.httpdns_listen if gslb else None,
    )


def _pick_scenario(topo: Topology, host: str, lbs: list[LbSpec]) -> Scenario | None:
    split = topo.split[host]
    for lb in lbs:
        pool_name = RouteTable(topo.listeners[lb.listener].routes).match(host, b"/")
        pool = topo.pools.get(pool_name or "")
        if pool is None or not pool.backup or len(pool.backends) < 2:
            continue
        backup = topo.pools[pool.backup]
        if backup.zone == lb.zone or lb.zone not in split.zones or backup.zone not in split.zones:
            continue
        if not any(other.zone == backup.zone for other in lbs):
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
            backup.zone,
            host,
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


def population(n: int) -> list[str]:
    """`n` pseudo device ids (``dev-000000`` ...); the split map spreads them over the
    zones by `zonegate.balance.shard`'s hash, as for real devices."""
    return [f"dev-{i:06d}" for i in range(n)]


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


# --- the drill steps ----------------------------------------------------------------


def default_steps(scn: Scenario, quick: bool) -> list[Step]:
    """The drills on the scenario's zone; `quick` shortens the observation windows."""
    q = quick
    zone, home, backup, other, host = scn.zone, scn.home, scn.backup, scn.other, scn.host

    everyone = (*scn.home_backends, *scn.backup_backends)

    async def baseline(d: Drill, run: StepRun) -> None:
        # Also proves the layout: the names in X-Backend are the topology's.
        run.late_checks.append(lambda ss: all_answer(everyone, ss))
        run.checks.extend(await d.check_gslb())

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
            lambda ss: count_check(
                "dead backend answers nothing",
                [s for s in ss if s.backend == victim and s.t > start + 0.05],
                0,
            )
        )

    async def drain(d: Drill, run: StepRun) -> None:
        victim = scn.drain
        run.fault = d.now()
        status, doc = await d.control_write(f"/v1/pools/{home}/backends/{victim}/drain")
        d.event(run, f"control: POST /v1/pools/{home}/backends/{victim}/drain -> {status}")
        run.checks.append(
            Check("control API", status == 200, f"answered {status}, version {doc.get('version')}")
        )
        applied = await d.wait_status(
            zone, lambda st: _backend(st, home, victim).get("admin") == "drain", 5.0
        )
        if applied:
            run.detect = d.now()
            now_is = _describe(d.status[zone], home, victim)
            d.event(run, f"{zone} LB follows: {home}/{victim} {now_is}")
        run.checks.append(
            Check("LB follows", applied, f"{zone}'s LB {'shows' if applied else 'missed'} it")
        )
        since = run.detect if run.detect is not None else math.inf
        # The LB applies a version before /status shows it, so no request the client
        # sends after that may reach the drained backend.
        run.late_checks.append(
            lambda ss: count_check(
                f"no new requests to {victim} once the LB follows",
                [s for s in ss if s.backend == victim and s.t >= since],
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
        await d.check_gslb_sees(run, zone, up=False, within=6.0 if q else 10.0)

    async def kill_lb(d: Drill, run: StepRun) -> None:
        run.watch_zone = zone
        run.recover_when = lambda s: s.owner == zone and s.zone == other
        d.kill_lb(run, zone)
        fault = run.fault or 0.0
        moved = await d.wait_samples(lambda s: s.t > fault and s.ok and s.owner == zone, 5.0)
        if moved:
            d.event(run, f"{zone}'s devices answered by {other}'s LB (client failover)")

        def clients_moved(ss: list[Sample]) -> Check:
            mine = [s for s in ss if s.owner == zone and s.t > fault + 0.05]
            on_other = sum(1 for s in mine if s.ok and s.zone == other)
            return Check(
                f"{zone}'s devices on {other}",
                bool(mine) and on_other == len(mine),
                f"{on_other}/{len(mine)} requests of {zone}'s devices after the kill answered "
                f"by {other}'s LB",
            )

        run.late_checks.append(clients_moved)

    async def cutover(d: Drill, run: StepRun) -> None:
        run.fault = d.now()
        status, doc = await d.control_write(f"/v1/cutover/{host}", {"to": other})
        version = int(doc.get("version") or 0)
        d.event(run, f"control: POST /v1/cutover/{host} to {other} -> {status}, version {version}")
        run.checks.append(Check("control API", status == 200, f"answered {status}"))
        seen = await d.wait_router_version(version, 5.0) if status == 200 else None
        if seen is not None:
            run.detect = seen
            d.event(run, f"client follows version {version}: {host} all on {other}")
        run.checks.append(
            Check(
                "client follows",
                seen is not None,
                f"the client {'applied' if seen is not None else 'never applied'} version "
                f"{version}",
            )
        )
        since = seen if seen is not None else math.inf

        def all_on_other(ss: list[Sample]) -> Check:
            after = [s for s in ss if s.t >= since]
            good = sum(1 for s in after if s.ok and s.home == other and s.zone == other)
            return Check(
                f"all traffic on {other}",
                bool(after) and good == len(after),
                f"{good}/{len(after)} requests after the client applied version {version} sent "
                f"to and answered by {other}",
            )

        run.late_checks.append(all_on_other)

    async def restore(d: Drill, run: StepRun) -> None:
        run.fault = d.now()
        dead = [n for n in scn.home_backends if not d.backends[n].alive]
        await d.restart_backends(run, dead)
        await d.restart_lb(run, zone)
        status, _ = await d.control_write(f"/v1/pools/{home}/backends/{scn.drain}/enable")
        d.event(run, f"control: POST /v1/pools/{home}/backends/{scn.drain}/enable -> {status}")
        run.checks.append(Check("enable", status == 200, f"control answered {status}"))
        version = await d.restore_split(run, host)
        await d.wait_pool_back(
            run,
            zone,
            home,
            scn.home_backends,
            lambda b: bool(b.get("available")) and b.get("admin") == "enabled",
        )
        # Both from the pool's return: the GSLB check times when dns saw the zone up.
        await asyncio.gather(
            d.check_gslb_sees(run, zone, up=True, within=10.0),
            d.wait_taking_traffic(run, zone, home, scn.home_backends, version, 20.0),
        )

    async def final(d: Drill, run: StepRun) -> None:
        def home_serves(ss: list[Sample]) -> Check:
            mine = [s for s in ss if s.owner == zone and s.ok]
            local = sum(1 for s in mine if s.zone == zone and s.backend in scn.home_backends)
            return Check(
                f"{zone} serves itself",
                bool(mine) and local == len(mine),
                f"{local}/{len(mine)} of {zone}'s devices' requests answered by {home}",
            )

        def split_back(ss: list[Sample]) -> Check:
            homes = Counter(s.home for s in ss)
            return Check(
                "split restored",
                len(homes) > 1 and homes[zone] > 0,
                ", ".join(f"{z} {n}" for z, n in sorted(homes.items()))
                + " requests by device zone",
            )

        run.late_checks.append(home_serves)
        run.late_checks.append(split_back)
        run.late_checks.append(lambda ss: all_answer(everyone, ss))

    return [
        Step("baseline", "traffic only", baseline, 2.0 if q else 5.0, kind="traffic"),
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
            f"drain {scn.drain} via the control API: no new requests reach it",
            drain,
            2.0 if q else 5.0,
            Budget(max_failed=0, max_detect=1.0),
            detect_means=f"control write to {zone}'s LB showing the drain",
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
            "kill-lb",
            f"SIGKILL {zone}'s LB: clients fail over to {other}",
            kill_lb,
            2.0 if q else 6.0,
            Budget(max_failed=0, max_recover=1.0),
            detect_means="",
            recover_means=f"kill to the first success on {other} for {zone}'s devices",
        ),
        Step(
            "cutover",
            f"cut {host} over to {other} through the control API",
            cutover,
            2.0 if q else 5.0,
            Budget(max_failed=0, max_detect=2.0),
            detect_means="control write to the client following the new version",
        ),
        Step(
            "restore",
            f"restart backends and {zone}'s LB, enable {scn.drain}, restore the split",
            restore,
            2.0 if q else 8.0,
            Budget(max_failed=0, max_detect=15.0, max_recover=20.0),
            detect_means=f"all of {home} available in /status",
            recover_means=f"all of {home} answering {zone}'s devices again",
            kind="repair",
        ),
        Step(
            "final",
            "traffic only: each zone serves its own devices",
            final,
            2.0 if q else 5.0,
            kind="traffic",
        ),
    ]


def _pool(status: dict[str, Any] | None, pool: str) -> dict[str, Any]:
    return ((status or {}).get("pools") or {}).get(pool) or {}


def _backend(status: dict[str, Any] | None, pool: str, backend: str) -> dict[str, Any]:
    for b in _pool(status, pool).get("backends", []):
        if b.get("id") == backend:
            return dict(b)
    return {}


def _describe(
    status: dict[str, Any] | None, pool: str, backend: str, *, reason: bool = True
) -> str:
    b = _backend(status, pool, backend)
    if not b:
        return "?"
    text = str(b["health"])
    if b.get("admin") != "enabled":
        text += f", {b['admin']}"
    if b.get("ejected_for"):
        text += f", ejected {b['ejected_for']:.1f}s"
    if reason and b.get("reason") and not b.get("available"):
        text += f" ({b['reason']})"
    return text


# --- the drill runner -------------------------------------------------------------------


class DrillBase:
    """What the demo's `Drill` and the lab's drill share: time and events, writes to the
    control API as the operator, reading a zone LB's /status, waiting for a /status, a
    request sample or a client version, and the checks of a restore. A subclass gives
    `lb_admin(zone)`, `http` and the attributes below."""

    status: dict[str, dict[str, Any] | None]
    load: Any
    router: Any  # has `version_events`: (time, version) when the client followed it
    _step_index: int
    t0: float
    console: Console
    current: StepRun | None
    token: str
    control_url: str
    reason = "zonegate demo drill"
    """The X-Reason of control writes."""

    def lb_admin(self, zone: str) -> HostPort:
        raise NotImplementedError

    @property
    def http(self) -> httpx.AsyncClient:
        raise NotImplementedError

    def now(self) -> float:
        return time.monotonic() - self.t0

    def event(self, run: StepRun | None, msg: str) -> None:
        t = self.now()
        if run is not None:
            run.events.append((t, msg))
        self.console.print(f"[dim]{t:7.2f}s[/dim]  {escape(msg)}")

    async def control_write(
        self, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """POST to the control API as the operator; (status, JSON body) or (0, {})."""
        headers = {"Authorization": f"Bearer {self.token}", "X-Reason": self.reason}
        try:
            resp = await self.http.post(self.control_url + path, json=body, headers=headers)
            doc = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            self.event(self.current, f"control: POST {path} failed: {exc}")
            return 0, {}
        if resp.status_code != 200:
            self.event(self.current, f"control: POST {path} -> {resp.status_code} {doc}")
        return resp.status_code, doc if isinstance(doc, dict) else {}

    async def wait_router_version(self, version: int, within: float) -> float | None:
        """When the client started following `version` (or a later one); None if not
        `within` s."""
        assert self.router is not None
        deadline = time.monotonic() + within
        while True:
            for t, v in self.router.version_events:
                if v >= version:
                    return t
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.02)

    async def restore_split(self, run: StepRun, host: str) -> int | None:
        """POST /v1/restore/HOST, checked; the new version, None if refused."""
        status, doc = await self.control_write(f"/v1/restore/{host}")
        version = int(doc.get("version") or 0)
        self.event(run, f"control: POST /v1/restore/{host} -> {status}, version {version}")
        run.checks.append(Check("restore split", status == 200, f"control answered {status}"))
        return version if status == 200 else None

    async def wait_pool_back(
        self,
        run: StepRun,
        zone: str,
        pool: str,
        backends: Sequence[str],
        ready: Callable[[dict[str, Any]], bool],
    ) -> None:
        """Wait until `zone`'s LB shows every one of `backends` `ready` (the step's detect
        time), and check it."""
        up = await self.wait_status(
            zone, lambda st: all(ready(_backend(st, pool, n)) for n in backends), 30.0
        )
        if up:
            run.detect = self.now()
            self.event(run, f"{zone} LB: every backend of {pool} available")
        run.checks.append(Check("back up", up, f"{pool} {'all' if up else 'not all'} available"))

    async def wait_taking_traffic(
        self,
        run: StepRun,
        zone: str,
        pool: str,
        backends: Sequence[str],
        version: int | None,
        within: float,
    ) -> None:
        """After the pool is back and the client follows `version`: wait until every one
        of `backends` answers `zone`'s devices (the step's recovery), and check it."""
        follows = await self.wait_router_version(version, 5.0) if version is not None else None
        since = max(run.detect or math.inf, follows or math.inf)
        want = set(backends)
        seen: set[str] = set()

        def taking(s: Sample) -> bool:
            if s.t >= since and s.zone == zone and s.owner == zone and s.ok and s.backend in want:
                seen.add(s.backend)
            return seen == want

        if since < math.inf and await self.wait_samples(taking, within):
            run.recovered = self.now()
            self.event(run, f"every backend of {pool} answers {zone}'s devices again")
        run.checks.append(
            Check(
                "taking traffic",
                seen == want,
                f"{len(seen)}/{len(want)} of {pool} answered {zone}'s devices after coming back",
            )
        )

    async def fetch_status(self, zone: str) -> dict[str, Any] | None:
        try:
            status, body = await admin_call(self.lb_admin(zone), "GET", "/status")
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


class Drill(DrillBase):
    """Starts the processes, drives the load and the steps, renders progress."""

    def __init__(
        self,
        layout: Layout,
        steps: Sequence[Step],
        run_dir: Path,
        console: Console,
        make_router: Callable[[Drill], Router] | None = None,
    ) -> None:
        self.layout = layout
        self.steps = steps
        self.run_dir = run_dir
        self.console = console
        self.t0 = time.monotonic()
        self.backends: dict[str, Child] = {}
        self.lbs: dict[str, Child] = {}
        self.services: dict[str, Child] = {}
        """control, dns, httpdns."""
        self.status: dict[str, dict[str, Any] | None] = {lb.zone: None for lb in layout.lbs}
        self.runs: list[StepRun] = []
        self.current: StepRun | None = None
        self.load: LoadGen | None = None
        self.router: Router | None = None
        self._make_router = make_router or split_router
        self._step_index = 0  # first sample of the current step
        self._poller: asyncio.Task[None] | None = None
        self.token = secrets.token_hex(16)
        self.control_url = f"http://{layout.control}"
        self._http: httpx.AsyncClient | None = None
        self._temp_dirs: list[Path] = []
        self.haproxy_dirs: dict[str, Path] = {}
        """The state directory of each zone's HAProxy (haproxy engine only)."""

    def children(self) -> list[Child]:
        """Every process, in start order."""
        return [*self.backends.values(), *self.services.values(), *self.lbs.values()]

    # processes

    def _prepare_control(self) -> Path:
        """A fresh store and an operator token (only its sha256 is in the file)."""
        for name in ("control.db", "control.db-wal", "control.db-shm"):
            with contextlib.suppress(FileNotFoundError):
                (self.run_dir / name).unlink()
        for lb in self.layout.lbs:
            with contextlib.suppress(FileNotFoundError):
                (self.run_dir / f"lb-{lb.zone}.cache").unlink()
        tokens = self.run_dir / "tokens.yaml"
        digest = hashlib.sha256(self.token.encode()).hexdigest()
        tokens.write_text(
            json.dumps({"tokens": [{"name": "demo", "role": "operator", "sha256": digest}]}) + "\n",
            encoding="utf-8",
        )
        return tokens

    async def start_processes(self) -> None:
        """Backends, then the control plane, then the LBs (which follow it), then the
        GSLB (whose first zone-health round asks the LBs)."""
        py = sys.executable
        lay = self.layout
        path = str(lay.path)
        control = ["--control", self.control_url]
        for b in lay.backends:
            argv = [py, "-m", "zonegate.lab.backend", "--listen", str(b.address)]
            argv += ["--name", b.name, "--zone", b.zone]
            self.backends[b.name] = Child(
                b.name, argv, "listening on", self.run_dir / f"backend-{b.name}.log"
            )
        tokens = self._prepare_control()
        store = f"sqlite://{self.run_dir / 'control.db'}"
        argv = [py, "-m", "zonegate", "control", path, "--store", store]
        argv += ["--listen", str(lay.control), "--tokens", str(tokens)]
        self.services["control"] = Child(
            "control", argv, "zonegate control ready", self.run_dir / "control.log"
        )
        for lb in lay.lbs:
            argv = [py, "-m", "zonegate", "lb", path, "--zone", lb.zone, "--drain-timeout", "2s"]
            argv += [*control, "--control-cache", str(self.run_dir / f"lb-{lb.zone}.cache")]
            if not lb.admin_in_file:
                argv += ["--admin", str(lb.admin)]
            # Always explicit: the zone's lb_engine may be either, whatever --engine says.
            argv += ["--engine", lb.engine]
            if lb.engine == "haproxy":
                argv += ["--state-dir", str(self.haproxy_state_dir(lb.zone))]
            self.lbs[lb.zone] = Child(
                f"lb {lb.zone}", argv, "zonegate lb ready", self.run_dir / f"lb-{lb.zone}.log"
            )
        gslb: dict[str, Child] = {}
        if lay.dns is not None:
            argv = [py, "-m", "zonegate", "dns", path, *control]
            argv += ["--control-cache", str(self.run_dir / "dns.cache")]
            gslb["dns"] = Child("dns", argv, "zonegate dns ready", self.run_dir / "dns.log")
        if lay.httpdns is not None:
            argv = [py, "-m", "zonegate", "httpdns", path, *control]
            argv += ["--control-cache", str(self.run_dir / "httpdns.cache")]
            gslb["httpdns"] = Child(
                "httpdns", argv, "zonegate httpdns ready", self.run_dir / "httpdns.log"
            )
        # Backends and control plane start together; the LBs need both.
        first = [*self.backends.values(), self.services["control"]]
        for group in (first, list(self.lbs.values()), list(gslb.values())):
            for child in group:
                child.spawn()
            for child in group:
                await child.wait_ready()
        self.services.update(gslb)
        for b in lay.backends:
            self.event(
                None, f"backend {b.name} ({b.zone}) on {b.address}, pid {self.backends[b.name].pid}"
            )
        self.event(
            None,
            f"zonegate control on {lay.control} (sqlite in the run dir), "
            f"pid {self.services['control'].pid}",
        )
        for lb in lay.lbs:
            self.event(
                None,
                f"zonegate lb --zone {lb.zone} ({lb.engine} engine): {lb.listener} on "
                f"{lb.bind}, admin {lb.admin}, pid {self.lbs[lb.zone].pid}"
                + (f", HAProxy in {d}" if (d := self.haproxy_dirs.get(lb.zone)) else ""),
            )
        if "dns" in self.services:
            self.event(
                None,
                f"zonegate dns on {lay.dns} (udp+tcp), admin {lay.dns_admin}, "
                f"pid {self.services['dns'].pid}",
            )
        if "httpdns" in self.services:
            self.event(
                None, f"zonegate httpdns on {lay.httpdns}, pid {self.services['httpdns'].pid}"
            )

    def haproxy_state_dir(self, zone: str) -> Path:
        """Where `zone`'s HAProxy keeps its config, sockets and state files: in the run
        directory, unless that makes a unix socket path too long for HAProxy; then a
        fresh directory under /tmp, removed at shutdown."""
        from zonegate.lb.haproxy.render import HaproxyPaths

        state = self.run_dir / f"lb-{zone}.haproxy"
        try:
            HaproxyPaths.in_dir(state)
        except ValueError:
            state = Path(tempfile.mkdtemp(prefix="zg-lb-", dir="/tmp"))
            self._temp_dirs.append(state)
        self.haproxy_dirs[zone] = state
        return state

    def kill_backend(self, run: StepRun, name: str) -> None:
        """SIGKILL a backend; the step's fault time is the first kill."""
        child = self.backends[name]
        pid = child.pid
        if run.fault is None:
            run.fault = self.now()
        child.kill()
        self.event(run, f"SIGKILL {name} (pid {pid})")

    def kill_lb(self, run: StepRun, zone: str) -> None:
        """SIGKILL a zone's LB; the step's fault time."""
        child = self.lbs[zone]
        pid = child.pid
        run.fault = self.now()
        child.kill()
        self.status[zone] = None
        self.event(run, f"SIGKILL zonegate lb --zone {zone} (pid {pid})")

    async def _respawn(self, child: Child) -> None:
        """Start `child` again (retrying while one of its ports is briefly busy)."""
        child.spawn()
        deadline = time.monotonic() + 10.0
        while True:
            try:
                await child.wait_ready()
                return
            except DemoError:
                if "in use" not in child.output() or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
                child.spawn()

    async def restart_backends(self, run: StepRun, names: Sequence[str]) -> None:
        """Start them again on their ports."""
        await asyncio.gather(*(self._respawn(self.backends[n]) for n in names))
        for name in names:
            self.event(run, f"restarted {name} (pid {self.backends[name].pid})")

    async def restart_lb(self, run: StepRun, zone: str) -> None:
        """Start a zone's LB again if it is dead (it reads the control plane first)."""
        child = self.lbs[zone]
        if child.alive:
            return
        await self._respawn(child)
        self.event(run, f"restarted zonegate lb --zone {zone} (pid {child.pid})")

    async def shutdown(self) -> None:
        """Stop the load, then the GSLB and the LBs (so they never see backends vanish),
        then the backends and the control plane."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self.load is not None:
            await self.load.stop()
        if self.router is not None:
            with contextlib.suppress(Exception):
                await self.router.close()
        if self._http is not None:
            await self._http.aclose()
        gslb = [c for n, c in self.services.items() if n != "control"]
        stop_all([*gslb, *self.lbs.values()], 5.0)
        stop_all([*self.backends.values(), *self.services.values()], 5.0)
        for d in self._temp_dirs:
            shutil.rmtree(d, ignore_errors=True)

    # the control plane

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=5.0)
        return self._http

    # the GSLB

    async def check_gslb(self) -> list[Check]:
        """HTTPDNS sends devices where the client does; DNS answers the zone domains."""
        checks: list[Check] = []
        lay = self.layout
        split = lay.topo.split[lay.host]
        if lay.httpdns is not None and self.router is not None:
            devices = population(20)
            agree = 0
            detail = ""
            try:
                for dev in devices:
                    resp = await self.http.get(
                        f"http://{lay.httpdns}/d", params={"host": lay.host, "device_id": dev}
                    )
                    answer = resp.json()["answers"][0]
                    if answer.get("split", {}).get("zone") == self.router.home_of(dev):
                        agree += 1
                detail = f"{agree}/{len(devices)} devices sent to the zone the client uses"
            except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
                detail = f"no answer: {exc!r}"
            checks.append(Check("httpdns agrees", agree == len(devices), detail))
        if lay.dns is not None:
            import dns.asyncquery
            import dns.exception
            import dns.message
            import dns.rdatatype

            found: list[str] = []
            want: list[str] = []
            try:
                for zone_name, sz in split.zones.items():
                    want += lay.topo.zones[zone_name].vips[:1]
                    query = dns.message.make_query(sz.domain, dns.rdatatype.A)
                    answer = await dns.asyncquery.udp(
                        query, lay.dns.host, port=lay.dns.port, timeout=2.0
                    )
                    found += [r.address for rrset in answer.answer for r in rrset if r.rdtype == 1]
                detail = f"{', '.join(sz.domain for sz in split.zones.values())} -> {found}"
            except (OSError, TimeoutError, dns.exception.DNSException) as exc:
                detail = f"no answer: {exc!r}"
            checks.append(Check("dns answers", set(want) <= set(found), detail))
        return checks

    async def check_gslb_sees(self, run: StepRun, zone: str, *, up: bool, within: float) -> None:
        """Advisory check: zonegate dns's zone health says `zone` is up (or down)."""
        if self.layout.dns_admin is None:
            return
        deadline = time.monotonic() + within
        seen = False
        while not seen and time.monotonic() < deadline:
            try:
                status, body = await admin_call(self.layout.dns_admin, "GET", "/status")
                seen = status == 200 and json.loads(body)["zones"][zone]["up"] is up
            except (OSError, TimeoutError, ValueError, KeyError, httptools.HttpParserError):
                pass
            if not seen:
                await asyncio.sleep(0.1)
        state = "up" if up else "down"
        if seen:
            after = self.now() - (run.fault or run.start)
            self.event(run, f"zonegate dns: zone {zone} {state} ({after:.2f}s after the fault)")
        run.checks.append(
            Check(
                f"GSLB sees {zone} {state}",
                seen,
                f"dns zone health {'shows' if seen else 'never showed'} {zone} {state}"
                + (f" {after:.2f}s after the fault" if seen else f" within {within:g}s"),
                required=False,
            )
        )

    # the LB's view

    def lb_admin(self, zone: str) -> HostPort:
        return next(lb for lb in self.layout.lbs if lb.zone == zone).admin

    async def _poll_status(self) -> None:
        while True:
            for zone in self.status:
                if self.lbs[zone].alive:
                    await self.fetch_status(zone)
            await asyncio.sleep(0.5)

    # the run

    async def run(self) -> list[StepRun]:
        """Run every step under load, with a live view; return the measured steps."""
        self.router = self._make_router(self)
        try:
            await self.router.start()
        except (httpx.HTTPError, ValueError) as exc:
            raise DemoError(f"the client could not read the control plane: {exc}") from None
        self.event(None, f"client: {self.router.name}, version {self.router.version}")
        devices = getattr(self.router, "devices", None) or population(DEVICES)
        self.load = LoadGen(self.router, devices, TOTAL_RATE, self.now, WORKERS)
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
        heading = f"step {i}/{len(self.steps)}  {step.name}: {step.title}"
        if len(heading) + 4 > self.console.width:  # a rule would cut the title to "…"
            self.console.rule(f"step {i}/{len(self.steps)}  {step.name}", align="left")
            self.console.print(escape(step.title))
        else:
            self.console.rule(heading, align="left")
        await step.action(self, run)
        end = max(run.start + step.duration, self.now() + step.settle)
        await asyncio.sleep(max(0.0, end - self.now()))
        run.end = self.now()
        samples = [s for s in self.load.samples[self._step_index :] if s.t < run.end]
        evaluate(run, samples)
        verdict = (
            "[green]budget met[/green]"
            if run.met
            else f"[red]MISSED: {escape('; '.join(run.missed))}[/red]"
        )
        self.console.print(
            f"[dim]{run.end:7.2f}s[/dim]  {step.name}: {run.requests} requests, "
            f"{run.failed} failed, {run.failovers} failovers: {verdict}"
        )

    # display

    def render(self, width: int | None = None, height: int | None = None) -> Segments:
        """The live view: the step, traffic per zone, every process.

        It fits `width` x `height` (default: the console's size): the full layout when
        it fits, else a compact one (short headers with a legend, errors under the
        table, LB addresses left out), else one line of backends per zone. Never a
        column cut to `fail…`, and never taller than the screen unless even the last
        layout is (then rich crops the bottom). The view is returned laid out, as the
        lines measured to choose it: Live does not lay it out a second time.
        """
        size = self.console.size
        width = width or size.width
        height = height or size.height
        options = self.console.options.update(width=width, height=None)
        layouts = ((False, False), (True, False), (True, True))
        lines: list[list[Segment]] = []
        for i, (compact, per_zone) in enumerate(layouts):
            view = self._view(compact, per_zone)
            last = i == len(layouts) - 1
            if not last and any(
                isinstance(part, Table) and _natural_width(part) > width
                for part in view.renderables
            ):
                continue  # a column would be squeezed: wrapped or cut to "fail…"
            lines = self.console.render_lines(view, options, pad=False)
            if len(lines) <= height:
                break
        return Segments([seg for line in lines for seg in (*line, Segment.line())])

    def _view(self, compact: bool, per_zone: bool) -> Group:
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
        if self.router is not None:
            head.append(f"\nclient: {self.router.name}, control version {self.router.version}")
        parts: list[Any] = [head]
        traffic = _table("traffic this step", compact)
        columns = (
            ("zone", "zone"),
            ("LB", "LB"),
            ("req/s", "req/s"),
            ("devices req/s", "dev/s"),
            ("requests", "reqs"),
            ("failovers", "f/o"),
            ("failed", "failed"),
            ("errors", ""),
            ("p99 1s", "p99 1s"),
        )
        for full, short in columns:
            if compact and not short:
                continue
            just = "left" if full in ("zone", "LB", "errors") else "right"
            traffic.add_column(short if compact else full, justify=just, no_wrap=compact)  # type: ignore[arg-type]
        per_backend: Counter[tuple[str, str]] = Counter()
        recent = [s for s in samples if s.t >= now - 1.0]
        errors: list[str] = []
        for lb in self.layout.lbs:
            answered = [s for s in recent if s.zone == lb.zone and s.ok]
            devices = [s for s in recent if s.owner == lb.zone]
            mine = [s for s in samples if s.owner == lb.zone]
            bad = [s for s in mine if not s.ok]
            kinds = ", ".join(
                f"{k} {v}"
                for k, v in Counter(s.error or f"http_{s.status}" for s in bad).most_common(3)
            )
            lat = sorted(s.latency for s in devices)
            p99 = percentile(lat, 99)
            alive = self.lbs[lb.zone].alive if lb.zone in self.lbs else False
            state = "up" if alive else "dead"
            cells: list[Any] = [
                lb.zone,
                Text(state if compact else f"{lb.bind} {state}", style="green" if alive else "red"),
                str(len(answered)),
                str(len(devices)),
                str(len(mine)),
                str(sum(1 for s in mine if s.failover)),
                Text(str(len(bad)), style="red" if bad else "green"),
            ]
            if compact:
                if kinds:
                    errors.append(f"{lb.zone}: {kinds}")
            else:
                cells.append(kinds)
            cells.append(f"{p99 * 1000:.1f} ms" if p99 is not None else "-")
            traffic.add_row(*cells)
            for s in samples:
                if s.ok and s.zone == lb.zone:
                    per_backend[(s.backend, lb.zone)] += 1
        parts.append(traffic)
        if compact:
            parts.append(
                Text(
                    "dev/s: sent by the zone's devices; reqs: this step; f/o: client failovers",
                    style="dim",
                )
            )
            if errors:
                parts.append(Text("errors  " + "; ".join(errors), style="red"))
        zone = self.layout.scenario.zone
        status = self.status.get(zone)
        pools = {
            b.id: name
            for name in (self.layout.scenario.home, self.layout.scenario.backup)
            for b in self.layout.topo.pools[name].backends
        }
        rows: list[tuple[str, str, bool, str]] = []
        for b in self.layout.backends:
            child = self.backends.get(b.name)
            pool = pools.get(b.name)
            health = _describe(status, pool, b.name, reason=False) if pool and status else "-"
            rows.append((b.name, b.zone, bool(child and child.alive), health))
        if per_zone:
            parts.append(
                Text(f"backends: health (answered), as {zone}'s LB sees it", style="italic")
            )
            for z in dict.fromkeys(r[1] for r in rows):
                line = Text(f"{z}: ")
                for name, bz, up, health in rows:
                    if bz != z:
                        continue
                    served = sum(per_backend[(name, lb.zone)] for lb in self.layout.lbs)
                    ok = up and health in ("up", "-")
                    line.append(f"{name} ", style="bold")
                    what = health if up else "dead"
                    line.append(f"{what} ({served})  ", style="green" if ok else "yellow")
                parts.append(line)
        else:
            title = (
                f"answered by (health as {zone}'s LB sees it)"
                if not compact
                else f"answered by, via each LB (health as {zone}'s LB sees it)"
            )
            backends = _table(title, compact)
            backends.add_column("backend", no_wrap=compact)
            backends.add_column("zone", no_wrap=compact)
            backends.add_column("process", no_wrap=compact)
            backends.add_column("health", no_wrap=compact)
            for lb in self.layout.lbs:
                backends.add_column(
                    lb.zone if compact else f"via {lb.zone}", justify="right", no_wrap=compact
                )
            for name, bz, up, health in rows:
                style = "green" if health.startswith("up") and "," not in health else "yellow"
                backends.add_row(
                    name,
                    bz,
                    Text("up", style="green") if up else Text("dead", style="red"),
                    Text(health, style=style if health != "-" else ""),
                    *(str(per_backend[(name, lb.zone)]) for lb in self.layout.lbs),
                )
            parts.append(backends)
        services = Text("services: ")
        for name, child in self.services.items():
            services.append(f"{name} ", style="bold")
            services.append("up  " if child.alive else "dead  ", "green" if child.alive else "red")
        parts.append(services)
        return Group(*parts)


def _table(title: str, compact: bool) -> Table:
    """A live-view table: boxed, or in the compact layout a rule under the header only."""
    if not compact:
        return Table(title=title, title_justify="left")
    return Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False
    )


def _natural_width(table: Table) -> int:
    """How wide `table` is with no cell wrapped or cut: each column's longest line and
    padding, plus the box. What rich's `Measurement` of the table says at a fraction of
    its cost (the live view asks 4 times a second); a test holds the two equal."""
    if table.collapse_padding:
        raise ValueError("collapsed padding is not modelled")
    _, pad_right, _, pad_left = table.padding
    n = len(table.columns)
    width = (2 if table.box and table.show_edge else 0) + (n - 1 if table.box else 0)
    for i, column in enumerate(table.columns):
        width += pad_left if table.pad_edge or i > 0 else 0
        width += pad_right if table.pad_edge or i < n - 1 else 0
        width += max(_cell_width(cell) for cell in (column.header, *column.cells))
    return width


def _cell_width(cell: object) -> int:
    text = Text.from_markup(cell) if isinstance(cell, str) else cell
    if not isinstance(text, Text):
        raise TypeError(f"cannot measure a {type(cell).__name__} cell")
    return max(cell_len(line) for line in text.plain.split("\n"))


def sdk_router(drill: Drill) -> Router:
    """`zonegate.lab.sdkload.SdkRouter`: the SDK over the drill's control plane, each
    zone domain pinned to its zone's LB listener."""
    from zonegate.lab.sdkload import SdkRouter

    # The SDK logs each breaker trip and retry: to a file, not over the live view.
    sdk_log = logging.getLogger("zonegate.client")
    handler = logging.FileHandler(drill.run_dir / "client.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    sdk_log.addHandler(handler)
    sdk_log.setLevel(logging.INFO)
    sdk_log.propagate = False
    lay = drill.layout
    listeners = {lb.zone: lb.bind for lb in lay.lbs}
    domains = {z: sz.domain for z, sz in lay.topo.split[lay.host].zones.items()}
    hosts = {domains[z]: str(addr) for z, addr in listeners.items() if z in domains}
    port_zone = {addr.port: z for z, addr in listeners.items()}
    return SdkRouter(
        [drill.control_url],
        lay.host,
        lambda url: port_zone.get(url.port or 0),
        drill.now,
        hosts=hosts,
    )


def split_router(drill: Drill) -> Router:
    """The demo's own `SplitRouter` over the drill's control plane and LB listeners."""
    lay = drill.layout
    listeners = {lb.zone: lb.bind for lb in lay.lbs}
    return SplitRouter([drill.control_url], lay.host, listeners, drill.now)


# --- report ---------------------------------------------------------------------------


def _fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}s"


def _fmt_ms(x: float | None, compact: bool = False) -> str:
    if x is None:
        return "-"
    if compact:  # "85.6ms", "256ms": at most 6 characters below 10 s
        return f"{x * 1000:.1f}ms" if x < 0.1 else f"{x * 1000:.0f}ms"
    return f"{x * 1000:.1f} ms"


def summary_table(runs: Sequence[StepRun], compact: bool = False) -> Table:
    """The end-of-demo table: one row per step.

    `compact` leaves out the budget column (`print_summary` then prints each step's
    budget under the table) and uses short headers, for terminals under ~130 columns.
    """
    table = Table(title="zonegate demo: what clients saw", title_justify="left")
    if compact:
        table.box = box.SIMPLE_HEAD
        table.show_edge = False
        table.pad_edge = False
        table.collapse_padding = True
    for col, short, just in (
        ("step", "step", "left"),
        ("requests", "reqs", "right"),
        ("failed", "failed", "right"),
        ("failovers", "f/o", "right"),
        ("p50", "p50", "right"),
        ("p99", "p99", "right"),
        ("detect", "detect", "right"),
        ("recover", "recover", "right"),
        ("budget", "", "left"),
        ("met", "met", "left"),
    ):
        if compact and not short:
            continue
        table.add_column(short if compact else col, justify=just, no_wrap=compact)  # type: ignore[arg-type]
    for run in runs:
        b = run.step.budget
        failed = str(run.failed)
        if b.failed_after_detect:
            failed += f" ({run.counted_failed} after)"
        cells: list[Any] = [
            run.step.name,
            str(run.requests),
            Text(failed, style="red" if run.counted_failed else ""),
            str(run.failovers),
            _fmt_ms(run.p50, compact),
            _fmt_ms(run.p99, compact),
            _fmt_s(run.detect_s),
            _fmt_s(run.recover_s),
            b.describe(),
            Text("yes", style="bold green") if run.met else Text("NO", style="bold red"),
        ]
        if compact:
            del cells[8]  # the budget: printed under the table instead
        table.add_row(*cells)
    return table


def print_summary(console: Console, runs: Sequence[StepRun], title: str | None = None) -> None:
    """The summary table (titled `title`, else the demo's), then what each step's times
    mean and its checks.

    When the full table is wider than the console, the compact one is printed and each
    step's budget moves to the notes under it, so no column is cut to `fail…`.
    """
    console.print()
    table = summary_table(runs)
    compact = _natural_width(table) > console.options.max_width
    if compact:
        table = summary_table(runs, compact=True)
    if title is not None:
        table.title = title
    console.print(table)
    if compact:
        console.print(Text("f/o: client zone failovers; met: within the budget below", style="dim"))
    notes = Table.grid(padding=(0, 2))
    notes.add_column(style="bold", no_wrap=True)
    notes.add_column()
    for run in runs:
        lines = []
        if compact:
            lines.append(f"[dim]budget:[/dim]  {escape(run.step.budget.describe())}")
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


def report_paths(run_dir: Path, report: str | None) -> tuple[Path, Path]:
    """Where report.json and report.html go: `report` (and its .html twin), else the
    run directory."""
    json_path = Path(report) if report else run_dir / "report.json"
    html_path = json_path.with_suffix(".html")
    if html_path == json_path:
        html_path = json_path.with_name(json_path.name + ".html")
    return json_path, html_path


def write_reports(json_path: Path, html_path: Path, doc: dict[str, Any]) -> None:
    """Write the JSON report and the HTML page built from it."""
    for dest in (json_path, html_path):
        dest.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    html_path.write_text(render_html(doc), encoding="utf-8")


def report_doc(
    layout: Layout,
    quick: bool,
    run_dir: Path,
    elapsed: float,
    ok: bool,
    error: str | None,
    signal_name: str | None,
    drill: Drill | None,
    done: Sequence[StepRun],
) -> dict[str, Any]:
    """The JSON report: the run, each step's numbers, the timeline, the processes."""
    procs: dict[str, list[int]] = {}
    doc: dict[str, Any] = {
        "topology": str(layout.path),
        "engines": {lb.zone: lb.engine for lb in layout.lbs},
        "quick": quick,
        "run_dir": str(run_dir),
        "duration_s": round(elapsed, 2),
        "ok": ok,
        "error": error,
        "interrupted": signal_name,
        "rate": TOTAL_RATE,
        "devices": DEVICES,
        "router": None,
        "versions": [],
        "processes": procs,
        "steps": [r.to_json() for r in done],
        "timeline": None,
    }
    if drill is None:
        return doc
    for c in drill.children():
        procs[c.name] = c.pids
    if drill.router is not None:
        doc["router"] = drill.router.name
        doc["versions"] = [
            {"t_s": round(t, 4), "version": v} for t, v in drill.router.version_events
        ]
    if drill.load is not None and done:
        tl = bucket_samples(
            drill.load.samples,
            [lb.zone for lb in layout.lbs],
            done[0].start,
            done[-1].end,
        )
        doc["timeline"] = tl.to_json()
    return doc


# --- entry point ----------------------------------------------------------------------


def _run_dir() -> Path:
    chosen = os.environ.get("ZONEGATE_DEMO_DIR")
    if chosen:
        path = Path(chosen).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path
    return Path(tempfile.mkdtemp(prefix="zonegate-demo-")).resolve()


def prepare(
    topology: str | None, run_dir: Path, console: Console, engine: str | None = None
) -> Layout:
    """Find and load the topology, move busy ports, derive the layout (every LB on
    `engine` when given); DemoError if HAProxy is needed and missing."""
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
    addrs = [*topology_addresses(topo), DEFAULT_CONTROL]
    moved = plan_ports(addrs)
    control = moved.get(DEFAULT_CONTROL, DEFAULT_CONTROL)
    if moved:
        busy = [str(a) for a in addrs if not port_is_free(a)] or [str(a) for a in moved]
        in_file = {o: n for o, n in moved.items() if o != DEFAULT_CONTROL}
        if in_file:
            path, topo = rewrite_topology(topo, in_file, run_dir / "topology.yaml")
        console.print(
            f"[yellow]ports busy: {', '.join(busy)}; moved the layout "
            f"({', '.join(f'{o.port}->{n.port}' for o, n in moved.items())}); "
            f"rewritten topology: {path}[/yellow]"
        )
    layout = plan_layout(topo, path, control, engine)
    if any(lb.engine == "haproxy" for lb in layout.lbs):
        from zonegate.lb.haproxy.engine import HAPROXY_ENV
        from zonegate.lb.haproxy.process import HaproxyNotFound, find_haproxy

        try:
            binary = find_haproxy(os.environ.get(HAPROXY_ENV) or None)
        except HaproxyNotFound as e:
            raise DemoError(f"the haproxy engine needs HAProxy: {e}") from None
        zones = ", ".join(lb.zone for lb in layout.lbs if lb.engine == "haproxy")
        console.print(f"engine    haproxy ({binary}) for {zones}")
    scn = layout.scenario
    console.print(
        f"drill     zone {scn.zone}: pool {scn.home} ({', '.join(scn.home_backends)}), "
        f"backup {scn.backup}; cut-over of {scn.host} to {scn.other}"
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
    drill = out.drill = Drill(layout, steps, run_dir, console, make_router())
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


def make_router() -> Callable[[Drill], Router]:
    """The client the load generator routes with: the SDK, unless
    ``ZONEGATE_DEMO_CLIENT=split`` asks for the demo's own `SplitRouter`."""
    if os.environ.get("ZONEGATE_DEMO_CLIENT", "sdk") == "split":
        return split_router
    return sdk_router


def run_demo(
    topology: str | None, quick: bool, report: str | None, engine: str | None = None
) -> int:
    """`zonegate demo`: 0 if every step met its budget, 1 if not (or it failed), 2 if it
    could not start, 130/143 on SIGINT/SIGTERM. `engine` runs every LB on it (None:
    each zone's lb_engine)."""
    import uvloop

    # Piped output (CI, tests) gets a width that fits the summary table, not rich's 80.
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    console = Console(highlight=False, width=130 if piped else None)
    run_dir = _run_dir()
    started = time.monotonic()
    try:
        layout = prepare(topology, run_dir, console, engine)
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
    json_path, html_path = report_paths(run_dir, report)
    write_reports(
        json_path,
        html_path,
        report_doc(layout, quick, run_dir, elapsed, ok, error, out.signal, out.drill, done),
    )
    console.print()
    if out.signal:
        console.print(f"[yellow]{out.signal} after {elapsed:.1f}s: every process stopped[/yellow]")
        console.print(f"report: {json_path}  {html_path}")
        return 143 if out.signal == "SIGTERM" else 130
    if error:
        console.print(f"[red]zonegate demo failed: {escape(error)}[/red]")
        console.print(f"logs: {run_dir}")
        console.print(f"report: {json_path}  {html_path}")
        return 1
    missed = [r.step.name for r in done if not r.met]
    if missed:
        console.print(f"[bold red]budget missed: {', '.join(missed)}[/bold red] ({elapsed:.1f}s)")
    else:
        console.print(f"[bold green]every budget met[/bold green] ({elapsed:.1f}s)")
    console.print(f"logs:   {run_dir}")
    console.print(f"report: {json_path}")
    console.print(f"        {html_path}")
    return 0 if ok else 1
