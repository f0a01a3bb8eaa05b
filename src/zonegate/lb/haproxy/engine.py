"""`zonegate lb --engine haproxy`: HAProxy moves the bytes, zonegate drives it (shell).

Theory of operation
-------------------
zonegate renders haproxy.cfg from the topology (render.py), starts HAProxy in
master-worker mode as its child (process.py) and from then on talks to it through the
Runtime API (runtime.py)::

                 show stat (every VERDICT_EVERY)            desired_servers()
    HAProxy ───────────────────────────────► verdicts ──► HaproxyHub ──────────┐
      ▲          (its checks, its passive     UP/DOWN     (the built-in hub:    │
      │           observe, its slow start)                spill plan, panic,    │
      │                                                   admin states)         ▼
      └──── set server state/weight, set map ◄── reconcile(desired, show servers state)

- Health: HAProxy runs the checks. Its verdict per server feeds the same HealthHub the
  built-in engine runs, over a copy of each pool with rise = fall = 1, slow start 0 and
  passive ejection off, so HAProxy's rise/fall, slow start and observe are not applied
  twice. The hub's plan (progressive spill to the backup, panic) comes back to HAProxy
  as weights and states.
- Every hub change is applied at once; every RECONCILE_EVERY the state HAProxy reports
  is compared with the desired one again and any drift is repaired and logged.
- The version header's value is a map entry: `set map` at runtime, and the map file is
  rewritten too so a reload or a restart reads the same value.
- SIGHUP or POST /reload: a new file whose rendered haproxy.cfg is unchanged is applied
  at runtime only; otherwise the new config is checked with `haproxy -c` first (refused:
  the running config stays, HAProxy's words are logged), the server states are saved to
  the server-state file, and the master reloads seamlessly.
- A crashed HAProxy is restarted by the supervisor (with back-off); zonegate applies the
  desired state again, and /status shows the restart count.
- SIGTERM: soft-stop HAProxy (finishing in-flight requests up to --drain-timeout), exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zonegate.control.follow import start_following
from zonegate.errors import ZonegateError, bug
from zonegate.health.machine import HealthState
from zonegate.lb.admin import AdminApp
from zonegate.lb.haproxy.desired import (
    desired_servers,
    engine_stats,
    unchecked_pools,
    verdict_details,
)
from zonegate.lb.haproxy.model import (
    PANIC_PREFIX,
    SPILL_PREFIX,
    VERSION_KEY,
    DesiredState,
    ServerKey,
    frontend_name,
)
from zonegate.lb.haproxy.parse import Row
from zonegate.lb.haproxy.process import (
    HaproxyNotFound,
    HaproxyProcess,
    HaproxyStartError,
    find_haproxy,
)
from zonegate.lb.haproxy.reconcile import plan
from zonegate.lb.haproxy.render import (
    SERVER_STATE_EMPTY,
    HaproxyPaths,
    render_config,
    tls_bundles,
    version_map_text,
)
from zonegate.lb.haproxy.runtime import RuntimeClient
from zonegate.lb.hub import HealthHub
from zonegate.lb.server import (
    LbOptions,
    _announce_line,
    _cannot_listen,
    _install_signals,
    _start_admin,
    _try_reload,
    merge_worker_stats,
    retire_stats,
)
from zonegate.lb.worker import ListenError, zone_listeners
from zonegate.topology.check import _position, _tree
from zonegate.topology.load import render_path
from zonegate.topology.schema import Topology
from zonegate.topology.snapshot import Snapshot

if TYPE_CHECKING:
    from zonegate.control.model import DesiredState as ControlState

log = logging.getLogger("zonegate.lb.haproxy")

VERDICT_EVERY = 0.1
"""Seconds between two readings of HAProxy's verdicts (`show stat`)."""
RECONCILE_EVERY = 0.5
"""Seconds between two comparisons of the desired and the reported server states."""
HAPROXY_ENV = "ZONEGATE_HAPROXY"
"""Environment variable naming the HAProxy to run (a path, or a name looked up on
PATH only); default: `haproxy` on PATH, else /usr/sbin/haproxy."""
IDLE_GRACE = 1.0
"""Seconds idle keep-alive connections get at stop, once no request is in flight."""
FIRST_VERDICT_TIMEOUT = 5.0
"""Longest wait at start for HAProxy's first check of every server."""


