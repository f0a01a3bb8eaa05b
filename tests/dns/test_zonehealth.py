"""Zone health: the pure machine (tables, properties) and the prober on real sockets."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.integration.lbharness import Topo, engines, start_lb
from tests.peers.processes import refused_port
from zonegate.dns.model import ZoneState
from zonegate.dns.zonehealth import (
    NO_HEALTH_CHECK,
    Phase,
    Verdict,
    ZoneHealthMachine,
    ZoneProbe,
    ZoneProber,
    health_source,
    judge,
    metrics_text,
    probe_lb_status,
    probe_zone,
    summarize_status,
)
from zonegate.topology.schema import Topology, Zone, ZoneHealthCheck
from zonegate.topology.types import HostPort

# --- fakes -------------------------------------------------------------------------


def lb_status(zone: str, pools: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A /status document like lb.hub.HealthHub.status (the fields the prober reads)."""
    doc: dict[str, Any] = {"zone": zone, "version": 1, "pools": {}, "connections": 0, "workers": 1}
    for name, p in pools.items():
        healthy, total = p.get("healthy", 3), p.get("total", 3)
        doc["pools"][name] = {
            "zone": p.get("zone", zone),
            "healthy": healthy,
            "total": total,
            "healthy_share": healthy / total if total else 0.0,
            "capacity": p.get("capacity"),
            "inflight": p.get("inflight", 0),
            "panic": False,
            "backends": [],
        }
    return doc


class FakeLb:
    """A fake `zonegate lb` admin endpoint on 127.0.0.1 serving a mutable /status.

    Runs in a thread, so it answers while the test blocks (e.g. starting a process).
    `doc` is the JSON served; `status` the HTTP status; `delay` seconds before answering.
    """

    def __init__(self, zone: str = "z1", **pools: dict[str, Any]) -> None:
        self.zone = zone
        self.doc: Any = lb_status(zone, pools or {"web": {}})
        self.status = 200
        self.delay = 0.0
        self.requests = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.requests += 1
                if fake.delay:
                    time.sleep(fake.delay)
                body = json.dumps(fake.doc).encode()
                try:
                    self.send_response(fake.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the prober gave up (timeout) or its process stopped

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_pool(self, pool: str = "web", **fields: Any) -> None:
        doc = self.doc["pools"][pool]
        doc.update(fields)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeLb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check(**kw: Any) -> ZoneHealthCheck:
    return ZoneHealthCheck.model_validate(kw)


def zone(**kw: Any) -> Zone:
    return Zone.model_validate(kw)


def topology(zones: dict[str, dict[str, Any]]) -> Topology:
    return Topology.model_validate({"zones": zones})


OK = ZoneProbe(True, healthy=3, total=3, sessions=5, capacity=100, rtt=0.001, reason="3/3")
FAIL = ZoneProbe(False, rtt=0.5, reason="connect refused")
DEAD = ZoneProbe(True, healthy=0, total=3, reason="0/3")
LOW = ZoneProbe(True, healthy=1, total=3, reason="1/3")
PROBES = {"P": OK, "F": FAIL, "D": DEAD, "L": LOW}

# --- judge -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("probe", "up_share", "verdict", "why"),
    [
        (OK, 0.5, Verdict.PASS, "3/3 backends healthy"),
        (FAIL, 0.5, Verdict.FAIL, "connect refused"),
        (ZoneProbe(False), 0.5, Verdict.FAIL, "probe failed"),
        (DEAD, 0.5, Verdict.DEAD, "0/3 backends healthy"),
        (DEAD, 0.0, Verdict.DEAD, "0/3 backends healthy"),  # up_share 0 never keeps 0 healthy
        (ZoneProbe(True, 0, 0), 0.5, Verdict.DEAD, "no backends in the zone"),
        (LOW, 0.5, Verdict.FAIL, "1/3 backends healthy, below 50%"),
        (LOW, 0.3, Verdict.PASS, "1/3 backends healthy"),
        (ZoneProbe(True, 2, 4), 0.5, Verdict.PASS, "2/4 backends healthy"),  # share == up_share
        (ZoneProbe(True, 3, 10), 0.3, Verdict.PASS, "3/10 backends healthy"),
        (ZoneProbe(True, 9, 10), 1.0, Verdict.FAIL, "9/10 backends healthy, below 100%"),
    ],
)
def test_judge(probe, up_share, verdict, why):
    assert judge(probe, up_share) == (verdict, why)


