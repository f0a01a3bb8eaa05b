"""Desired HAProxy server states from the hub's pool states; verdicts and stats back."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.peers.processes import (
    ProcessError,
    free_port,
    refused_port,
    retry_addr_in_use,
    start_process,
)
from zonegate.clock import FakeClock
from zonegate.lb.admin import AdminApp
from zonegate.lb.haproxy.desired import (
    desired_servers,
    engine_stats,
    split_weights,
    unchecked_pools,
    verdict_details,
    verdicts,
)
from zonegate.lb.haproxy.model import WEIGHT_MAX, ServerAdmin, ServerDesired, ServerKey
from zonegate.lb.haproxy.render import HaproxyPaths, render_config
from zonegate.lb.hub import HealthHub
from zonegate.lb.pools import PoolState
from zonegate.topology.load import load_topology_text
from zonegate.topology.snapshot import Snapshot

TOPO = """
zones:
  a: {}
  b: {}
pools:
  pa:
    zone: a
    backup: pb
    backends:
      - {address: "127.0.0.1:1001", name: a1}
      - {address: "127.0.0.1:1002", name: a2}
      - {address: "127.0.0.1:1003", name: a3}
    health:
      active: {type: tcp}
  pb:
    zone: b
    backends:
      - {address: "127.0.0.1:2001", name: b1, weight: 2}
      - {address: "127.0.0.1:2002", name: b2, weight: 1}
    health:
      active: {type: tcp}
  solo:
    zone: a
    backends:
      - {address: "127.0.0.1:3001", name: s1}
      - {address: "127.0.0.1:3002", name: s2, state: drain}
      - {address: "127.0.0.1:3003", name: s3}
    health:
      active: null
listeners:
  la:
    zone: a
    bind: 127.0.0.1:8000
    routes: [{pool: pa, path_prefix: /a}, {pool: solo}]
"""

TOPOLOGY = load_topology_text(TOPO)


def hub_with(down: dict[str, set[str]]) -> HealthHub:
    """A hub of zone a whose active checks said `down` backends are down, others up."""
    clock = FakeClock()
    hub = HealthHub(Snapshot(1, TOPOLOGY, "t"), "a", clock=clock.now)
    for name, health in hub.healths.items():
        pool = TOPOLOGY.pools[name]
        if pool.health.active is None:
            continue
        for i, b in enumerate(pool.backends):
            for _ in range(3):
                health.record_active(i, b.id not in down.get(name, set()), clock.now())
    hub.publish()
    return hub


def spill_share(desired, pool="pa", up=None):
    """Share of the weights of a pool's available servers that goes to spill servers."""
    local = spill = 0
    for key, d in desired.items():
        if key.backend != f"be_{pool}" or (up is not None and key.server not in up):
            continue
        if key.server.startswith("spill:"):
            spill += d.weight
        else:
            local += d.weight
    return spill / (local + spill)


def rendered_servers(topology):
    """(backend, server) -> weight, as render.py writes them into haproxy.cfg."""
    d = PurePath("/tmp/zg-h3")
    paths = HaproxyPaths(d, d / "s.sock", d / "m.sock", d / "state", d / "version.map")
    out, backend = {}, None
    for line in render_config(Snapshot(1, topology, "t"), "a", paths).splitlines():
        words = line.split()
        if words[:1] == ["backend"]:
            backend = words[1]
        elif words[:1] == ["server"] and backend is not None:
            out[(backend, words[1])] = int(words[words.index("weight") + 1])
    return out