def default_state_dir(path: str, zone: str) -> Path:
    """The state directory of one LB: per topology file and zone, never under /etc.

    `$XDG_RUNTIME_DIR/zonegate/lb-<zone>-<hash of the file's path>`, else the same
    under `/tmp/zonegate-<uid>`.
    """
    digest = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:10]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "zonegate" if runtime else Path(f"/tmp/zonegate-{os.getuid()}")
    return base / f"lb-{zone}-{digest}"


def hub_topology(topo: Topology) -> Topology:
    """The topology the hub runs on: HAProxy's verdicts are final.

    Each pool keeps its active check (so the hub records verdicts) with rise = fall = 1,
    and has slow start 0 and passive ejection off: HAProxy applies those itself.
    """
    pools = {}
    for name, pool in topo.pools.items():
        health = pool.health
        active = health.active
        if active is not None:
            active = active.model_copy(update={"rise": 1, "fall": 1})
        passive = health.passive.model_copy(update={"consecutive_failures": 0})
        health = health.model_copy(update={"active": active, "passive": passive, "slow_start": 0.0})
        pools[name] = pool.model_copy(update={"health": health})
    return topo.model_copy(update={"pools": pools})


def hub_snapshot(snapshot: Snapshot) -> Snapshot:
    return Snapshot(snapshot.version, hub_topology(snapshot.topology), snapshot.source)


def slow_start_ramps(rows: list[Row]) -> dict[tuple[str, str], float]:
    """HAProxy's slow-start factor of each local server: (pool, backend id) -> 0..1.

    `show stat`'s `weight` is the effective weight (slow start applied) on the scale of
    `uweight`, the weight zonegate set. Servers with no weight set are left out.
    """
    out = {}
    for row in rows:
        px, sv = str(row.get("pxname") or ""), str(row.get("svname") or "")
        if (
            not px.startswith("be_")
            or sv in ("BACKEND", "FRONTEND")
            or sv.startswith((SPILL_PREFIX, PANIC_PREFIX))
        ):
            continue
        user, current = row.get("uweight"), row.get("weight")
        if isinstance(user, int) and isinstance(current, int) and user > 0:
            out[(px[3:], sv)] = min(1.0, current / user)
    return out


_CFG_LINE = re.compile(r"parsing \[[^\]]*:(\d+)\]")


def cfg_origin(cfg_text: str, line: int, topo: Topology) -> list[str | int] | None:
    """The topology key path a line of a rendered haproxy.cfg comes from, if known:
    `listeners.L` for `frontend fe_L`, `pools.P` for `backend be_P`, and
    `pools.P.backends[i]` for the server line of backend i."""
    lines = cfg_text.splitlines()
    if not 1 <= line <= len(lines):
        return None
    here = lines[line - 1].split()
    for head in reversed(lines[:line]):
        words = head.split()
        if head[:1].isspace() or len(words) != 2:
            continue
        kind, name = words
        if kind == "frontend" and name.startswith("fe_") and name[3:] in topo.listeners:
            return ["listeners", name[3:]]
        if kind == "backend" and name.startswith("be_") and name[3:] in topo.pools:
            pool = name[3:]
            if len(here) > 1 and here[0] == "server":
                ids = [b.id for b in topo.pools[pool].backends]
                if here[1] in ids:
                    return ["pools", pool, "backends", ids.index(here[1])]
            return ["pools", pool]
        if kind in ("frontend", "backend", "global", "defaults"):
            return None
    return None