# --- the machine -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seq", "phases"),
    [
        ("P", "U"),
        ("F", "D"),
        ("D", "D"),
        ("L", "D"),
        ("PFFF", "UUUD"),  # fall 3
        ("PFFPFF", "UUUUUU"),  # a pass resets the run
        ("PD", "UD"),  # the LB says no backend: down at once
        ("PFD", "UUD"),
        ("PLLL", "UUUD"),  # below up_share counts as failures
        ("PLFL", "UUUD"),
        ("FPP", "DDU"),  # rise 2
        ("FPFPP", "DDDDU"),
        ("DPP", "DDU"),
        ("PFFFPP", "UUUDDU"),
    ],
)
def test_machine_table(seq, phases):
    m = ZoneHealthMachine(check(rise=2, fall=3))
    got = ""
    for i, c in enumerate(seq):
        st = m.record(PROBES[c], float(i))
        got += "U" if st.up else "D"
        assert st.known
    assert got == phases


def test_unknown_until_first_result():
    m = ZoneHealthMachine(check())
    st = m.state(0.0)
    assert st == ZoneState(up=False, known=False, reason="not probed yet")
    assert m.phase is Phase.UNKNOWN
    st = m.record(OK, 1.0)
    assert st.known
    assert st.up
    assert not st.changing  # the first decision is not a flip
    assert st.reason == "up: 3/3 backends healthy"


def test_first_failure_decides_down():
    m = ZoneHealthMachine(check(fall=5))
    st = m.record(FAIL, 0.0)
    assert st.known
    assert not st.up
    assert not st.changing
    assert st.reason == "down: connect refused"


def test_changing_window_and_runs():
    m = ZoneHealthMachine(check(interval="1s", fall=2, rise=2))
    assert not m.record(OK, 0.0).changing
    st = m.record(FAIL, 1.0)  # run under way: 1 of 2
    assert st.up
    assert st.changing
    assert st.reason == "up: connect refused (1 of 2 failed probes to flip)"
    assert not m.record(OK, 2.0).changing  # run reset, no flip
    m.record(FAIL, 3.0)
    st = m.record(FAIL, 4.0)  # flip at t=4
    assert not st.up
    assert st.changing
    assert st.reason == "down: connect refused (2 failed probes in a row)"
    assert m.deadline(4.0) == 6.0
    assert m.state(5.999).changing
    assert not m.state(6.0).changing
    assert m.deadline(6.0) is None
    # a pass on a DOWN zone with rise 2 is a run under way: changing again
    st = m.record(OK, 7.0)
    assert not st.up
    assert st.changing
    st = m.record(OK, 8.0)
    assert st.up
    assert st.changing
    assert not m.state(10.0).changing


def test_numbers_survive_a_failed_probe():
    m = ZoneHealthMachine(check(fall=2))
    m.record(OK, 0.0)
    st = m.record(FAIL, 1.0)
    assert (st.healthy, st.total, st.sessions, st.capacity, st.rtt) == (3, 3, 5, 100, 0.001)
    assert "connect refused" in st.reason


def test_reconfigure_keeps_phase():
    m = ZoneHealthMachine(check(fall=3))
    m.record(OK, 0.0)
    m.record(FAIL, 1.0)
    m.record(FAIL, 2.0)
    m.reconfigure(check(fall=2))
    assert m.phase is Phase.UP
    assert m.record(FAIL, 3.0).up is False  # the run (3) is past the new fall (2)


def reference(seq: str, rise: int, fall: int, up_share: float) -> list[bool]:
    """The rules written again, the simple way."""
    up: bool | None = None
    run = 0
    out = []
    for c in seq:
        verdict, _ = judge(PROBES[c], up_share)
        if up is None:
            up = verdict is Verdict.PASS
        elif up:
            if verdict is Verdict.DEAD:
                up, run = False, 0
            elif verdict is Verdict.FAIL:
                run += 1
                if run >= fall:
                    up, run = False, 0
            else:
                run = 0
        elif verdict is Verdict.PASS:
            run += 1
            if run >= rise:
                up, run = True, 0
        else:
            run = 0
        out.append(up)
    return out


