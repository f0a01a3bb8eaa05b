"""Probers and the checker loop against real sockets on 127.0.0.1 (port 0)."""

from __future__ import annotations

import asyncio
import random
from contextlib import asynccontextmanager

import pytest
import uvloop

from tests.peers.processes import refused_port
from zonegate.health.machine import HealthState, PoolHealth, ProbeResult, Transition
from zonegate.health.probes import BODY_LIMIT, ActiveChecker, probe_http, probe_tcp
from zonegate.topology.schema import ActiveCheck, Health, Pool
from zonegate.topology.types import HostPort

HOST = "127.0.0.1"
UP, DOWN, UNKNOWN = HealthState.UP, HealthState.DOWN, HealthState.UNKNOWN


@asynccontextmanager
async def serve(handler, port: int = 0):
    """Run an asyncio TCP server; yields its port."""
    server = await asyncio.start_server(handler, HOST, port)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept and never answer; return when the peer closes."""
    try:
        await reader.read()
    finally:
        writer.close()


def http_server(response: bytes | list[bytes], seen: list[bytes] | None = None):
    """A handler that reads one request head, answers `response` (in parts) and closes."""
    parts = [response] if isinstance(response, bytes) else response

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if seen is not None:
                seen.append(head)
            for part in parts:
                writer.write(part)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return handler


def check(**kw) -> ActiveCheck:
    return ActiveCheck(type="http", **kw)


# -- TCP -------------------------------------------------------------------------


async def test_tcp_up():
    async with serve(idle) as port:
        result = await probe_tcp(HOST, port, 1.0)
    assert result.ok
    assert result.reason == "connected"
    assert 0 <= result.latency < 1.0


async def test_tcp_refused():
    result = await probe_tcp(HOST, refused_port(), 1.0)
    assert result == ProbeResult(False, "connect refused", result.latency)


async def test_tcp_bad_host():
    result = await probe_tcp("no-such-host.invalid", 80, 1.0)
    assert not result.ok
    assert result.reason.startswith(("connect failed", "connect timeout"))


# -- HTTP ------------------------------------------------------------------------

OK_BODY = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nall ok\n"


async def test_http_200_and_request_shape():
    seen: list[bytes] = []
    async with serve(http_server(OK_BODY, seen)) as port:
        result = await probe_http(HOST, port, check(path="/healthz"), 1.0)
    assert result.ok, result
    assert result.reason == "status 200"
    head = seen[0].decode()
    lines = head.split("\r\n")
    assert lines[0] == "GET /healthz HTTP/1.1"
    assert f"Host: {HOST}:{port}" in lines
    assert "Connection: close" in lines
    assert "User-Agent: zonegate-health" in lines


async def test_http_host_from_check():
    seen: list[bytes] = []
    async with serve(http_server(OK_BODY, seen)) as port:
        await probe_http(HOST, port, check(host="api.example.test"), 1.0)
    assert b"\r\nHost: api.example.test\r\n" in seen[0]


def test_schema_refuses_host_with_control_characters():
    with pytest.raises(ValueError, match="host"):
        check(host="a\r\nX-Evil: 1")


async def test_http_host_with_control_characters_is_refused():
    # Defence in depth: the schema already refuses it; the prober must too.
    bad = check().model_copy(update={"host": "a\r\nX-Evil: 1"})
    result = await probe_http(HOST, refused_port(), bad, 1.0)
    assert not result.ok
    assert result.reason.startswith("invalid Host header")


async def test_http_503():
    response = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
    async with serve(http_server(response)) as port:
        result = await probe_http(HOST, port, check(), 1.0)
    assert not result.ok
    assert result.reason == "status 503 not in 200-399"


async def test_http_expect_status():
    response = b"HTTP/1.1 204 No Content\r\n\r\n"
    async with serve(http_server(response)) as port:
        assert (await probe_http(HOST, port, check(expect_status="204"), 1.0)).ok
        result = await probe_http(HOST, port, check(expect_status="200"), 1.0)
    assert result.reason == "status 204 not in 200"


@pytest.mark.parametrize(
    ("response", "expect", "ok", "reason"),
    [
        (OK_BODY, "ok", True, "status 200, body has 'ok'"),
        (OK_BODY, "fine", False, "body lacks 'fine'"),
        # read-to-close framing: no length, no chunking
        (b"HTTP/1.1 200 OK\r\n\r\nstatus: ok", "ok", True, "status 200, body has 'ok'"),
        (b"HTTP/1.0 200 OK\r\n\r\nstatus: bad", "ok", False, "body lacks 'ok'"),
        # chunked, with the substring split across two chunks
        (
            [
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"5\r\nstatu\r\n",
                b"6\r\ns: rea\r\n",
                b"2\r\ndy\r\n0\r\n\r\n",
            ],
            "ready",
            True,
            "status 200, body has 'ready'",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nnop\r\n0\r\n\r\n",
            "ready",
            False,
            "body lacks 'ready'",
        ),
        # the status is checked before the body
        (
            b"HTTP/1.1 500 Oops\r\nContent-Length: 2\r\n\r\nok",
            "ok",
            False,
            "status 500 not in 200-399",
        ),
    ],
)
async def test_http_body(response, expect, ok, reason):
    async with serve(http_server(response)) as port:
        result = await probe_http(HOST, port, check(expect_body=expect), 1.0)
    assert (result.ok, result.reason) == (ok, reason)


async def test_http_body_beyond_limit_is_not_searched():
    body = b"x" * BODY_LIMIT + b"ok"
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    async with serve(http_server([head, body])) as port:
        result = await probe_http(HOST, port, check(expect_body="ok"), 1.0)
    assert not result.ok
    assert result.reason == "body lacks 'ok' in first 64 KiB"


async def test_http_truncated_body_lacks_substring():
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"
    async with serve(http_server(response)) as port:
        result = await probe_http(HOST, port, check(expect_body="ok"), 1.0)
    assert (result.ok, result.reason) == (False, "body lacks 'ok'")


async def test_http_timeout_when_server_never_answers():
    async with serve(idle) as port:
        result = await probe_http(HOST, port, check(), 0.1)
    assert not result.ok
    assert result.reason == "timeout after 100ms"
    assert 0.09 <= result.latency < 1.0


async def test_http_slow_body_times_out():
    async def handler(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
        await idle(reader, writer)

    async with serve(handler) as port:
        result = await probe_http(HOST, port, check(expect_body="ok"), 0.1)
    assert result.reason == "timeout after 100ms"


async def test_http_refused():
    result = await probe_http(HOST, refused_port(), check(), 1.0)
    assert (result.ok, result.reason) == (False, "connect refused")


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (b"", "connection closed before status line"),
        (b"HTTP/1.1 200 OK\r\nContent-", "connection closed mid-response"),
        (b"SSH-2.0-OpenSSH_9.6\r\n", "bad response: "),
    ],
)
async def test_http_broken_responses(response, reason):
    async with serve(http_server(response)) as port:
        result = await probe_http(HOST, port, check(), 1.0)
    assert not result.ok
    assert result.reason.startswith(reason)


def test_probes_under_uvloop():
    async def main():
        async with serve(http_server(OK_BODY)) as port:
            return (
                await probe_tcp(HOST, port, 1.0),
                await probe_http(HOST, port, check(expect_body="ok"), 1.0),
                await probe_tcp(HOST, refused_port(), 1.0),
            )

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        tcp, http, refused = runner.run(main())
    assert tcp.ok
    assert http.ok
    assert refused.reason == "connect refused"


# -- ActiveChecker ---------------------------------------------------------------


def pool_for(*ports: int, interval: str = "50ms", rise: int = 2, fall: int = 2, **kw) -> Pool:
    return Pool(
        zone="z1",
        backends=[{"address": f"{HOST}:{p}"} for p in ports],
        health=Health(
            active=ActiveCheck(interval=interval, timeout="200ms", rise=rise, fall=fall, **kw)
        ),
    )


class Recorder:
    """on_change callback that lets a test wait for a given transition."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, int, Transition]] = []
        self._event = asyncio.Event()

    def __call__(self, pool: str, index: int, transition: Transition) -> None:
        self.changes.append((pool, index, transition))
        self._event.set()

    async def wait_for(self, pool: str, index: int, state: HealthState, within: float = 3.0):
        async with asyncio.timeout(within):
            while True:
                for p, i, t in self.changes:
                    if (p, i, t.new) == (pool, index, state):
                        self.changes.clear()
                        return t
                self._event.clear()
                await self._event.wait()