def test_all_up_gives_the_rendered_weights_so_nothing_needs_fixing():
    hub = hub_with({})
    d = desired_servers(TOPOLOGY, "a", hub.states, {})
    assert d[ServerKey("be_pa", "a1")].admin is ServerAdmin.READY
    assert d[ServerKey("be_pa", "spill:pb:b1")].weight == 0
    assert (d[ServerKey("be_pb", "b1")].weight, d[ServerKey("be_pb", "b2")].weight) == (256, 128)
    rendered = rendered_servers(TOPOLOGY)
    assert set(rendered) == {(k.backend, k.server) for k in d}
    # The drained s2 aside (the file gives it weight 0; it keeps its weight at runtime).
    assert {k: w for k, w in rendered.items() if k != ("be_solo", "s2")} == {
        (k.backend, k.server): x.weight for k, x in d.items() if k.server != "s2"
    }
    # Out of panic every panic twin is in maintenance.
    assert all(x.admin is ServerAdmin.MAINT for k, x in d.items() if k.server.startswith("panic:"))
    # Every server of every pool the zone serves, a panic twin per backend of a checked
    # pool, and one spill server per backup backend.
    assert {(k.backend, k.server) for k in d} == {
        ("be_pa", "a1"),
        ("be_pa", "a2"),
        ("be_pa", "a3"),
        ("be_pa", "panic:a1"),
        ("be_pa", "panic:a2"),
        ("be_pa", "panic:a3"),
        ("be_pa", "spill:pb:b1"),
        ("be_pa", "spill:pb:b2"),
        ("be_pb", "b1"),
        ("be_pb", "b2"),
        ("be_pb", "panic:b1"),
        ("be_pb", "panic:b2"),
        ("be_solo", "s1"),
        ("be_solo", "s2"),
        ("be_solo", "s3"),
    }


def test_two_of_three_down_spills_the_hub_share_by_weights():
    hub = hub_with({"pa": {"a2", "a3"}})
    st_pa = hub.states["pa"]
    assert st_pa.local_share == pytest.approx(1 / 3 * 1.4)
    d = desired_servers(TOPOLOGY, "a", hub.states, {})
    up = {"a1", "spill:pb:b1", "spill:pb:b2"}
    assert abs(spill_share(d, up=up) - (1 - st_pa.local_share)) <= 1 / WEIGHT_MAX
    # Inside the spill, the backup's own weights (2:1) hold.
    b1, b2 = (
        d[ServerKey("be_pa", "spill:pb:b1")].weight,
        d[ServerKey("be_pa", "spill:pb:b2")].weight,
    )
    assert abs(b1 / (b1 + b2) - 2 / 3) < 0.01
    # Down servers keep a weight: HAProxy sends them nothing until its check passes.
    assert d[ServerKey("be_pa", "a2")].weight == d[ServerKey("be_pa", "a1")].weight
    assert all(x.weight <= WEIGHT_MAX for x in d.values())


def test_a_pool_without_checks_has_no_twins_and_panic_keeps_its_servers():
    hub = hub_with({"solo": {"s1", "s2", "s3"}})
    # solo has no active check: its backends stay up in the hub, so make the state by hand.
    states = dict(hub.states)
    states["solo"] = PoolState((1.0, 0.0, 1.0), 1.0, True, "PANIC")
    d = desired_servers(TOPOLOGY, "a", states, {})
    assert not any(k.server.startswith("panic:") for k in d if k.backend == "be_solo")
    assert d[ServerKey("be_solo", "s1")] == ServerDesired(ServerAdmin.READY, 256)
    assert d[ServerKey("be_solo", "s2")].admin is ServerAdmin.DRAIN


def test_panic_from_the_hub_when_no_backup_helps():
    hub = hub_with({"pa": {"a1", "a2", "a3"}, "pb": {"b1", "b2"}})
    assert hub.states["pa"].panic
    d = desired_servers(TOPOLOGY, "a", hub.states, {("pa", "a3"): "disabled"})
    # The twins of the enabled backends serve at full weight; the checked servers take
    # nothing new but keep their checks (and admin state), so the hub sees recovery.
    twins = [d[ServerKey("be_pa", f"panic:a{i}")] for i in (1, 2, 3)]
    assert [t.admin for t in twins] == [ServerAdmin.READY, ServerAdmin.READY, ServerAdmin.MAINT]
    assert all(t.weight == 256 for t in twins)
    assert [d[ServerKey("be_pa", f"a{i}")].weight for i in (1, 2, 3)] == [0, 0, 0]
    assert d[ServerKey("be_pa", "a3")].admin is ServerAdmin.MAINT
    assert d[ServerKey("be_pa", "spill:pb:b1")].weight == 0


@pytest.mark.parametrize(
    ("state", "expected"),
    [("enabled", ServerAdmin.READY), ("drain", ServerAdmin.DRAIN), ("disabled", ServerAdmin.MAINT)],
)
def test_admin_states_map_to_server_states(state, expected):
    d = desired_servers(TOPOLOGY, "a", {}, {("pb", "b2"): state})
    assert d[ServerKey("be_pb", "b2")].admin is expected
    # The spill server of that backend follows it.
    assert d[ServerKey("be_pa", "spill:pb:b2")].admin is expected


