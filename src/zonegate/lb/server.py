"""`zonegate lb`: process layout, signals, reload.

One worker (the default) runs everything in one process: the health hub, the admin
endpoint and the proxy. With `--workers N` a supervisor process runs the hub and the
admin endpoint and starts N worker processes; each worker binds every listener with
SO_REUSEPORT (the kernel spreads connections over them) and talks to the supervisor
over a Unix socket pair:

    supervisor -> worker   init(snapshot, states) | states | reload | stats? | stop
    worker -> supervisor   ready | passive(pool, backend, ok, reason) | stats

Health therefore has one owner, and every worker applies the same pool states.
A worker that dies is restarted. SIGHUP (or POST /reload) reloads the topology file;
a bad file is refused and the running config stays. SIGTERM or SIGINT stops
gracefully: stop accepting, finish in-flight requests (up to --drain-timeout), exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from zonegate.control.follow import NO_CONTROL, ControlOptions, start_following
from zonegate.control.model import DesiredState
from zonegate.errors import ConfigErrors
from zonegate.lb.admin import AdminApp, start_admin
from zonegate.lb.haproxy.capabilities import engine_problems, zone_engine
from zonegate.lb.hub import HealthHub
from zonegate.lb.stats import merge_snapshots
from zonegate.lb.worker import ListenError, Worker, set_reuseport_guard, zone_listeners
from zonegate.topology.load import load_topology, render_path
from zonegate.topology.schema import Topology
from zonegate.topology.snapshot import Snapshot
from zonegate.topology.types import HostPort

log = logging.getLogger("zonegate.lb")

_FRAME = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class LbOptions:
    """Command-line options of `zonegate lb`."""

    path: str
    zone: str
    workers: int = 1
    admin: HostPort | None = None
    drain_timeout: float = 30.0
    control: ControlOptions = NO_CONTROL
    """The control plane to follow (`--control`); no URLs: the file alone."""
    engine: str | None = None
    """`--engine`: builtin or haproxy; None: the zone's `lb_engine`."""
    print_config: bool = False
    """`--print-config`: print the haproxy engine's haproxy.cfg and exit."""
    state_dir: str | None = None
    """`--state-dir`: the haproxy engine's directory; None: a per-LB default."""


def setup_logging(level: str = "INFO", worker: int | None = None) -> None:
    tag = f"[w{worker}] " if worker is not None else ""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s {tag}%(name)s: %(message)s",
        stream=sys.stderr,
    )


