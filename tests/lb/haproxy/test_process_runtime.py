"""process.py and runtime.py against a real HAProxy 2.6 with small hand-written configs."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from tests.peers.processes import free_port, refused_port, retry_addr_in_use, start_backend
from zonegate.errors import ConnectError, ReadTimeout
from zonegate.lb.haproxy.model import ServerAdmin, ServerDesired, ServerKey
from zonegate.lb.haproxy.process import (
    HaproxyNotFound,
    HaproxyProcess,
    HaproxyReloadError,
    HaproxyStartError,
    HaproxyTooOld,
    find_haproxy,
)
from zonegate.lb.haproxy.reconcile import plan
from zonegate.lb.haproxy.runtime import RuntimeClient, RuntimeCommandError

pytestmark = pytest.mark.skipif(
    shutil.which("haproxy") is None and not os.path.exists("/usr/sbin/haproxy"),
    reason="HAProxy is not installed (apt-get install haproxy; make test installs it)",
)


@dataclass
class Paths:
    state_dir: Path
    stats_socket: Path
    master_socket: Path


@pytest.fixture
def state_dir():
    # Short: HAProxy takes unix socket paths of at most 97 bytes (it keeps 10 for a
    # temporary name), and pytest's tmp_path can be longer.
    d = Path(tempfile.mkdtemp(prefix="zg-hp-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def backend():
    with start_backend("b1", zone="z1") as b:
        yield b


def config(d: Path, port: int, up: str, down: str, extra: str = "") -> str:
    return textwrap.dedent(f"""\
        global
            stats socket {d}/haproxy.sock level admin expose-fd listeners
            server-state-file {d}/server-state
        defaults
            mode http
            timeout connect 1s
            timeout client 5s
            timeout server 5s
            load-server-state-from-file global
        frontend fe_web
            bind 127.0.0.1:{port}
            http-after-response set-header X-Zonegate-Version %[str(version),map({d}/version.map)]
            default_backend be_web
        backend be_web
            balance roundrobin
            server a {up} check inter 100ms rise 1 fall 1 weight 10
            server b {down} check inter 100ms rise 1 fall 1 weight 20
            server nocheck {up} weight 5
        {extra}""")


async def start_haproxy(d: Path, backend, **kw) -> tuple[HaproxyProcess, int]:
    """Start HAProxy on a fresh port, retried when the port was taken meanwhile."""
    down = f"127.0.0.1:{refused_port()}"
    (d / "version.map").write_text("version 1\n")
    paths = Paths(d, d / "haproxy.sock", d / "master.sock")
    for attempt in range(5):
        port = free_port()
        cfg = d / "haproxy.cfg"
        cfg.write_text(config(d, port, backend.address, down))
        proc = HaproxyProcess(find_haproxy(), cfg, paths, **kw)
        try:
            await proc.start()
            return proc, port
        except HaproxyStartError as e:
            if (
                "Address already in use" not in str(e) and "cannot bind" not in str(e)
            ) or attempt == 4:
                raise
    raise AssertionError("unreachable")


def family(pid: int) -> set[int]:
    return {pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))}


def gone(pids: set[int], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
        if not alive:
            return True
        time.sleep(0.05)
    return False


async def wait_for(cond, within: float = 5.0):
    deadline = time.monotonic() + within
    while True:
        value = await cond()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


async def test_start_serve_and_stop_leaves_no_process(state_dir, backend):
    proc, port = await start_haproxy(state_dir, backend)
    pids = family(proc.pid)
    assert len(pids) >= 2  # master and a worker
    async with httpx.AsyncClient() as c:
        r = await c.get(f"http://127.0.0.1:{port}/")
    assert r.status_code == 200
    assert r.headers["x-zonegate-version"] == "1"
    info = await proc.runtime.show_info()
    assert info["Name"] == "HAProxy"
    assert await proc.stop(5.0) == 0
    assert gone(pids)


async def test_reconcile_closes_the_gap_on_a_real_haproxy(state_dir, backend):
    proc, _ = await start_haproxy(state_dir, backend)
    rt = proc.runtime
    try:
        b = ServerKey("be_web", "b")

        async def b_down():
            return not (await rt.servers_state())[b].up

        assert await wait_for(b_down)
        desired = {
            ServerKey("be_web", "a"): ServerDesired(ServerAdmin.DRAIN, 3),
            b: ServerDesired(ServerAdmin.READY, 256),
            ServerKey("be_web", "nocheck"): ServerDesired(ServerAdmin.MAINT, 0),
            ServerKey("be_web", "ghost"): ServerDesired(ServerAdmin.READY, 1),
        }
        p = plan(desired, await rt.servers_state())
        assert p.unknown == [ServerKey("be_web", "ghost")]
        results = await rt.batch(p.commands)
        assert all(r.ok for r in results), results
        reported = await rt.servers_state()
        assert plan(desired, reported).commands == []
        status = {r["svname"]: r["status"] for r in await rt.show_stat() if r["pxname"] == "be_web"}
        assert status["a"] == "DRAIN"
        assert status["nocheck"] == "MAINT"
        # Drift: someone switches b's checks off by hand; reconcile switches them on.
        await rt.execute("disable health be_web/b")
        p = plan(desired, await rt.servers_state())
        assert p.commands == ["enable health be_web/b"]
        for cmd in p.commands:
            await rt.execute(cmd)
        reported = await rt.servers_state()
        assert reported[b].check_enabled
        assert plan(desired, reported).commands == []
        assert await wait_for(b_down)
    finally:
        await proc.stop(1.0)


async def test_refusals_and_socket_faults_are_clear_errors(state_dir, backend):
    proc, _ = await start_haproxy(state_dir, backend)
    rt = proc.runtime
    try:
        with pytest.raises(RuntimeCommandError, match="No such server"):
            await rt.execute("set server be_web/nope state drain")
        with pytest.raises(RuntimeCommandError, match="Unknown command"):
            await rt.execute("frobnicate")
        with pytest.raises(RuntimeCommandError, match="between 0 and 256"):
            await rt.execute("set server be_web/a weight 300")
        results = await rt.batch(
            ["set server be_web/nope weight 1", "set server be_web/a weight 7"]
        )
        assert [r.ok for r in results] == [False, True]
        assert (await rt.servers_state())[ServerKey("be_web", "a")].weight == 7
        with pytest.raises(ValueError, match="one Runtime API command"):
            await rt.execute("show info; shutdown frontend fe_web")
    finally:
        await proc.stop(1.0)
    with pytest.raises(ConnectError, match="haproxy socket"):
        await RuntimeClient(str(state_dir / "haproxy.sock")).show_info()

    async def silent(reader, writer):
        await reader.read()  # never answers; returns when the client gives up
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_unix_server(silent, str(state_dir / "silent.sock"))
    async with server:
        with pytest.raises(ReadTimeout):
            await RuntimeClient(str(state_dir / "silent.sock"), timeout=0.2).show_info()


async def test_version_map_changes_the_header_without_a_reload(state_dir, backend):
    proc, port = await start_haproxy(state_dir, backend)
    try:
        await proc.runtime.set_map(str(state_dir / "version.map"), "version", "42")
        assert await proc.runtime.show_map(str(state_dir / "version.map")) == {"version": "42"}
        async with httpx.AsyncClient() as c:
            r = await c.get(f"http://127.0.0.1:{port}/")
        assert r.headers["x-zonegate-version"] == "42"
        await proc.runtime.add_map(str(state_dir / "version.map"), "other", "1")
        await proc.runtime.del_map(str(state_dir / "version.map"), "other")
    finally:
        await proc.stop(1.0)


async def test_start_failure_returns_haproxys_words(state_dir):
    cfg = state_dir / "haproxy.cfg"
    cfg.write_text(
        f"global\n    stats socket {state_dir}/haproxy.sock level admin\nbogus keyword\n"
    )
    paths = Paths(state_dir, state_dir / "haproxy.sock", state_dir / "master.sock")
    proc = HaproxyProcess(find_haproxy(), cfg, paths)
    with pytest.raises(HaproxyStartError, match=r"(?s)exited with status.*ALERT.*haproxy.cfg:3"):
        await proc.start()
    assert proc.pid is None


def test_missing_or_old_binary_names_the_package(tmp_path):
    with pytest.raises(HaproxyNotFound, match="apt-get install haproxy"):
        find_haproxy(str(tmp_path / "no-haproxy"))
    old = tmp_path / "haproxy"
    old.write_text("#!/bin/sh\necho 'HAProxy version 2.4.22-0ubuntu0.22.04.3 2023/08/14'\n")
    old.chmod(0o755)
    with pytest.raises(HaproxyTooOld, match=r"2\.4\.22.*2\.6 or later"):
        find_haproxy(str(old))
    assert find_haproxy().endswith("haproxy")


async def test_a_crashed_haproxy_is_restarted_with_back_off(state_dir, backend):
    proc, port = await start_haproxy(state_dir, backend, backoff_first=0.2)
    try:
        first = proc.pid
        os.killpg(first, signal.SIGKILL)

        async def back():
            return proc.restarts == 1 and proc.pid not in (None, first)

        assert await wait_for(back, 10)
        assert proc.last_exit == -signal.SIGKILL
        await proc._wait_ready(proc._proc)

        async def b_down():
            return not (await proc.runtime.servers_state())[ServerKey("be_web", "b")].up

        assert await wait_for(b_down)  # the new HAProxy checked the dead server
        async with httpx.AsyncClient() as c:
            assert (await c.get(f"http://127.0.0.1:{port}/")).status_code == 200
    finally:
        await proc.stop(1.0)


async def test_reload_keeps_state_and_a_refused_file_keeps_the_old_config(state_dir, backend):
    proc, port = await start_haproxy(state_dir, backend)
    rt = proc.runtime
    try:
        await rt.set_server_state("be_web", "a", ServerAdmin.DRAIN)
        old_workers = {w.pid for w in (await proc.master.show_proc()).workers}
        # New structure: one more server. The state carried over in the state file.
        (state_dir / "server-state").write_text(await rt.execute("show servers state"))
        cfg = proc.cfg_path
        cfg.write_text(
            cfg.read_text().replace(
                "server nocheck", f"server c {backend.address} weight 1\n    server nocheck"
            )
        )
        await proc.reload()
        table = await proc.master.show_proc()
        assert {w.pid for w in table.workers}.isdisjoint(old_workers)
        reported = await rt.servers_state()
        assert ServerKey("be_web", "c") in reported
        assert reported[ServerKey("be_web", "a")].admin is ServerAdmin.DRAIN
        # A file HAProxy refuses: the error carries its words, the old workers serve on.
        workers = {w.pid for w in table.workers}
        cfg.write_text(cfg.read_text() + "bogus keyword\n")
        assert "bogus" in (await proc.check() or "")
        with pytest.raises(HaproxyReloadError, match="unknown keyword 'bogus'"):
            await proc.reload()
        table = await proc.master.show_proc()  # the master's prompt now says ReloadFailed
        assert table.master.failed_reloads == 1
        assert {w.pid for w in table.workers} == workers
        info = await rt.show_info()
        assert int(info["Pid"]) in workers
        # Fixed: the next reload goes through and clears the failure.
        cfg.write_text(cfg.read_text().replace("bogus keyword\n", ""))
        await proc.reload()
        assert (await proc.master.show_proc()).master.failed_reloads == 0
        async with httpx.AsyncClient() as c:
            assert (await c.get(f"http://127.0.0.1:{port}/")).status_code == 200
        assert proc.restarts == 0
    finally:
        await proc.stop(1.0)


CHILD = """
import asyncio, sys, uvloop
from zonegate.lb.haproxy.process import HaproxyProcess, find_haproxy
from tests.lb.haproxy.test_process_runtime import Paths
from pathlib import Path
d = Path(sys.argv[1])
async def main():
    p = HaproxyProcess(find_haproxy(), d / "haproxy.cfg", Paths(d, d / "haproxy.sock", d / "master.sock"))
    await p.start()
    print(p.pid, flush=True)
    await asyncio.sleep(60)