def test_topology_state_is_the_default_admin_state():
    d = desired_servers(TOPOLOGY, "a", {}, {})
    assert d[ServerKey("be_solo", "s2")].admin is ServerAdmin.DRAIN
    # An operator's enable overrides the file.
    d = desired_servers(TOPOLOGY, "a", {}, {("solo", "s2"): "enabled"})
    assert d[ServerKey("be_solo", "s2")].admin is ServerAdmin.READY


def test_unknown_admin_state_is_a_clear_error():
    with pytest.raises(ValueError, match="admin state 'paused' of pa/a1"):
        desired_servers(TOPOLOGY, "a", {}, {("pa", "a1"): "paused"})


def test_large_configured_weights_are_scaled_into_haproxy_range():
    local, spill = split_weights([10000.0, 100.0, 1.0], [], 1.0)
    assert spill == []
    assert local[0] == WEIGHT_MAX
    assert local[1] == round(100 * WEIGHT_MAX / 10000)
    assert local[2] == 1  # kept in rotation, not rounded to 0


weights = st.lists(st.integers(0, 10000).map(float), min_size=0, max_size=8)


@given(local=weights, spill=weights, share=st.floats(0.0, 1.0))
def test_spill_share_of_the_weights_matches_the_plan(local, spill, share):
    lw, sw = split_weights(local, spill, share)
    assert len(lw) == len(local)
    assert len(sw) == len(spill)
    assert all(0 <= w <= WEIGHT_MAX for w in [*lw, *sw])
    up_local = sum(w for w, a in zip(lw, local, strict=True) if a > 0)
    up_spill = sum(w for w, a in zip(sw, spill, strict=True) if a > 0)
    if sum(spill) == 0:
        assert up_spill == 0
        return
    effective = 1.0 if sum(local) == 0 else 1.0 - share
    if up_local + up_spill == 0:
        # Only possible when the rounded groups are empty: nothing to share.
        assert share * WEIGHT_MAX < 1 or (1 - share) * WEIGHT_MAX < 1
        return
    assert abs(up_spill / (up_local + up_spill) - effective) <= 1 / WEIGHT_MAX


@given(local=st.lists(st.integers(0, WEIGHT_MAX).map(float), min_size=1, max_size=8))
def test_without_spill_configured_weights_are_kept(local):
    lw, _ = split_weights(local, [], 1.0)
    assert lw == [int(w) for w in local]


def test_bad_share_is_refused():
    with pytest.raises(ValueError, match="local_share"):
        split_weights([1.0], [1.0], 1.5)


# verdicts


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text.lstrip("# "))))


STAT = """# pxname,svname,status,scur,stot,econ,eresp,wretr,wredis,srv_abrt,ereq,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx
fe_la,FRONTEND,OPEN,4,,,,,,,3,,,,,
be_pa,a1,UP,2,10,1,0,2,0,0,,0,7,0,1,1
be_pa,a2,DOWN 1/2,0,0,5,,,,,,,,,,
be_pa,a3,UP 1/3,0,0,,,,,,,,,,,
be_pa,spill:pb:b1,UP,1,6,0,0,0,0,0,,0,6,0,0,0
be_pa,spill:pb:b2,DOWN,0,0,,,,,,,,,,,
be_pa,BACKEND,UP,3,16,,,,,,,0,13,0,1,1
be_pb,b1,DRAIN,0,2,0,1,0,1,1,,0,2,0,0,0
be_pb,b2,MAINT,0,0,,,,,,,,,,,
be_solo,s1,no check,0,0,,,,,,,,,,,
be_solo,s2,NOLB,0,0,,,,,,,,,,,
"""


def test_verdicts_read_haproxy_status_words():
    v = verdicts(rows(STAT), unchecked=unchecked_pools(TOPOLOGY, "a"))
    assert v == {
        ("pa", "a1"): True,
        ("pa", "a2"): False,  # going up is still down
        ("pa", "a3"): True,  # going down is still up
        ("pb", "b1"): True,  # drain says nothing against health
        ("solo", "s1"): True,  # no active check configured: up
        ("solo", "s2"): True,
    }