class Channel:
    """Length-prefixed pickled messages over a stream (same program on both ends)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def send(self, msg: tuple[Any, ...]) -> None:
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        if not self.writer.is_closing():
            self.writer.write(_FRAME.pack(len(data)) + data)

    async def recv(self) -> tuple[Any, ...] | None:
        try:
            head = await self.reader.readexactly(_FRAME.size)
            (n,) = _FRAME.unpack(head)
            msg: tuple[Any, ...] = pickle.loads(await self.reader.readexactly(n))
            return msg
        except (asyncio.IncompleteReadError, ConnectionError):
            return None


def check_zone(topo: Topology, zone: str, path: str) -> None:
    if zone not in topo.zones:
        raise SystemExit(f"{path}: no zone {zone!r} (zones: {', '.join(topo.zones)})")
    if not zone_listeners(topo, zone):
        raise SystemExit(f"{path}: zone {zone!r} has no listeners")


def admin_address(topo: Topology, opts: LbOptions) -> HostPort | None:
    return opts.admin or topo.zones[opts.zone].lb_admin


def load_snapshot(path: str, version: int) -> Snapshot:
    return Snapshot(version=version, topology=load_topology(path), source=path)


async def _try_reload(path: str, current: Snapshot) -> tuple[Snapshot | None, str]:
    try:
        snap = await asyncio.to_thread(load_snapshot, path, current.version + 1)
    except ConfigErrors as e:
        log.error("reload refused, keeping version %d:\n%s", current.version, e)
        return None, f"reload refused, keeping version {current.version}:\n{e}"
    return snap, f"reloaded {path}: version {snap.version}"


def _cannot_listen(e: OSError) -> int:
    """Say in one line which address could not be bound; the exit status."""
    print(f"zonegate lb: {e.strerror}", file=sys.stderr)
    return 1


async def _start_admin(app: AdminApp, admin: HostPort | None) -> asyncio.Server | None:
    if admin is None:
        return None
    try:
        return await start_admin(app, admin.host, admin.port)
    except OSError as e:
        raise ListenError("admin endpoint", str(admin), e) from e


def override_problems(topo: Topology, opts: LbOptions) -> list[str]:
    """What `--engine` cannot honour in a file checked for the zone's own `lb_engine`.

    `zonegate check` judges each zone by its `lb_engine`; an `--engine` override must
    not run a setting the chosen engine would silently drop (TLS on builtin).
    """
    zone = topo.zones[opts.zone]
    if opts.engine is None or opts.engine == zone.lb_engine:
        return []
    zones = dict(topo.zones)
    zones[opts.zone] = zone.model_copy(update={"lb_engine": opts.engine})
    before = set(engine_problems(topo))
    after = engine_problems(topo.model_copy(update={"zones": zones}))
    return [
        f"{opts.path}: {render_path(keys)}: {msg} (--engine {opts.engine})"
        for keys, msg in after
        if (keys, msg) not in before
    ]


def run_lb(opts: LbOptions) -> int:
    """Run `zonegate lb` until SIGTERM/SIGINT; return the exit status."""
    import uvloop

    try:
        snapshot = load_snapshot(opts.path, 1)
    except ConfigErrors as e:
        print(e, file=sys.stderr)
        return 1
    check_zone(snapshot.topology, opts.zone, opts.path)
    refused = override_problems(snapshot.topology, opts)
    if refused:
        print("\n".join(refused), file=sys.stderr)
        return 1
    if zone_engine(snapshot.topology, opts.zone, opts.engine) == "haproxy":
        from zonegate.lb.haproxy.engine import run_haproxy

        return run_haproxy(snapshot, opts)
    if opts.print_config:
        print("zonegate lb: --print-config needs the haproxy engine", file=sys.stderr)
        return 2
    if opts.workers <= 1:
        return uvloop.run(_run_single(snapshot, opts))
    return uvloop.run(_run_supervisor(snapshot, opts))


def _announce_line(
    snapshot: Snapshot, opts: LbOptions, admin: HostPort | None, version: int | None = None
) -> str:
    lst = zone_listeners(snapshot.topology, opts.zone)
    binds = ", ".join(f"{n}={c.bind}" for n, c in lst.items())
    return (
        f"zonegate lb ready: zone {opts.zone}, version {version or snapshot.version}, "
        f"workers {opts.workers}, "
        f"listeners {binds}, admin {admin or 'off'}"
    )


def _announce(
    snapshot: Snapshot, opts: LbOptions, admin: HostPort | None, version: int | None = None
) -> None:
    print(_announce_line(snapshot, opts, admin, version), flush=True)


def _install_signals(stop: asyncio.Event, reload: Any) -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)


async def _run_single(snapshot: Snapshot, opts: LbOptions) -> int:
    hub = HealthHub(snapshot, opts.zone)

    class DirectLink:
        def report_passive(
            self, pool: str, index: int, backend_id: str, ok: bool, reason: str
        ) -> None:
            hub.record_passive(pool, index, backend_id, ok, reason)

    worker = Worker(snapshot, opts.zone, DirectLink())
    hub.subscribe(worker.apply_states)
    await hub.start()

    def follow_state(state: DesiredState) -> None:
        hub.apply_control(state.version, state.backends)
        worker.set_control_version(state.version)

    follower = await start_following(opts.control, follow_state)
    try:
        await worker.start()
    except ListenError as e:
        await _stop_single(worker, hub, follower)
        return _cannot_listen(e)

    async def gather() -> dict[str, Any]:
        stats = worker.stats_snapshot()
        stats["workers"] = 1
        return stats

    lock = asyncio.Lock()

    async def reload() -> tuple[bool, str]:
        async with lock:
            snap, msg = await _try_reload(opts.path, hub.snapshot)
            if snap is None:
                return False, msg
            await hub.reload(snap)
            await worker.reload(snap, hub.states)
            log.info(msg)
            return True, msg

    app = AdminApp(hub, gather, reload)
    admin = admin_address(snapshot.topology, opts)
    try:
        admin_server = await _start_admin(app, admin)
    except ListenError as e:
        await _stop_single(worker, hub, follower)
        return _cannot_listen(e)
    stop = asyncio.Event()
    tasks: set[asyncio.Task[Any]] = set()

    def on_hup() -> None:
        t = asyncio.get_running_loop().create_task(reload())
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    _install_signals(stop, on_hup)
    _announce(snapshot, opts, admin, hub.version)
    await stop.wait()
    log.info("stopping: draining in-flight requests (up to %.0fs)", opts.drain_timeout)
    if follower is not None:
        await follower.stop()
    app.draining = True
    await worker.stop(opts.drain_timeout)
    await hub.stop()
    if admin_server is not None:
        admin_server.close()
    log.info("stopped")
    return 0


async def _stop_single(worker: Worker, hub: HealthHub, follower: Any) -> None:
    """Undo a start that failed half-way (nothing is in flight yet)."""
    if follower is not None:
        await follower.stop()
    await worker.stop(0.0)
    await hub.stop()


class WorkerHandle:
    """The supervisor's side of one worker process."""

    def __init__(self, index: int, opts: LbOptions) -> None:
        self.index = index
        self.opts = opts
        self.proc: subprocess.Popen[bytes] | None = None
        self.chan: Channel | None = None
        self.ready = asyncio.Event()
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.last_stats: dict[str, Any] | None = None
        """The worker's latest counters, used when it is slow to answer or has died."""

    async def spawn(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [
            sys.executable,
            "-m",
            "zonegate.lb.server",
            "--worker-fd",
            str(child.fileno()),
            "--zone",
            self.opts.zone,
            "--index",
            str(self.index),
            "--log-level",
            logging.getLevelName(logging.getLogger().level),
        ]
        self.ready.clear()
        # Popen only forks and execs; the wait happens in a thread (see serve_worker).
        self.proc = subprocess.Popen(argv, pass_fds=[child.fileno()])  # noqa: ASYNC220
        child.close()
        reader, writer = await asyncio.open_connection(sock=parent)
        self.chan = Channel(reader, writer)

    def send(self, msg: tuple[Any, ...]) -> None:
        if self.chan is not None:
            self.chan.send(msg)


async def _run_supervisor(snapshot: Snapshot, opts: LbOptions) -> int:
    loop = asyncio.get_running_loop()
    guards = []
    for name, c in zone_listeners(snapshot.topology, opts.zone).items():
        try:
            guards.append(set_reuseport_guard(c.bind.host, c.bind.port))
        except OSError as e:
            for g in guards:
                g.close()
            return _cannot_listen(ListenError(f"listener {name}", str(c.bind), e))
    hub = HealthHub(snapshot, opts.zone)
    await hub.start()
    stopping = False
    handles = [WorkerHandle(i, opts) for i in range(opts.workers)]
    # Counters of workers that died, so the sums stay monotonic across a restart.
    retired: list[dict[str, Any]] = []
    seq = 0
    tasks: set[asyncio.Task[Any]] = set()

    def spawn_task(coro: Any) -> None:
        t = loop.create_task(coro)
        tasks.add(t)
        t.add_done_callback(_task_done)

    def _task_done(t: asyncio.Task[Any]) -> None:
        tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.error("supervisor task failed", exc_info=t.exception())

    async def serve_worker(h: WorkerHandle) -> None:
        """Start a worker, feed it, and restart it if it dies."""
        while not stopping:
            await h.spawn()
            assert h.chan is not None
            h.send(("init", hub.snapshot, hub.states, hub.control_version))
            while True:
                msg = await h.chan.recv()
                log.debug("from worker %d: %r", h.index, msg[:2] if msg else msg)
                if msg is None:
                    break
                kind = msg[0]
                if kind == "ready":
                    h.ready.set()
                elif kind == "passive":
                    hub.record_passive(*msg[1:])
                elif kind == "stats":
                    h.last_stats = msg[2]
                    fut = h.pending.pop(msg[1], None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg[2])
            assert h.proc is not None
            if h.last_stats is not None:
                retired[:] = [retire_stats([*retired, h.last_stats])]
                h.last_stats = None
            code = await asyncio.to_thread(h.proc.wait)
            if not stopping:
                log.error(
                    "worker %d (pid %d) exited with %s; restarting", h.index, h.proc.pid, code
                )
                await asyncio.sleep(0.2)

    for h in handles:
        spawn_task(serve_worker(h))
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(h.ready.wait() for h in handles))
    except TimeoutError:
        log.error("workers did not become ready in 30s")
        for h in handles:
            if h.proc:
                h.proc.kill()
        return 1
    for g in guards:
        g.close()

    def broadcast(states: Any) -> None:
        for h in handles:
            h.send(("states", states))

    hub.subscribe(broadcast)

    async def gather() -> dict[str, Any]:
        nonlocal seq
        asked = []
        for h in handles:
            seq += 1
            fut: asyncio.Future[dict[str, Any]] = loop.create_future()
            h.pending[seq] = fut
            h.send(("stats", seq))
            asked.append((h, seq, fut))
        await asyncio.wait([fut for _, _, fut in asked], timeout=2.0)
        snaps = []
        for h, n, fut in asked:
            if not fut.done():
                h.pending.pop(n, None)
                fut.cancel()
            # A worker slow to answer counts with its last figures; one that died
            # has none (they moved to `retired`) until its successor reports.
            if h.last_stats is not None:
                snaps.append(h.last_stats)
        merged = merge_worker_stats([*snaps, *retired])
        merged["workers"] = len(snaps)
        return merged

    lock = asyncio.Lock()

    async def reload() -> tuple[bool, str]:
        async with lock:
            snap, msg = await _try_reload(opts.path, hub.snapshot)
            if snap is None:
                return False, msg
            await hub.reload(snap)
            for h in handles:
                h.send(("reload", snap, hub.states))
            log.info(msg)
            return True, msg

    app = AdminApp(hub, gather, reload)
    admin = admin_address(snapshot.topology, opts)
    try:
        admin_server = await _start_admin(app, admin)
    except ListenError as e:
        stopping = True
        await _stop_workers(handles, 0.0)
        await hub.stop()
        for t in list(tasks):
            t.cancel()
        return _cannot_listen(e)
    stop = asyncio.Event()
    _install_signals(stop, lambda: spawn_task(reload()))

    def follow_state(state: DesiredState) -> None:
        hub.apply_control(state.version, state.backends)
        for h in handles:
            h.send(("version", state.version))

    follower = await start_following(opts.control, follow_state)
    _announce(snapshot, opts, admin, hub.version)
    await stop.wait()
    stopping = True
    if follower is not None:
        await follower.stop()
    app.draining = True
    log.info(
        "stopping %d workers: draining in-flight requests (up to %.0fs)",
        len(handles),
        opts.drain_timeout,
    )
    await _stop_workers(handles, opts.drain_timeout)
    await hub.stop()
    if admin_server is not None:
        admin_server.close()
    for t in list(tasks):
        t.cancel()
    log.info("stopped")
    return 0