@given(
    st.text(alphabet="PFDL", min_size=1, max_size=60),
    st.integers(min_value=1, max_value=5),
    st.integers(min_value=1, max_value=5),
    st.sampled_from([0.0, 0.3, 0.5, 1.0]),
)
def test_machine_matches_reference_and_invariants(seq, rise, fall, up_share):
    m = ZoneHealthMachine(check(rise=rise, fall=fall, up_share=up_share, interval="1s"))
    expected = reference(seq, rise, fall, up_share)
    prev: ZoneState | None = None
    for i, c in enumerate(seq):
        now = float(i)
        st = m.record(PROBES[c], now)
        assert st.up == expected[i]
        assert st.known
        verdict, _ = judge(PROBES[c], up_share)
        if prev is not None and prev.up != st.up:
            # a flip follows the verdict's direction and marks the zone changing
            assert st.up == (verdict is Verdict.PASS)
            assert st.changing
        if prev is not None and prev.up == st.up and verdict is Verdict.PASS:
            assert st.up or rise > 1
        # a DEAD verdict always leaves the zone down
        if verdict is Verdict.DEAD:
            assert not st.up
        # changing ends two intervals after the last flip when no run is under way
        if m.run == 0:
            assert not m.state(now + 2.0).changing
        prev = st


@given(st.text(alphabet="PFDL", max_size=40), st.integers(1, 4))
def test_fall_consecutive_failures_always_take_a_zone_down(prefix, fall):
    m = ZoneHealthMachine(check(fall=fall, up_share=0.5))
    for i, c in enumerate(prefix):
        m.record(PROBES[c], float(i))
    for j in range(fall):
        st = m.record(FAIL, float(len(prefix) + j))
    assert not st.up


# --- /status documents -------------------------------------------------------------


def test_summarize_counts_only_the_zone_pools():
    doc = lb_status(
        "z1",
        {
            "web": {"healthy": 2, "total": 3, "inflight": 4, "capacity": 100},
            "api": {"healthy": 1, "total": 1, "inflight": 1, "capacity": 50},
            "backup-of-z2": {"zone": "z2", "healthy": 5, "total": 5, "inflight": 9},
        },
    )
    p = summarize_status(doc, "z1", rtt=0.002)
    assert p == ZoneProbe(
        True, healthy=3, total=4, sessions=5, capacity=150, rtt=0.002, reason="3/4 backends healthy"
    )


def test_summarize_capacity_rules():
    doc = lb_status("z1", {"a": {"capacity": 10}, "b": {"capacity": None}})
    assert summarize_status(doc, "z1").capacity is None  # not every pool has one
    assert summarize_status(doc, "z1", capacity=7).capacity == 7  # the zone's wins
    doc = lb_status("z1", {"a": {"capacity": 10}, "b": {"capacity": 5}})
    assert summarize_status(doc, "z1").capacity == 15
    assert summarize_status(lb_status("z1", {}), "z1").capacity is None


def test_summarize_no_pool_of_the_zone_is_dead():
    doc = lb_status("z1", {"other": {"zone": "z2"}})
    p = summarize_status(doc, "z1")
    assert p.ok
    assert p.total == 0
    assert judge(p, 0.5)[0] is Verdict.DEAD


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ([], "bad /status: no 'pools' object"),
        ({"zone": "z1"}, "bad /status: no 'pools' object"),
        ({"zone": "z2", "pools": {}}, "lb_admin serves zone 'z2', not 'z1'"),
        ({"pools": {"w": 3}}, "bad /status: pool 'w' is not an object"),
        (
            {"pools": {"w": {"zone": "z1", "healthy": "3", "total": 3}}},
            "bad /status: pools.w.healthy is not a non-negative integer: '3'",
        ),
        (
            {"pools": {"w": {"zone": "z1", "healthy": 1, "total": -1}}},
            "bad /status: pools.w.total is not a non-negative integer: -1",
        ),
        (
            {"pools": {"w": {"zone": "z1", "healthy": True, "total": 1}}},
            "bad /status: pools.w.healthy is not a non-negative integer: True",
        ),
    ],
)
def test_summarize_bad_documents(doc, reason):
    p = summarize_status(doc, "z1")
    assert not p.ok
    assert p.reason == reason