def test_checks_off_in_a_checked_pool_give_no_verdict():
    # Checks switched off (`disable health` by hand) show "no check", which must not be
    # read as a recovery.
    v = verdicts(rows("# pxname,svname,status\nbe_pa,a1,no check\n"), unchecked=set())
    assert v == {}


def test_verdicts_say_why_in_haproxy_words():
    text = (
        "# pxname,svname,status,check_status,check_code,check_desc,last_chk\n"
        "be_pa,a1,DOWN,L7STS,503,Layer7 wrong status,Service Unavailable\n"
        "be_pa,a2,DOWN,L4CON,,Layer4 connection problem,Connection refused\n"
        "be_pa,a3,UP,,,,\n"
    )
    assert verdict_details(rows(text)) == {
        ("pa", "a1"): (False, "haproxy: Layer7 wrong status (503): Service Unavailable"),
        ("pa", "a2"): (False, "haproxy: Layer4 connection problem: Connection refused"),
        ("pa", "a3"): (True, "haproxy: UP"),
    }


@given(st.dictionaries(st.sampled_from(["pxname", "svname", "status", "scur"]), st.text()))
def test_any_row_gives_a_verdict_or_nothing(row):
    v = verdicts([row])
    assert all(isinstance(x, bool) for x in v.values())
    engine_stats(TOPOLOGY, "a", [row])


# stats in the built-in shape


def test_stats_count_spilled_requests_on_the_backup_backend():
    s = engine_stats(TOPOLOGY, "a", rows(STAT), workers=2)
    pa, pb = s["pools"]["pa"], s["pools"]["pb"]
    assert pa["ids"] == ["a1", "a2", "a3"]
    assert pa["responses"][0] == [0, 7, 0, 1, 1]
    assert pa["inflight"] == [2, 0, 0]
    assert pa["errors"]["spilled"] == 6
    assert pa["errors"]["connect_failed"] == 6
    assert pa["errors"]["retried"] == 2
    # b1's own 2, the 6 spilled from pa, and HAProxy's own 5xx for it (eresp).
    assert pb["responses"][0] == [0, 2 + 6, 0, 0, 1]
    assert pb["inflight"] == [1, 0]
    assert pb["errors"]["retried"] == 1
    assert pb["errors"]["aborted_midway"] == 1
    assert pb["latency_count"] == 9
    assert (s["connections"], s["workers"]) == (4, 2)
    assert s["client_errors"] == {"client_bad_request": 3}


def test_status_and_metrics_keep_the_builtin_shape():
    hub = hub_with({"pa": {"a2"}})
    stats = engine_stats(TOPOLOGY, "a", rows(STAT))

    async def gather():
        return stats

    async def reload():
        return True, "ok"

    app = AdminApp(hub, gather, reload)
    code, _, body = asyncio.run(app.handle("GET", "/status"))
    assert code == 200
    doc = json.loads(body)
    a1 = doc["pools"]["pa"]["backends"][0]
    assert a1["responses"] == {"1xx": 0, "2xx": 7, "3xx": 0, "4xx": 1, "5xx": 1}
    assert a1["inflight"] == 2
    assert doc["pools"]["pb"]["backends"][0]["responses"]["2xx"] == 8
    assert doc["pools"]["pa"]["inflight"] == 2
    assert doc["connections"] == 4
    builtin_keys = set(hub.status({})["pools"]["pa"]["backends"][0])
    assert set(a1) == builtin_keys
    code, _, body = asyncio.run(app.handle("GET", "/metrics"))
    assert code == 200
    text = body.decode()
    assert 'zonegate_requests_total{backend="b1",class="2xx",pool="pb"} 8.0' in text
    assert 'zonegate_errors_total{kind="spilled",pool="pa"} 6.0' in text