def trace_alerts(alerts: str, cfg_text: str, snapshot: Snapshot) -> str:
    """HAProxy's alerts, each one that names a config line followed by the topology
    file:line:col and key path that line was rendered from."""
    out = []
    tree: Any = None
    for alert in alerts.splitlines():
        out.append(alert)
        m = _CFG_LINE.search(alert)
        keys = cfg_origin(cfg_text, int(m.group(1)), snapshot.topology) if m else None
        if keys is None:
            continue
        if tree is None:
            tree = _tree(snapshot.source)
        line, col = _position(tree, [str(k) for k in keys])
        where = snapshot.source + (f":{line}:{col}" if line is not None else "")
        out.append(f"  (from {where}: {render_path(keys)})")
    return "\n".join(out)


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write `text` to `path` through a temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class HaproxyHub(HealthHub):
    """The built-in health hub, fed by HAProxy's verdicts instead of its own probes.

    `record_verdicts` takes one UP/DOWN per server; with rise = fall = 1 (see
    `hub_topology`) each verdict is the backend's state. Everything else (admin states,
    control-plane follow, the spill plan, panic, /status) is the built-in hub's.
    """

    def __init__(
        self, snapshot: Snapshot, zone: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(hub_snapshot(snapshot), zone, clock=clock)
        self.file_snapshot = snapshot
        """The topology as loaded (the hub's own copy has HAProxy-applied settings off)."""
        self.engine_status: dict[str, Any] = {"name": "haproxy"}
        """Shown under "engine" in /status: HAProxy's pid, version, restarts."""

    async def start(self) -> None:
        """Publish and keep re-evaluating; no probes (HAProxy runs them, in panic too:
        its panic twins serve while the checked servers keep being checked)."""
        self.publish()
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def reload(self, snapshot: Snapshot) -> None:
        """Follow a new topology, keeping the health of backends that stay."""
        self.file_snapshot = snapshot
        self.snapshot = hub_snapshot(snapshot)
        self._set(self.snapshot, previous=self.healths)
        self.publish()

    def record_verdicts(self, verdicts: dict[tuple[str, str], tuple[bool, str]]) -> None:
        """Record HAProxy's verdict of every server: (pool, backend id) -> (up, why)."""
        now = self.clock()
        for name, pool in self.pools.items():
            if pool.health.active is None:
                continue
            health = self.healths[name]
            for i, b in enumerate(pool.backends):
                verdict = verdicts.get((name, b.id))
                if verdict is None:
                    continue
                up, why = verdict
                target = health.targets[i]
                if (target.state is HealthState.UP) == up:
                    continue
                tr = health.record_active(i, up, now, why)
                if tr is not None:
                    self._on_transition(name, i, tr)

    def admin_states(self) -> dict[tuple[str, str], str]:
        """Admin state of every backend: (pool, backend id) -> enabled|drain|disabled."""
        out = {}
        for name, pool in self.pools.items():
            for b, t in zip(pool.backends, self.healths[name].targets, strict=True):
                out[(name, b.id)] = t.admin.value
        return out

    def status(self, stats: dict[str, Any] | None = None) -> dict[str, Any]:
        """The built-in /status document, plus "engine"; `effective_weight` includes
        HAProxy's slow-start ramp (`stats["ramp"]`, see `slow_start_ramps`)."""
        doc = super().status(stats)
        ramps = (stats or {}).get("ramp", {})
        for name, pool in doc["pools"].items():
            for b in pool["backends"]:
                ramp = ramps.get((name, b["id"]))
                if ramp is not None and b["available"] and not pool["panic"]:
                    b["effective_weight"] = round(b["effective_weight"] * ramp, 2)
        doc["engine"] = dict(self.engine_status)
        return doc


def structure_of(snapshot: Snapshot, zone: str, paths: HaproxyPaths, threads: int) -> str:
    """The config with what the Runtime API sets taken out: the version, and each
    backend's weight and admin state. Two files with the same structure differ only in
    what zonegate applies at runtime, without a reload."""
    topo = snapshot.topology
    pools = {
        name: pool.model_copy(
            update={
                "backends": [
                    b.model_copy(update={"weight": 1, "state": "enabled"}) for b in pool.backends
                ]
            }
        )
        for name, pool in topo.pools.items()
    }
    plain = Snapshot(0, topo.model_copy(update={"pools": pools}), snapshot.source)
    return render_config(plain, zone, paths, threads=threads)


def write_tls_bundles(snapshot: Snapshot, zone: str, paths: HaproxyPaths) -> None:
    """Write each TLS listener's PEM bundle (certificate chain, then key), mode 0600.

    Raises:
        OSError: a certificate or key cannot be read, or the bundle cannot be written.
    """
    for bundle, parts in tls_bundles(snapshot, zone, paths).items():
        text = "".join(Path(p).read_text() for p in parts)
        target = Path(bundle)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(target, text, mode=0o600)


class Engine:
    """One `zonegate lb --engine haproxy`: HAProxy, the hub, the admin endpoint."""

    def __init__(
        self, snapshot: Snapshot, opts: LbOptions, paths: HaproxyPaths, binary: str
    ) -> None:
        self.opts = opts
        self.zone = opts.zone
        self.paths = paths
        self.threads = max(1, opts.workers)
        self.hub = HaproxyHub(snapshot, opts.zone)
        self.cfg_path = Path(paths.config_file)
        self.structure = structure_of(snapshot, self.zone, paths, self.threads)
        self.process = HaproxyProcess(binary, self.cfg_path, paths)
        self.runtime = RuntimeClient(str(paths.stats_socket))
        self.applied: DesiredState | None = None
        """The desired state last applied (None: apply everything again)."""
        self.map_version: int | None = None
        """The version HAProxy's map holds (None: set it again)."""
        self.restarts_seen = 0
        self.repairs = 0
        """Drift repaired by the periodic reconcile (commands sent for an unchanged
        desired state)."""
        self.failed_commands = 0
        self.unknown: list[ServerKey] = []
        self.last_rows: list[Row] = []
        """HAProxy's last `show stat`."""
        self.retired: dict[str, Any] | None = None
        """The counters of HAProxy workers gone (reloads, restarts), see `gather`."""
        self.kick = asyncio.Event()
        self.lock = asyncio.Lock()
        self.hub.subscribe(lambda _states: self.kick.set())

    @property
    def snapshot(self) -> Snapshot:
        """The topology file in force (the hub runs on a copy, see `hub_topology`)."""
        return self.hub.file_snapshot

    # files

    def write_files(self, snapshot: Snapshot) -> None:
        """At start: haproxy.cfg, the version map, the TLS bundles and an empty
        server-state file (a previous run's states must not come back), all under the
        state directory."""
        write_tls_bundles(snapshot, self.zone, self.paths)
        write_atomic(Path(self.paths.version_map), version_map_text(self.hub.version))
        write_atomic(Path(self.paths.server_state_file), SERVER_STATE_EMPTY)
        write_atomic(
            self.cfg_path,
            render_config(snapshot, self.zone, self.paths, threads=self.threads),
        )

    # applying the desired state

    async def apply(self) -> None:
        """Bring HAProxy's servers and version map to what zonegate wants.

        Runs after every hub change and every RECONCILE_EVERY. Commands for a desired
        state already applied once are drift (HAProxy restarted, someone used the
        socket, a command failed): logged as repaired.
        """
        self.kick.clear()
        desired = desired_servers(
            self.snapshot.topology, self.zone, self.hub.states, self.hub.admin_states()
        )
        reported = await self.runtime.servers_state()
        todo = plan(desired, reported)
        if todo.unknown and todo.unknown != self.unknown:
            names = ", ".join(f"{k.backend}/{k.server}" for k in todo.unknown)
            log.error("HAProxy has no server %s: its config is not the topology's", names)
        self.unknown = todo.unknown
        failed = False
        for cmd in todo.commands:
            try:
                await self.runtime.execute(cmd)
            except ZonegateError as e:
                # Not ignored: the next round compares again and retries.
                failed = True
                self.failed_commands += 1
                log.warning("HAProxy refused %r: %s (will retry)", cmd, e)
        if todo.fixes:
            if desired == self.applied:
                self.repairs += 1
                log.warning("reconcile: repaired drift in HAProxy: %s", "; ".join(todo.fixes))
            else:
                log.info("applied to HAProxy: %s", "; ".join(todo.fixes))
        self.applied = None if failed else desired
        version = self.hub.version
        if self.map_version != version:
            write_atomic(Path(self.paths.version_map), version_map_text(version))
            await self.runtime.execute(f"set map {self.paths.version_map} {VERSION_KEY} {version}")
            log.info("version %d on responses", version)
            self.map_version = version

    async def read_verdicts(self) -> list[dict[str, Any]]:
        rows = await self.runtime.show_stat()
        self.last_rows = rows
        unchecked = unchecked_pools(self.snapshot.topology, self.zone)
        # A server not checked yet (a new HAProxy) reads "UP 1/3": no verdict.
        checked = [r for r in rows if not str(r.get("check_status") or "").startswith("INI")]
        self.hub.record_verdicts(verdict_details(checked, unchecked=unchecked))
        return rows

    def note_process(self) -> None:
        """Follow HAProxy's restarts: a new HAProxy has none of the runtime state."""
        restarts = self.process.restarts
        if restarts != self.restarts_seen:
            self.restarts_seen = restarts
            self.retire()
            self.applied = None
            self.map_version = None
            self.kick.set()
        self.hub.engine_status.update(
            pid=self.process.pid,
            restarts=restarts,
            repairs=self.repairs,
            failed_commands=self.failed_commands,
            state_dir=str(self.paths.state_dir),
        )

    async def control_loop(self) -> None:
        """Read verdicts every VERDICT_EVERY; apply on change and every RECONCILE_EVERY."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(VERDICT_EVERY):
                    await self.kick.wait()
            try:
                async with self.lock:
                    self.note_process()
                    await self.read_verdicts()
                    if self.kick.is_set() or loop.time() - last >= RECONCILE_EVERY:
                        last = loop.time()
                        await self.apply()
            except (ZonegateError, OSError) as e:
                # HAProxy restarting or reloading: its socket answers again shortly.
                log.debug("runtime API: %s", e)
                await asyncio.sleep(VERDICT_EVERY)
            except Exception as e:
                bug("haproxy engine control loop", e)
                await asyncio.sleep(VERDICT_EVERY)

    # reload

    async def reload(self) -> tuple[bool, str]:
        """SIGHUP or POST /reload: at runtime when the structure stays, else a
        checked, seamless HAProxy reload; a refused file keeps the running config."""
        async with self.lock:
            snap, msg = await _try_reload(self.opts.path, self.snapshot)
            if snap is None:
                return False, msg
            structure = structure_of(snap, self.zone, self.paths, self.threads)
            if structure == self.structure:
                await self.hub.reload(snap)
                # What a restart after a crash reads; the running HAProxy gets the
                # same weights and states from `apply`.
                write_atomic(
                    self.cfg_path, render_config(snap, self.zone, self.paths, threads=self.threads)
                )
                try:
                    await self.apply()
                except (ZonegateError, OSError) as e:
                    log.warning(
                        "applying version %d: %s (the reconcile loop retries)", snap.version, e
                    )
                msg += " (applied at runtime)"
                log.info(msg)
                return True, msg
            try:
                return await self._reload_haproxy(snap, structure, msg)
            except (ZonegateError, OSError) as e:
                return False, self._refused(str(e))

    async def _reload_haproxy(self, snap: Snapshot, structure: str, msg: str) -> tuple[bool, str]:
        """A new structure: `haproxy -c`, save the server states, master reload.

        Raises:
            ZonegateError, OSError: HAProxy's sockets did not answer; nothing changed.
        """
        candidate = self.cfg_path.with_name("haproxy.cfg.new")
        text = render_config(snap, self.zone, self.paths, threads=self.threads)
        write_atomic(candidate, text)
        old = (self.snapshot, self.structure, self.cfg_path.read_text())
        try:
            write_tls_bundles(snap, self.zone, self.paths)
        except OSError as e:
            await self._rollback(*old)
            return False, self._refused(f"TLS files: {e}")
        problem = await self.process.check(candidate)
        if problem is not None:
            await self._rollback(*old)
            return False, self._refused(trace_alerts(problem, text, snap))
        # HAProxy carries health, drain and weights over the reload in this file.
        state = await self.runtime.execute("show servers state")
        with contextlib.suppress(ZonegateError, OSError):
            self.last_rows = await self.runtime.show_stat()
        write_atomic(Path(self.paths.server_state_file), state)
        os.replace(candidate, self.cfg_path)
        await self.hub.reload(snap)
        self.structure = structure
        write_atomic(Path(self.paths.version_map), version_map_text(self.hub.version))
        try:
            await self.process.reload()
        except ZonegateError as e:
            # Passed `haproxy -c` but failed for real (a port taken): the old workers
            # serve on; go back to the config they run.
            await self._rollback(*old)
            return False, self._refused(trace_alerts(str(e), text, snap))
        self.retire()
        self.applied = None
        self.map_version = None
        await self.read_verdicts()
        await self.apply()
        msg += " (HAProxy reloaded)"
        log.info(msg)
        return True, msg

    async def _rollback(self, snap: Snapshot, structure: str, cfg_text: str) -> None:
        """Back to the config HAProxy runs: its file, TLS bundles, version map, hub."""
        write_atomic(self.cfg_path, cfg_text)
        with contextlib.suppress(OSError):
            write_tls_bundles(snap, self.zone, self.paths)
        if snap is not self.snapshot:
            await self.hub.reload(snap)
        self.structure = structure
        write_atomic(Path(self.paths.version_map), version_map_text(self.hub.version))

    def _refused(self, why: str) -> str:
        msg = f"reload refused by HAProxy, keeping version {self.hub.version}:\n{why.strip()}"
        log.error(msg)
        with contextlib.suppress(OSError):
            self.cfg_path.with_name("haproxy.cfg.new").unlink()
        return msg

    async def gather(self) -> dict[str, Any]:
        """The stats document of /status and /metrics, in the built-in engine's shape.

        HAProxy's counters start again from 0 in a new worker (a reload, a restart):
        the figures of the ones before are kept in `retired` and added, so counters
        never go down. While HAProxy's socket does not answer (it is restarting) the
        last figures read stand in.
        """
        try:
            # What /status reports is what HAProxy runs: HAProxy's latest verdicts,
            # and the hub's decisions on them applied first.
            async with self.lock:
                await self.read_verdicts()
                self.hub.publish()
                if self.kick.is_set():
                    await self.apply()
        except (ZonegateError, OSError) as e:
            log.debug("show stat for /status: %s (using the last figures)", e)
        current = engine_stats(
            self.snapshot.topology, self.zone, self.last_rows, workers=self.threads
        )
        if self.retired is not None:
            merged = merge_worker_stats([current, self.retired])
            merged["connections"] = current["connections"]
            merged["workers"] = self.threads
            current = merged
        current["ramp"] = slow_start_ramps(self.last_rows)
        return current

    def retire(self) -> None:
        """Keep the figures of the HAProxy worker about to go (reload) or gone (crash)."""
        if not self.last_rows:
            return
        last = engine_stats(self.snapshot.topology, self.zone, self.last_rows)
        self.retired = retire_stats([last] if self.retired is None else [self.retired, last])
        self.last_rows = []

    async def drain(self, timeout: float) -> float:  # noqa: ASYNC109 - a budget, returned
        """Stop taking connections and wait (up to `timeout` s) for the requests in
        flight; return the time left.

        HAProxy's own soft stop would also wait for idle keep-alive connections (it
        answers their next request before closing, see render's
        `idle-close-on-response`), up to the client idle timeout. So the frontends are
        disabled first, in-flight requests are awaited, and what is left of the budget
        (at most IDLE_GRACE) goes to the soft stop: an idle connection's next request
        is still answered within it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            for name in zone_listeners(self.snapshot.topology, self.zone):
                await self.runtime.execute(f"disable frontend {frontend_name(name)}")
            while loop.time() < deadline:
                rows = await self.runtime.show_stat()
                busy = sum(int(r.get("scur") or 0) for r in rows if r.get("svname") == "BACKEND")
                if busy == 0:
                    break
                await asyncio.sleep(0.05)
        except (ZonegateError, OSError) as e:
            log.warning("draining through the runtime API: %s (soft stop only)", e)
            return max(0.0, deadline - loop.time())
        return min(IDLE_GRACE, max(0.0, deadline - loop.time()))

    async def first_verdicts(self) -> None:
        """Wait until HAProxy has checked every server once (at most
        FIRST_VERDICT_TIMEOUT), as the built-in engine probes every backend before it
        serves."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FIRST_VERDICT_TIMEOUT
        while True:
            rows = await self.runtime.show_stat()
            waiting = [
                f"{r.get('pxname')}/{r.get('svname')}"
                for r in rows
                if str(r.get("check_status", "")).startswith("INI")
            ]
            if not waiting or loop.time() >= deadline:
                break
            await asyncio.sleep(0.02)
        if waiting:
            log.warning("no first check result yet from %s", ", ".join(waiting))
        self.hub._starting = True
        try:
            await self.read_verdicts()
        finally:
            self.hub._starting = False


def run_haproxy(snapshot: Snapshot, opts: LbOptions) -> int:
    """`zonegate lb --engine haproxy`: run until SIGTERM/SIGINT; the exit status."""
    import uvloop

    state_dir = Path(opts.state_dir) if opts.state_dir else default_state_dir(opts.path, opts.zone)
    try:
        paths = HaproxyPaths.in_dir(state_dir.absolute())
    except ValueError as e:
        print(f"zonegate lb: --state-dir {state_dir}: {e}", file=sys.stderr)
        return 2
    threads = max(1, opts.workers)
    if opts.print_config:
        sys.stdout.write(render_config(snapshot, opts.zone, paths, threads=threads))
        return 0
    try:
        binary = find_haproxy(os.environ.get(HAPROXY_ENV) or None)
    except HaproxyNotFound as e:
        print(f"zonegate lb: {e}", file=sys.stderr)
        return 1
    try:
        Path(paths.state_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.stat(paths.state_dir)
    except OSError as e:
        print(f"zonegate lb: cannot create the state directory {state_dir}: {e}", file=sys.stderr)
        return 1
    # It holds an admin socket: refuse one another user owns or may write to.
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        print(
            f"zonegate lb: state directory {state_dir} is not ours alone "
            f"(owner uid {st.st_uid}, mode {st.st_mode & 0o777:o}): use --state-dir",
            file=sys.stderr,
        )
        return 1
    return uvloop.run(_run(Engine(snapshot, opts, paths, binary)))


async def _run(engine: Engine) -> int:
    opts = engine.opts
    hub = engine.hub

    def follow_state(state: ControlState) -> None:
        hub.apply_control(state.version, state.backends)
        engine.kick.set()

    # The control plane's first state comes before HAProxy starts, so its version map
    # and first apply already carry the control plane's version and admin states.
    follower = await start_following(opts.control, follow_state)
    try:
        engine.write_files(engine.snapshot)
    except OSError as e:
        print(f"zonegate lb: {e}", file=sys.stderr)
        return await _undo(follower, 1)
    try:
        await engine.process.start()
    except HaproxyStartError as e:
        why = trace_alerts(str(e), engine.cfg_path.read_text(), engine.snapshot)
        print(f"zonegate lb: HAProxy did not start:\n{why}", file=sys.stderr)
        return await _undo(follower, 1)
    try:
        await engine.first_verdicts()
        await hub.start()
        async with engine.lock:
            engine.note_process()
            await engine.apply()
    except (ZonegateError, OSError) as e:
        print(f"zonegate lb: HAProxy's runtime API did not answer: {e}", file=sys.stderr)
        await engine.process.stop(0.0)
        return await _undo(follower, 1)
    app = AdminApp(hub, engine.gather, engine.reload)
    admin = opts.admin or engine.snapshot.topology.zones[opts.zone].lb_admin
    try:
        admin_server = await _start_admin(app, admin)
    except ListenError as e:
        await engine.process.stop(0.0)
        await hub.stop()
        await _undo(follower, 1)
        return _cannot_listen(e)
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[Any]] = set()

    def spawn(coro: Any) -> None:
        t = loop.create_task(coro)
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    spawn(engine.control_loop())
    stop = asyncio.Event()
    _install_signals(stop, lambda: spawn(engine.reload()))
    print(
        _announce_line(engine.snapshot, opts, admin, hub.version)
        + f", engine haproxy (pid {engine.process.pid}, state {engine.paths.state_dir})",
        flush=True,
    )
    await stop.wait()
    log.info("stopping: HAProxy finishes in-flight requests (up to %.0fs)", opts.drain_timeout)
    if follower is not None:
        await follower.stop()
    app.draining = True
    for t in list(tasks):
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    left = await engine.drain(opts.drain_timeout)
    await engine.process.stop(left)
    await hub.stop()
    if admin_server is not None:
        admin_server.close()
    log.info("stopped")
    return 0


async def _undo(follower: Any, status: int) -> int:
    if follower is not None:
        await follower.stop()
    return status