def test_health_source():
    assert health_source(zone(lb_admin="127.0.0.1:9901")) == (
        "lb_status",
        HostPort("127.0.0.1", 9901),
    )
    assert health_source(zone()) is None
    assert health_source(zone(vips=["10.0.0.1"], health={"type": "tcp"})) == (
        "tcp",
        HostPort("10.0.0.1", 80),
    )
    assert health_source(
        zone(vips=["10.0.0.1"], health={"type": "http", "address": "10.0.0.2:8080"})
    ) == ("http", HostPort("10.0.0.2", 8080))
    assert health_source(zone(health={"type": "http"})) is None


# --- probes on real sockets ----------------------------------------------------------


async def test_probe_lb_status_reads_a_real_http_status():
    with FakeLb("z1", web={"healthy": 2, "total": 3, "inflight": 7, "capacity": 20}) as lb:
        p = await probe_lb_status(HostPort("127.0.0.1", lb.port), 1.0, zone="z1")
    assert p.ok
    assert (p.healthy, p.total, p.sessions, p.capacity) == (2, 3, 7, 20)
    assert p.rtt is not None
    assert 0 < p.rtt < 1.0


async def test_probe_lb_status_failures():
    port = refused_port()
    p = await probe_lb_status(HostPort("127.0.0.1", port), 0.5, zone="z1")
    assert p == ZoneProbe(False, rtt=p.rtt, reason="connect refused")
    with FakeLb("z1") as lb:
        lb.status = 503
        p = await probe_lb_status(HostPort("127.0.0.1", lb.port), 0.5, zone="z1")
        assert p.reason == "/status answered 503"
        lb.status = 200
        lb.doc = "not a dict"
        p = await probe_lb_status(HostPort("127.0.0.1", lb.port), 0.5, zone="z1")
        assert p.reason == "bad /status: no 'pools' object"
        lb.delay = 0.5
        t0 = time.monotonic()
        p = await probe_lb_status(HostPort("127.0.0.1", lb.port), 0.1, zone="z1")
        assert p.reason == "timeout after 100ms"
        assert time.monotonic() - t0 < 0.4


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


async def _raw_server(reply: bytes, close: bool = True) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        if close:
            writer.close()
        else:
            await asyncio.sleep(5)

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize(
    ("reply", "ok", "reason"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunked(b'{"pools":{"w":{', b'"zone":"z1","healthy":1,"tota', b'l":2}}}'),
            True,
            "1/2 backends healthy",
        ),
        (
            b'HTTP/1.0 200 OK\r\n\r\n{"pools": {"w": {"zone": "z1", "healthy": 2, "total": 2}}}',
            True,
            "2/2 backends healthy",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nnope!", False, "bad /status: not JSON"),
        (b"garbage\r\n\r\n", False, "bad response"),
        (b"", False, "connection closed before a response"),
    ],
)
async def test_probe_lb_status_framings(reply, ok, reason):
    server = await _raw_server(reply)
    port = server.sockets[0].getsockname()[1]
    try:
        p = await probe_lb_status(HostPort("127.0.0.1", port), 1.0, zone="z1")
    finally:
        server.close()
    assert p.ok is ok
    assert p.reason.startswith(reason), p.reason


async def test_probe_zone_tcp_and_http():
    server = await _raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    port = server.sockets[0].getsockname()[1]
    try:
        tcp = zone(health={"type": "tcp", "address": f"127.0.0.1:{port}"}, capacity=9)
        p = await probe_zone("t", tcp)
        assert (p.ok, p.healthy, p.total, p.capacity) == (True, 1, 1, 9)
        http = zone(health={"type": "http", "address": f"127.0.0.1:{port}", "path": "/up"})
        p = await probe_zone("h", http)
        assert p.ok, p.reason
        assert p.reason == f"http 127.0.0.1:{port}: status 200"
    finally:
        server.close()
    closed = zone(health={"type": "tcp", "address": f"127.0.0.1:{refused_port()}"})
    p = await probe_zone("t", closed)
    assert (p.ok, p.healthy, p.total) == (False, 0, 1)
    assert "connect refused" in p.reason
    with pytest.raises(ValueError, match="no health source"):
        await probe_zone("x", zone())


# --- the prober ----------------------------------------------------------------------