# against a real HAProxy

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def _cli(sock: Path, command: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(2.0)
        s.connect(str(sock))
        s.sendall(command.encode() + b"\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out.decode()


@pytest.mark.skipif(
    not Path(HAPROXY).exists(), reason="haproxy not installed (apt-get install haproxy)"
)
@pytest.mark.timeout(30)
def test_verdicts_and_weights_with_a_real_haproxy(tmp_path):
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(16)
    up_port = listening.getsockname()[1]
    down_port = refused_port()
    sock = tmp_path / "haproxy.sock"
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        f"""global
    stats socket {sock} level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
backend be_pa
    server a1 127.0.0.1:{up_port} check inter 100ms rise 1 fall 1
    server a2 127.0.0.1:{down_port} check inter 100ms rise 1 fall 1
    server a3 127.0.0.1:{down_port} check inter 100ms rise 1 fall 1
    server spill:pb:b1 127.0.0.1:{up_port} weight 0 track be_pb/b1
    server spill:pb:b2 127.0.0.1:{up_port} weight 0 track be_pb/b2
backend be_pb
    server b1 127.0.0.1:{up_port} check inter 100ms rise 1 fall 1 weight 2
    server b2 127.0.0.1:{up_port} check inter 100ms rise 1 fall 1
"""
    )
    proc = start_process([HAPROXY, "-db", "-f", str(cfg)], None)
    try:
        want = {("pa", "a1"): True, ("pa", "a2"): False, ("pa", "a3"): False}
        deadline = time.monotonic() + 10
        v: dict = {}
        while time.monotonic() < deadline:
            if sock.exists():
                v = verdicts(rows(_cli(sock, "show stat")))
                if all(v.get(k) == up for k, up in want.items()):
                    break
            time.sleep(0.05)
        assert {k: v.get(k) for k in want} == want
        why = verdict_details(rows(_cli(sock, "show stat")))[("pa", "a2")][1]
        assert why == "haproxy: Layer4 connection problem: Connection refused"
        # Feed the verdicts to the plan (the hub's part) and apply the weights.
        hub = hub_with({"pa": {b for (p, b), up in v.items() if p == "pa" and not up}})
        d = desired_servers(TOPOLOGY, "a", hub.states, {("pb", "b2"): "drain"})
        for key, s in d.items():
            if key.backend in ("be_pa", "be_pb"):
                _cli(sock, f"set server {key.backend}/{key.server} weight {s.weight}")
                _cli(sock, f"set server {key.backend}/{key.server} state {s.admin.value}")
        stat = {(r["pxname"], r["svname"]): r for r in rows(_cli(sock, "show stat"))}
        assert stat[("be_pb", "b2")]["status"].startswith("DRAIN")
        # HAProxy took the weights: the spill share over UP servers is the plan's.
        got = {
            k.server: int(stat[(k.backend, k.server)]["weight"])
            for k in d
            if k.backend == "be_pa" and not k.server.startswith("panic:")
        }
        spill = got["spill:pb:b1"]  # b2 drains, so its spill server takes no new requests
        share = spill / (got["a1"] + spill)
        wanted_b1 = (1 - hub.states["pa"].local_share) * 2 / 3
        local_part = hub.states["pa"].local_share
        assert abs(share - wanted_b1 / (wanted_b1 + local_part)) < 0.02
    finally:
        proc.kill()
        listening.close()


def test_spill_servers_of_backends_named_by_address():
    topo = load_topology_text(
        TOPO.replace(", name: b1, weight: 2}", ", weight: 2}").replace(
            ", name: b2, weight: 1}", "}"
        )
    )
    d = desired_servers(topo, "a", {}, {})
    assert ServerKey("be_pa", "spill:pb:127.0.0.1:2001") in d
    text = "# pxname,svname,status,hrsp_2xx,stot\nbe_pa,spill:pb:127.0.0.1:2001,UP,5,5\n"
    s = engine_stats(topo, "a", rows(text))
    assert s["pools"]["pb"]["ids"] == ["127.0.0.1:2001", "127.0.0.1:2002"]
    assert s["pools"]["pb"]["responses"][0][1] == 5


def _start_haproxy(tmp_path, body):
    """HAProxy on `body` (a config after global/defaults, with {port} for the frontend);
    returns (proc, port, stats socket) once its stats socket answers."""
    sock = tmp_path / "haproxy.sock"
    sock.unlink(missing_ok=True)

    def start():
        port = free_port()
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(
            f"""global
    stats socket {sock} level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 300ms
"""
            + body.format(port=port)
        )
        proc = start_process([HAPROXY, "-db", "-f", str(cfg)], None)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.proc.poll() is not None:
                out = proc.output()
                proc.kill()
                raise ProcessError(f"haproxy exited: {out}")
            if sock.exists():
                return proc, port
            time.sleep(0.02)
        proc.kill()
        raise ProcessError("haproxy: no stats socket after 10 s")

    proc, port = retry_addr_in_use(start)
    return proc, port, sock


def _get(port, path):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        head = s.recv(4096).decode("latin-1")
    return int(head.split(" ", 2)[1])


@pytest.mark.skipif(
    not Path(HAPROXY).exists(), reason="haproxy not installed (apt-get install haproxy)"
)
@pytest.mark.timeout(30)
def test_haproxy_own_errors_count_as_the_builtin_engine_counts_them(tmp_path):
    # A backend that accepts and never answers (504 after `timeout server`), and a pool
    # whose only server is down (503, no server).
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(16)
    dead = refused_port()
    body = f"""frontend fe_la
    bind 127.0.0.1:{{port}}
    use_backend be_pa if {{{{ path_beg /a }}}}
    default_backend be_solo
backend be_pa
    server a1 127.0.0.1:{dead} check inter 100ms rise 1 fall 1
    server a2 127.0.0.1:{dead} check inter 100ms rise 1 fall 1
    server a3 127.0.0.1:{dead} check inter 100ms rise 1 fall 1
backend be_solo
    server s1 127.0.0.1:{hang.getsockname()[1]}
"""
    proc, port, sock = _start_haproxy(tmp_path, body)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if verdicts(rows(_cli(sock, "show stat"))).get(("pa", "a3")) is False:
                break
            time.sleep(0.05)
        assert _get(port, "/solo") == 504
        assert [_get(port, "/a") for _ in range(2)] == [503, 503]
        s = engine_stats(TOPOLOGY, "a", rows(_cli(sock, "show stat")))
    finally:
        proc.kill()
        hang.close()
    solo, pa = s["pools"]["solo"], s["pools"]["pa"]
    assert solo["responses"][0] == [0, 0, 0, 0, 1]  # the 504, on the backend, as built-in
    assert solo["latency_count"] == 1
    assert pa["errors"]["no_backend"] == 2  # not responses of any backend
    assert pa["latency_count"] == 0
    assert all(r == [0] * 5 for r in pa["responses"])


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.mark.skipif(
    not Path(HAPROXY).exists(), reason="haproxy not installed (apt-get install haproxy)"
)
@pytest.mark.timeout(60)
def test_measured_spill_share_through_haproxy_two_of_three_down(tmp_path):
    """2 of 3 local backends down: the hub's plan, applied as weights, is what HAProxy
    actually sends to the backup (the built-in engine's share: 1 - 1/3 x 1.4)."""
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Ok) for _ in range(3)]
    for srv in servers:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    a1, b1, b2 = (srv.server_address[1] for srv in servers)
    dead = refused_port()
    chk = "check inter 100ms rise 1 fall 1"
    body = f"""frontend fe_la
    bind 127.0.0.1:{{port}}
    default_backend be_pa
backend be_pa
    balance roundrobin
    server a1 127.0.0.1:{a1} {chk}
    server a2 127.0.0.1:{dead} {chk}
    server a3 127.0.0.1:{dead} {chk}
    server spill:pb:b1 127.0.0.1:{b1} weight 0 track be_pb/b1
    server spill:pb:b2 127.0.0.1:{b2} weight 0 track be_pb/b2
backend be_pb
    server b1 127.0.0.1:{b1} {chk} weight 2
    server b2 127.0.0.1:{b2} {chk}
"""
    proc, port, sock = _start_haproxy(tmp_path, body)
    try:
        deadline = time.monotonic() + 10
        v: dict = {}
        while time.monotonic() < deadline:
            v = verdicts(rows(_cli(sock, "show stat")))
            if v.get(("pa", "a2")) is False and v.get(("pa", "a3")) is False:
                break
            time.sleep(0.05)
        hub = hub_with({"pa": {b for (p, b), up in v.items() if p == "pa" and not up}})
        plan = 1 - hub.states["pa"].local_share
        for key, s in desired_servers(TOPOLOGY, "a", hub.states, {}).items():
            if key.backend in ("be_pa", "be_pb"):
                _cli(sock, f"set server {key.backend}/{key.server} weight {s.weight}")
        before = {r["svname"]: int(r["stot"]) for r in rows(_cli(sock, "show stat"))}
        n = 600
        assert all(_get(port, "/") == 200 for _ in range(n))
        after = {r["svname"]: int(r["stot"]) for r in rows(_cli(sock, "show stat"))}
    finally:
        proc.kill()
        for srv in servers:
            srv.shutdown()
            srv.server_close()
    spilled = sum(after[s] - before[s] for s in ("spill:pb:b1", "spill:pb:b2"))
    print(f"spill share measured {spilled / n:.3f}, plan {plan:.3f}")
    assert abs(spilled / n - plan) <= 0.02