uvloop.run(main())  # the loop `zonegate lb` runs
"""


def test_no_haproxy_outlives_a_killed_zonegate(state_dir, backend):
    (state_dir / "version.map").write_text("version 1\n")

    def start():
        (state_dir / "haproxy.cfg").write_text(
            config(state_dir, free_port(), backend.address, f"127.0.0.1:{refused_port()}")
        )
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(state_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parents[3],
        )  # fmt: skip
        line = child.stdout.readline()
        if not line.strip():
            child.kill()
            raise RuntimeError(child.stderr.read())
        return child, int(line)

    child, master = retry_addr_in_use(start)
    pids = family(master)
    child.kill()  # SIGKILL: no clean-up code of ours runs
    child.communicate()
    assert gone(pids), f"left behind: {pids}"


class SlowBackend:
    """An HTTP/1.1 backend answering each request after `delay` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.arrived = asyncio.Event()

    async def handle(self, reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.arrived.set()
            await asyncio.sleep(self.delay)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nslow")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.mark.parametrize(("delay", "drain", "served"), [(0.5, 10.0, True), (5.0, 0.3, False)])
async def test_stop_drains_in_flight_requests_up_to_the_timeout(state_dir, delay, drain, served):
    slow = SlowBackend(delay)
    server = await asyncio.start_server(slow.handle, "127.0.0.1", 0)
    async with server:

        @dataclass
        class Addr:
            address: str

        addr = Addr(f"127.0.0.1:{server.sockets[0].getsockname()[1]}")
        proc, port = await start_haproxy(state_dir, addr)
        pids = family(proc.pid)
        b = ServerKey("be_web", "b")
        await proc.runtime.set_server_state("be_web", "b", ServerAdmin.MAINT)
        assert (await proc.runtime.servers_state())[b].admin is ServerAdmin.MAINT
        async with httpx.AsyncClient(timeout=10) as c:
            request = asyncio.create_task(c.get(f"http://127.0.0.1:{port}/"))
            await asyncio.wait_for(slow.arrived.wait(), 5)
            code = await proc.stop(drain)
            if served:
                r = await request
                assert r.status_code == 200
                assert r.text == "slow"
                assert code == 0
            else:
                with pytest.raises(httpx.HTTPError):
                    await request
        assert gone(pids)
        assert proc.pid is None


async def test_stop_during_a_restart_still_drains(state_dir, backend):
    """Regression: stop() cancelled the restart's readiness wait, which SIGKILLed the
    new HAProxy instead of soft-stopping it."""
    proc, _ = await start_haproxy(state_dir, backend, backoff_first=0.05)
    first = proc.pid
    os.killpg(first, signal.SIGKILL)

    async def restarted():
        return proc.pid not in (None, first)

    assert await wait_for(restarted, 10)
    pids = family(proc.pid)
    assert await proc.stop(5.0) == 0
    assert gone(pids)