async def test_checker_first_round_then_down_and_up():
    rec = Recorder()
    async with serve(idle) as port:
        pools = {"web": pool_for(port, refused_port())}
        healths = {"web": PoolHealth(pools["web"], 0.0)}
        checker = ActiveChecker(pools, healths, rec, rng=random.Random(1))
        await asyncio.wait_for(checker.first_round(), 2)
        assert [t.state for t in healths["web"].targets] == [UP, DOWN]
        assert sorted((i, t.reason) for _, i, t in rec.changes) == [
            (0, "first check passed: connected"),
            (1, "first check failed: connect refused"),
        ]
        rec.changes.clear()
        checker.start()
    try:
        # The server is gone: after `fall` refused connects the backend goes DOWN.
        t = await rec.wait_for("web", 0, DOWN)
        assert t.reason == "2 consecutive failed checks: connect refused"
        assert healths["web"].view(0.0)[0].available is False
        # Restarted on the same port: after `rise` passed checks it is UP again.
        async with serve(idle, port):
            t = await rec.wait_for("web", 0, UP)
            assert t.reason == "2 consecutive passed checks: connected"
    finally:
        await asyncio.wait_for(checker.stop(), 2)
    assert checker.running == frozenset()


async def test_checker_http_503_takes_backend_down():
    rec = Recorder()
    status = {"code": b"200 OK"}

    async def handler(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 " + status["code"] + b"\r\nContent-Length: 0\r\n\r\n")
        writer.close()

    async with serve(handler) as port:
        pools = {"api": pool_for(port, type="http", path="/health")}
        healths = {"api": PoolHealth(pools["api"], 0.0)}
        async with ActiveChecker(pools, healths, rec, rng=random.Random(2)):
            await rec.wait_for("api", 0, UP)
            status["code"] = b"503 Service Unavailable"
            t = await rec.wait_for("api", 0, DOWN)
    assert t.reason == "2 consecutive failed checks: status 503 not in 200-399"


class FakeProbe:
    """A scripted prober: answers from `results` per address port, counting calls."""

    def __init__(self, ok: dict[int, bool] | None = None) -> None:
        self.ok = ok or {}
        self.calls: dict[int, int] = {}
        self.called = asyncio.Event()

    async def __call__(self, address: HostPort, check: ActiveCheck) -> ProbeResult:
        self.calls[address.port] = self.calls.get(address.port, 0) + 1
        self.called.set()
        ok = self.ok.get(address.port, True)
        return ProbeResult(ok, "fake ok" if ok else "fake fail", 0.0)

    async def wait_calls(self, port: int, n: int, within: float = 2.0) -> None:
        async with asyncio.timeout(within):
            while self.calls.get(port, 0) < n:
                self.called.clear()
                await self.called.wait()


async def test_checker_update_keeps_stops_and_starts_tasks():
    probe = FakeProbe()
    pools = {"a": pool_for(1001, 1002), "b": pool_for(2001)}
    healths = {name: PoolHealth(p, 0.0) for name, p in pools.items()}
    checker = ActiveChecker(pools, healths, probe=probe, rng=random.Random(3))
    checker.start()
    try:
        await probe.wait_calls(1001, 2)
        await probe.wait_calls(2001, 2)
        before = checker.running
        kept = next(t for k, t in checker._tasks.items() if k[1] == f"{HOST}:1001")

        new_pools = {"a": pool_for(1001, 1003)}  # 1002 and pool b leave, 1003 joins
        new_healths = {"a": healths["a"].carry_over(new_pools["a"], 1.0)}
        checker.update(new_pools, new_healths)
        assert checker.running == {("a", f"{HOST}:1001", 0), ("a", f"{HOST}:1003", 0)}
        assert before - checker.running == {("a", f"{HOST}:1002", 0), ("b", f"{HOST}:2001", 0)}
        assert checker._tasks[("a", f"{HOST}:1001", 0)] is kept

        # The new backend is UNKNOWN, so it is probed at once.
        await probe.wait_calls(1003, 1, within=0.5)
        assert new_healths["a"].targets[1].state is UP
        # The kept task now records into the new PoolHealth.
        calls = probe.calls[1001]
        await probe.wait_calls(1001, calls + 2)
        stopped = probe.calls[2001]
        await asyncio.sleep(0.12)
        assert probe.calls[2001] == stopped
    finally:
        await asyncio.wait_for(checker.stop(), 2)


async def test_checker_update_active_off_stops_pool():
    probe = FakeProbe()
    pools = {"a": pool_for(1001)}
    healths = {"a": PoolHealth(pools["a"], 0.0)}
    async with ActiveChecker(pools, healths, probe=probe) as checker:
        await probe.wait_calls(1001, 1)
        off = Pool(zone="z1", backends=[{"address": f"{HOST}:1001"}], health=Health(active=None))
        checker.update({"a": off}, {"a": healths["a"].carry_over(off, 1.0)})
        assert checker.running == frozenset()


async def test_checker_spreads_known_backends():
    probe = FakeProbe()
    pools = {"a": pool_for(1001, 1002, 1003, interval="10s")}
    healths = {"a": PoolHealth(pools["a"], 0.0, initial=UP)}
    async with ActiveChecker(pools, healths, probe=probe, rng=random.Random(4)):
        await asyncio.sleep(0.05)
        # Known backends wait a random share of a 10s interval before their first probe.
        assert probe.calls == {}


async def test_checker_survives_a_failing_probe(monkeypatch):
    monkeypatch.setenv("ZONEGATE_BUG_RAISE", "0")
    calls = 0

    async def flaky(address: HostPort, check: ActiveCheck) -> ProbeResult:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError("prober bug")
        return ProbeResult(True, "ok", 0.0)

    rec = Recorder()
    pools = {"a": pool_for(1001)}
    healths = {"a": PoolHealth(pools["a"], 0.0)}
    async with ActiveChecker(pools, healths, rec, probe=flaky):
        await rec.wait_for("a", 0, UP)
    assert calls >= 3


async def test_checker_bug_surfaces_in_stop_under_pytest():
    async def broken(address: HostPort, check: ActiveCheck) -> ProbeResult:
        raise RuntimeError("prober bug")

    pools = {"a": pool_for(1001)}
    checker = ActiveChecker(pools, {"a": PoolHealth(pools["a"], 0.0)}, probe=broken)
    checker.start()
    await asyncio.sleep(0.01)
    with pytest.raises(AssertionError, match="health check of a/"):
        await checker.stop()


async def test_checker_stop_cancels_hung_probes():
    started = asyncio.Event()

    async def hang(address: HostPort, check: ActiveCheck) -> ProbeResult:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    pools = {"a": pool_for(1001)}
    checker = ActiveChecker(pools, {"a": PoolHealth(pools["a"], 0.0)}, probe=hang)
    checker.start()
    await asyncio.wait_for(started.wait(), 1)
    await asyncio.wait_for(checker.stop(), 1)
    assert checker.running == frozenset()


async def test_first_round_is_cancellable():
    async def hang(address: HostPort, check: ActiveCheck) -> ProbeResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    pools = {"a": pool_for(1001, 1002)}
    checker = ActiveChecker(pools, {"a": PoolHealth(pools["a"], 0.0)}, probe=hang)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(checker.first_round(), 0.05)


def test_checker_rejects_mismatched_health():
    pools = {"a": pool_for(1001, 1002)}
    other = PoolHealth(pool_for(1001), 0.0)
    with pytest.raises(ValueError, match="does not match"):
        ActiveChecker(pools, {"a": other})
    with pytest.raises(ValueError, match="no PoolHealth"):
        ActiveChecker(pools, {})