def test_a_pool_reached_only_as_backup_has_no_spill_servers():
    topo = load_topology_text(
        TOPO.replace("  pb:\n    zone: b\n", "  pb:\n    zone: b\n    backup: pa\n")
    )
    assert topo.pools["pb"].backup == "pa"
    d = desired_servers(topo, "a", {}, {})
    assert not any(k.backend == "be_pb" and k.server.startswith("spill:") for k in d)
    assert set(rendered_servers(topo)) == {(k.backend, k.server) for k in d}


class _CheckFails(_Ok):
    """Serves requests but fails the health check path: the "bad check" panic is for."""

    def do_GET(self):
        if self.path == "/healthz":
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()


@pytest.mark.skipif(
    not Path(HAPROXY).exists(), reason="haproxy not installed (apt-get install haproxy)"
)
@pytest.mark.timeout(60)
def test_panic_twins_serve_while_the_checks_keep_reporting(tmp_path):
    """Every check fails, no backup: the hub panics, the twins serve every request, and
    HAProxy still reports the checked servers DOWN (not "no check"), so the hub sees
    it when they recover and leaves panic."""
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _CheckFails) for _ in range(3)]
    for srv in servers:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    ports = [srv.server_address[1] for srv in servers]
    chk = "check inter 100ms rise 1 fall 1"
    lines = [f"    server a{i} 127.0.0.1:{p} {chk}" for i, p in enumerate(ports, 1)]
    lines += [f"    server panic:a{i} 127.0.0.1:{p} disabled" for i, p in enumerate(ports, 1)]
    body = (
        "frontend fe_la\n    bind 127.0.0.1:{port}\n    default_backend be_pa\n"
        "backend be_pa\n    option httpchk GET /healthz\n" + "\n".join(lines) + "\n"
    )
    proc, port, sock = _start_haproxy(tmp_path, body)
    try:
        deadline = time.monotonic() + 10
        v: dict = {}
        while time.monotonic() < deadline:
            v = verdicts(rows(_cli(sock, "show stat")))
            if [v.get(("pa", f"a{i}")) for i in (1, 2, 3)] == [False] * 3:
                break
            time.sleep(0.05)
        assert _get(port, "/") == 503  # every checked server down, twins in maintenance
        topo = load_topology_text(TOPO.replace("    backup: pb\n", ""))
        assert topo.pools["pa"].backup is None
        hub = HealthHub(Snapshot(1, topo, "t"), "a", clock=FakeClock().now)
        for i in range(3):
            hub.healths["pa"].record_active(i, False, hub.clock())
        hub.publish()
        assert hub.states["pa"].panic
        for key, s in desired_servers(topo, "a", hub.states, {}).items():
            if key.backend == "be_pa":
                _cli(sock, f"set server {key.backend}/{key.server} weight {s.weight}")
                _cli(sock, f"set server {key.backend}/{key.server} state {s.admin.value}")
        served = [_get(port, "/") for _ in range(30)]
        assert served == [200] * 30
        stat = {r["svname"]: r for r in rows(_cli(sock, "show stat")) if r["pxname"] == "be_pa"}
        assert sum(int(stat[f"panic:a{i}"]["stot"]) for i in (1, 2, 3)) == 30
        assert all(int(stat[f"panic:a{i}"]["stot"]) > 0 for i in (1, 2, 3))
        # The checks still run on the checked servers: verdicts keep coming.
        assert verdicts(rows(_cli(sock, "show stat"))) == {
            ("pa", "a1"): False,
            ("pa", "a2"): False,
            ("pa", "a3"): False,
        }
    finally:
        proc.kill()
        for srv in servers:
            srv.shutdown()
            srv.server_close()