async def _stop_workers(handles: list[WorkerHandle], drain_timeout: float) -> None:
    """Ask every worker to drain and stop; kill those that overstay."""
    for h in handles:
        h.send(("stop", drain_timeout))
    for h in handles:
        if h.proc is None:
            continue
        try:
            await asyncio.wait_for(asyncio.to_thread(h.proc.wait), drain_timeout + 5)
        except TimeoutError:
            h.proc.kill()


def retire_stats(snaps: list[dict[str, Any]]) -> dict[str, Any]:
    """Fold the last counters of dead workers into one snapshot with nothing in flight."""
    out = merge_worker_stats(snaps)
    out["connections"] = 0
    for pool in out["pools"].values():
        pool["inflight"] = [0] * len(pool["inflight"])
    return out


def merge_worker_stats(snaps: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the stats of several workers into one document."""
    out: dict[str, Any] = {
        "pools": {},
        "client_errors": {},
        "connections": 0,
        "workers": len(snaps),
    }
    names = {n for s in snaps for n in s.get("pools", {})}
    for name in names:
        parts = [s["pools"][name] for s in snaps if name in s.get("pools", {})]
        out["pools"][name] = merge_snapshots(parts)
    for s in snaps:
        out["connections"] += s.get("connections", 0)
        for k, v in s.get("client_errors", {}).items():
            out["client_errors"][k] = out["client_errors"].get(k, 0) + v
    return out


# worker process


async def _worker_main(fd: int, zone: str, index: int) -> int:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_connection(sock=sock)
    chan = Channel(reader, writer)
    msg = await chan.recv()
    if msg is None or msg[0] != "init":
        return 1
    _, snapshot, states, control_version = msg

    class ChannelLink:
        def report_passive(
            self, pool: str, idx: int, backend_id: str, ok: bool, reason: str
        ) -> None:
            chan.send(("passive", pool, idx, backend_id, ok, reason))

    worker = Worker(snapshot, zone, ChannelLink(), reuse_port=True)
    worker.apply_states(states)
    if control_version:
        worker.set_control_version(control_version)
    await worker.start()
    chan.send(("ready", os.getpid()))
    loop = asyncio.get_running_loop()
    stop_timeout: list[float] = []

    def on_term() -> None:
        # SIGTERM sent to a worker directly: stop as the supervisor's "stop" would.
        stop_timeout.append(30.0)
        writer.close()

    loop.add_signal_handler(signal.SIGTERM, on_term)
    while True:
        msg = await chan.recv()
        if msg is None:
            break
        kind = msg[0]
        if kind == "states":
            worker.apply_states(msg[1])
        elif kind == "version":
            worker.set_control_version(msg[1])
        elif kind == "reload":
            await worker.reload(msg[1], msg[2])
        elif kind == "stats":
            chan.send(("stats", msg[1], worker.stats_snapshot()))
        elif kind == "stop":
            stop_timeout.append(msg[1])
            break
    await worker.stop(stop_timeout[0] if stop_timeout else 30.0)
    with contextlib.suppress(Exception):
        writer.close()
    return 0


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker if the supervisor dies (even by SIGKILL)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: workers still stop when their channel closes
    if os.getppid() == 1:
        os.kill(os.getpid(), signal.SIGTERM)


def _worker_entry(argv: list[str]) -> int:
    import argparse

    import uvloop

    p = argparse.ArgumentParser(prog="zonegate lb worker")
    p.add_argument("--worker-fd", type=int, required=True)
    p.add_argument("--zone", required=True)
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--log-level", default="INFO")
    a = p.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when to stop
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _die_with_parent()
    setup_logging(a.log_level, worker=a.index)
    return uvloop.run(_worker_main(a.worker_fd, a.zone, a.index))


if __name__ == "__main__":
    sys.exit(_worker_entry(sys.argv[1:]))