class ScriptedProbe:
    """A fake prober: each zone answers the probes queued for it, then its last one."""

    def __init__(self, **results: list[ZoneProbe]) -> None:
        self.results = {k: list(v) for k, v in results.items()}
        self.calls: list[str] = []
        self.hang: set[str] = set()

    async def __call__(self, name: str, z: Zone) -> ZoneProbe:
        self.calls.append(name)
        if name in self.hang:
            await asyncio.sleep(10)
        queue = self.results[name]
        return queue.pop(0) if len(queue) > 1 else queue[0]


async def test_prober_first_round_knows_every_zone():
    topo = topology(
        {
            "a": {"lb_admin": "127.0.0.1:1"},
            "b": {"lb_admin": "127.0.0.1:2"},
            "c": {},  # no health source: up, "no health check"
        }
    )
    changes: list[tuple[str, bool, bool]] = []
    probe = ScriptedProbe(a=[OK], b=[FAIL])
    prober = ZoneProber(
        topo, lambda z, old, new: changes.append((z, old.known, new.up)), probe=probe
    )
    before = prober.states()
    assert not before["a"].known
    assert not before["a"].up
    assert before["c"] == ZoneState(up=True, known=True, reason=NO_HEALTH_CHECK)
    assert not prober.known
    assert prober.unchecked == ["c"]
    await prober.first_round()
    assert prober.known
    states = prober.states()
    assert states["a"].up
    assert not states["b"].up
    assert states["c"].up
    assert sorted(changes) == [("a", False, True), ("b", False, False)]
    assert sorted(probe.calls) == ["a", "b"]


async def test_prober_bounds_a_hanging_probe_by_its_timeout():
    topo = topology({"a": {"lb_admin": "127.0.0.1:1", "health": {"timeout": "100ms"}}})
    probe = ScriptedProbe(a=[OK])
    probe.hang.add("a")
    prober = ZoneProber(topo, probe=probe)
    t0 = time.monotonic()
    await prober.first_round()
    assert time.monotonic() - t0 < 0.5
    st = prober.states()["a"]
    assert st.known
    assert not st.up
    assert st.reason == "down: timeout after 100ms"


async def test_prober_loop_update_and_counters():
    topo = topology({"a": {"lb_admin": "127.0.0.1:1", "health": {"interval": "20ms", "fall": 1}}})
    probe = ScriptedProbe(a=[OK, OK, FAIL], b=[OK])
    async with ZoneProber(topo, probe=probe) as prober:
        await asyncio.sleep(0.15)
        assert not prober.states()["a"].up
        probes, failures, flips = prober.counters()["a"]
        assert probes >= 3
        assert failures >= 1
        assert flips == 1
        # reload: a new zone is probed at once, a removed one stops
        new = topology({"b": {"lb_admin": "127.0.0.1:2", "health": {"interval": "20ms"}}})
        fresh = prober.update(new)
        assert fresh == ["b"]
        assert not prober.states()["b"].known
        await prober.refresh(fresh)
        assert prober.states() == {"b": prober.states()["b"]}
        assert prober.states()["b"].up
        calls = len(probe.calls)
        await asyncio.sleep(0.1)
        assert probe.calls[calls:]
        assert set(probe.calls[calls:]) == {"b"}
    assert all(e.task is None for e in prober._entries.values())


async def test_prober_update_keeps_health_of_a_changed_zone():
    topo = topology({"a": {"lb_admin": "127.0.0.1:1"}})
    probe = ScriptedProbe(a=[OK])
    prober = ZoneProber(topo, probe=probe)
    await prober.first_round()
    changed = topology({"a": {"lb_admin": "127.0.0.1:1", "weight": 5}})
    assert prober.update(changed) == ["a"]
    st = prober.states()["a"]
    assert st.known
    assert st.up
    assert prober.update(changed) == []


async def test_zone_whose_backends_all_die_goes_down_within_one_interval():
    """Against a real HTTP /status: measure how long the GSLB keeps a dead zone."""
    interval = 1.0
    with FakeLb("z1", web={"healthy": 3, "total": 3}, api={"healthy": 2, "total": 2}) as lb:
        topo = topology({"z1": {"lb_admin": lb.address, "health": {"interval": "1s"}}})
        async with ZoneProber(topo) as prober:
            assert prober.states()["z1"].up
            await asyncio.sleep(0.3)  # somewhere inside an interval
            lb.set_pool("web", healthy=0)
            lb.set_pool("api", healthy=0)
            t0 = time.monotonic()
            while prober.states()["z1"].up:
                await asyncio.sleep(0.005)
                assert time.monotonic() - t0 < 3 * interval
            took = time.monotonic() - t0
            st = prober.states()["z1"]
            assert st.changing
            assert st.reason == "down: 0/5 backends healthy"
            # and back: rise 1 by default
            lb.set_pool("web", healthy=3)
            t1 = time.monotonic()
            while not prober.states()["z1"].up:
                await asyncio.sleep(0.005)
                assert time.monotonic() - t1 < 3 * interval
    print(f"\nzone down detected {took * 1000:.0f} ms after /status said so (interval 1s)")
    assert took <= interval + 0.1


async def test_below_up_share_needs_fall_probes():
    with FakeLb("z1", web={"healthy": 4, "total": 4}) as lb:
        topo = topology(
            {
                "z1": {
                    "lb_admin": lb.address,
                    "health": {"interval": "50ms", "fall": 3, "up_share": 0.5},
                }
            }
        )
        async with ZoneProber(topo) as prober:
            lb.set_pool("web", healthy=2)  # exactly the share: still up
            await asyncio.sleep(0.2)
            assert prober.states()["z1"].up
            lb.set_pool("web", healthy=1)
            t0 = time.monotonic()
            while prober.states()["z1"].up:
                await asyncio.sleep(0.005)
                assert time.monotonic() - t0 < 2.0
            assert time.monotonic() - t0 >= 0.1  # three probes 50 ms apart, not one
            assert "below 50%" in prober.states()["z1"].reason


async def test_metrics_text():
    topo = topology({"a": {"lb_admin": "127.0.0.1:1"}, "b": {}})
    prober = ZoneProber(topo, probe=ScriptedProbe(a=[OK]))
    await prober.first_round()
    text = metrics_text(prober).decode()
    assert 'zonegate_zone_up{zone="a"} 1.0' in text
    assert 'zonegate_zone_up{zone="b"} 1.0' in text
    assert 'zonegate_zone_healthy_backends{zone="a"} 3.0' in text
    assert 'zonegate_zone_sessions{zone="a"} 5.0' in text
    assert 'zonegate_zone_capacity{zone="a"} 100.0' in text
    assert 'zonegate_zone_probe_rtt_seconds{zone="a"} 0.001' in text
    assert 'zonegate_zone_probes_total{zone="a"} 1.0' in text
    assert 'zonegate_zone_probe_failures_total{zone="a"} 0.0' in text
    assert 'zonegate_zone_known{zone="a"} 1.0' in text


# --- against a real `zonegate lb` ----------------------------------------------------


@pytest.mark.parametrize("engine", engines())
async def test_real_lb_zone_goes_down_when_its_backends_die(backend_factory, tmp_path, engine):
    backends = backend_factory.many(2, zone="z1")
    topo = Topo().pool(
        "web",
        backends,
        zone="z1",
        health={
            "active": {
                "type": "http",
                "path": "/healthz",
                "interval": "100ms",
                "timeout": "200ms",
                "rise": 1,
                "fall": 1,
            }
        },
    )
    topo = topo.listener("web", zone="z1")
    with start_lb(tmp_path, topo, zone="z1", engine=engine) as lb:
        gslb = topology(
            {"z1": {"lb_admin": f"127.0.0.1:{lb.admin_port}", "health": {"interval": "1s"}}}
        )
        async with ZoneProber(gslb) as prober:
            st = prober.states()["z1"]
            assert st.up, st
            assert (st.healthy, st.total) == (2, 2)
            t0 = time.monotonic()
            for b in backends:
                b.kill()
            while prober.states()["z1"].up:
                await asyncio.sleep(0.01)
                assert time.monotonic() - t0 < 5.0
            took = time.monotonic() - t0
            assert prober.states()["z1"].reason == "down: 0/2 backends healthy"
    print(f"\nreal LB ({engine}): zone down {took * 1000:.0f} ms after its backends died")
    # the LB needs one failed check (100 ms) and we need one probe (1 s) at most
    assert took < 1.6
