"""`zonegate lb --engine haproxy` against a real HAProxy, real demo backends, loopback.

Each test starts its own `zonegate lb --engine haproxy` (HAProxy is its child, with its
state directory in tmp_path) and prints what it measured (`pytest -s` to see it).
After each test the LB is stopped and the test checks that no HAProxy process is left.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.lbharness import (
    Lb,
    Load,
    Topo,
    backend_entry,
    backend_post,
    backend_requests,
    parse_metrics,
    raw_exchange,
    run_requests,
    start_lb,
    wait_for,
)
from tests.integration.test_smuggling import CORPUS as SMUGGLING
from tests.peers.processes import CONTROL_OPERATOR as OPERATOR
from tests.peers.processes import free_port, retry_addr_in_use, start_control

HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        HAPROXY is None, reason="HAProxy is not installed (apt-get install haproxy)"
    ),
]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose (its parent has not reaped it yet).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _haproxy_pids(lb: Lb) -> list[int]:
    """HAProxy's master and its workers, from /status and /proc."""
    master = lb.status()["engine"]["pid"]
    pids = [master]
    for task in Path(f"/proc/{master}/task").iterdir():
        with open(task / "children") as f:
            pids += [int(p) for p in f.read().split()]
    return pids


class haproxy_lb:
    """`start_lb(..., engine="haproxy")` that checks, at the end, nothing is left."""

    def __init__(self, tmp_path: Path, topo: Topo, **kw: object) -> None:
        self.lb = start_lb(tmp_path, topo, engine="haproxy", **kw)  # type: ignore[arg-type]

    def __enter__(self) -> Lb:
        self.pids = _haproxy_pids(self.lb)
        return self.lb

    def __exit__(self, exc_type: object, *exc: object) -> None:
        pids = self.pids
        with contextlib.suppress(Exception):  # the test's own failure matters more
            pids = pids + _haproxy_pids(self.lb)
        self.lb.__exit__(exc_type, *exc)
        wait_for(lambda: not any(_alive(p) for p in pids), 10, "HAProxy gone after the LB")


def test_routes_by_host_and_path(tmp_path, backend_factory):
    web, api, static = (backend_factory(name=n, zone="z1") for n in ("web", "api", "static"))
    routes = [
        {"host": "api.example.test", "pool": "api"},
        {"path_prefix": "/static/", "pool": "static"},
        {"pool": "web"},
    ]
    topo = (
        Topo()
        .pool("web", [web])
        .pool("api", [api])
        .pool("static", [static])
        .listener(routes=routes)
    )
    with haproxy_lb(tmp_path, topo) as lb:
        cases = [
            ({"Host": "api.example.test"}, "/static/x", "api"),
            ({"Host": "www.example.test"}, "/static/x", "static"),
            ({"Host": "www.example.test"}, "/", "web"),
            ({"Host": "API.example.test"}, "/", "api"),
        ]
        for headers, path, want in cases:
            r = lb.get(path, headers=headers)
            assert r.status == 200, (headers, path, r)
            assert r.headers["x-backend"] == want, (headers, path)
            assert r.headers["x-zonegate-version"] == "1"
            assert "x-forwarded-for" not in r.headers  # a request header, not a response one


def test_version_header_on_200_and_on_haproxys_own_503(tmp_path, backend_factory):
    b = backend_factory(name="only", zone="z1")
    topo = Topo().pool("web", [b], panic_threshold=0).listener("web")
    with haproxy_lb(tmp_path, topo) as lb:
        r = lb.get("/")
        assert (r.status, r.headers["x-zonegate-version"]) == (200, "1")
        b.kill()
        lb.wait_backend("web", "only", lambda e: not e["available"], timeout=5)
        r = lb.get("/")
        print(f"\nevery backend down: {r.status} {r.body[:60]!r}, headers {r.headers}")
        assert r.status == 503
        assert r.headers["x-zonegate-version"] == "1"
        assert len(r.body) < 512


@pytest.mark.slow
def test_backend_killed_under_load_no_client_error(tmp_path, backend_factory):
    bs = backend_factory.many(3, zone="z1")
    topo = Topo().pool("web", bs, retries=2).listener("web")
    with haproxy_lb(tmp_path, topo) as lb:
        load = Load(lb.port, clients=8, max_seconds=8).start()
        time.sleep(1.0)
        bs[1].kill()
        eject = lb.wait_backend("web", "b2", lambda b: not b["available"], timeout=5)
        entry = lb.backend("web", "b2")
        during = load.snapshot()
        time.sleep(1.5)
        res = load.stop()
        print(
            f"\nhaproxy engine, kill b2 under load: {res.summary()}\n"
            f"  b2 out of /status {eject * 1000:.0f} ms after SIGKILL ({entry['reason']!r})"
        )
        assert res.failed == 0, res.first_failure
        assert res.ok > 1000
        assert res.backends["b2"] == during.backends["b2"], "b2 served after it was dead"
        bs[1].restart()
        lb.wait_backend("web", "b2", lambda b: b["available"], timeout=10)
        after = run_requests(lb.port, 300)
        assert after.failed == 0
        assert after.backends["b2"] > 0


@pytest.mark.slow
def test_whole_pool_killed_backup_pool_serves(tmp_path, backend_factory):
    primary = backend_factory.many(3, zone="z1", prefix="a")
    backup = backend_factory.many(2, zone="z2", prefix="c")
    topo = (
        Topo()
        .pool("web", primary, zone="z1", backup="web2")
        .pool("web2", backup, zone="z2")
        .listener("web")
    )
    with haproxy_lb(tmp_path, topo) as lb:
        load = Load(lb.port, clients=8, max_seconds=8).start()
        time.sleep(1.0)
        for b in primary:
            b.kill()
        spill = lb.wait_pool("web", lambda p: p["local_share"] == 0.0, timeout=5)
        detected = load.snapshot()
        time.sleep(2.0)
        res = load.stop()
        after = res.failed - detected.failed
        print(
            f"\nhaproxy engine, kill the whole primary pool: {res.summary()}\n"
            f"  all traffic to the backup {spill * 1000:.0f} ms after SIGKILL; "
            f"{detected.failed} failed before that, {after} after; zones {dict(res.zones)}"
        )
        assert after == 0, res.first_failure
        assert res.zones["z2"] > 300
        status = lb.status()["pools"]["web"]
        assert status["healthy"] == 0
        assert not status["panic"]


def test_drain_through_the_admin_api(tmp_path, backend_factory):
    bs = backend_factory.many(2, zone="z1")
    topo = Topo().pool("web", bs).listener("web")
    with haproxy_lb(tmp_path, topo) as lb:
        assert set(run_requests(lb.port, 100).backends) == {"b1", "b2"}
        t0 = time.monotonic()
        lb.set_admin("web", "b2", "drain")
        wait_for(lambda: run_requests(lb.port, 20).backends.keys() == {"b1"}, 5, "drain")
        took = time.monotonic() - t0
        res = run_requests(lb.port, 200)
        print(f"\ndrain b2 reached traffic in {took * 1000:.0f} ms; then {res.summary()}")
        assert res.backends == {"b1": 200}
        assert lb.backend("web", "b2")["admin"] == "drain"
        lb.set_admin("web", "b2", "enable")
        wait_for(lambda: run_requests(lb.port, 40).backends["b2"] > 0, 5, "enable")
        lb.set_admin("web", "b1", "disable")
        wait_for(lambda: run_requests(lb.port, 20).backends.keys() == {"b2"}, 5, "disable")
        assert lb.backend("web", "b1")["admin"] == "disabled"
        assert lb.metric("zonegate_backend_up", pool="web", backend="b1") == 0


def test_follows_the_control_plane(tmp_path, backend_factory):
    b1 = backend_factory(name="f1", zone="z1")
    b2 = backend_factory(name="f2", zone="z1")
    topo = Topo().pool("web", [b1, b2]).listener("web")

    def start_both():
        admin_port = free_port()
        topo.doc["zones"]["z1"]["lb_admin"] = f"127.0.0.1:{admin_port}"
        control, url = start_control(tmp_path, topo.write(tmp_path / "topology.yaml"))
        try:
            lb = start_lb(
                tmp_path, topo, extra=["--control", url], admin_port=admin_port, engine="haproxy"
            )
        except BaseException:
            control.kill()
            raise
        return control, url, lb

    control, url, lb = retry_addr_in_use(start_both)
    try:
        assert lb.get("/").headers["x-zonegate-version"] == "1"
        t0 = time.monotonic()
        r = httpx.post(
            f"{url}/v1/pools/web/backends/f1/drain",
            params={"reason": "test drain"},
            headers={"Authorization": f"Bearer {OPERATOR}"},
            timeout=5,
        )
        assert r.status_code == 200, r.text
        wait_for(lambda: lb.get("/").headers["x-zonegate-version"] == "2", 5, "version 2")
        applied = time.monotonic() - t0
        served = {lb.get("/").headers["x-backend"] for _ in range(20)}
        print(f"\nhaproxy engine: control version 2 on responses {applied * 1000:.0f} ms after")
        assert served == {"f2"}
        assert lb.backend("web", "f1")["admin"] == "drain"
        assert lb.status()["version"] == 2
        # The map file follows too: HAProxy reads it at a reload or a restart.
        assert lb.state_dir is not None
        assert "version 2" in (lb.state_dir / "version.map").read_text()
    finally:
        lb.stop()
        control.kill()


@pytest.mark.slow
def test_sighup_under_load_drops_nothing_and_keeps_health(tmp_path, backend_factory):
    bs = backend_factory.many(5, zone="z1")
    topo = Topo().pool("web", bs[:4]).listener("web")
    with haproxy_lb(tmp_path, topo) as lb:
        backend_post(bs[3], "/admin/fail-health")
        lb.wait_backend("web", "b4", lambda b: b["health"] == "down", timeout=5)
        load = Load(lb.port, clients=8, max_seconds=15).start()
        time.sleep(0.5)
        # 2: a weight changes; 3: a backend joins; 4: a backend leaves.
        t2 = topo.copy()
        t2.pool_doc("web")["backends"][0]["weight"] = 3
        t3 = t2.copy()
        t3.pool_doc("web")["backends"].append(backend_entry(bs[4]))
        t4 = t3.copy()
        del t4.pool_doc("web")["backends"][1]
        steps = []
        for i, t in enumerate((t2, t3, t4), start=2):
            lb.reload(t)
            steps.append(wait_for(lambda i=i: lb.status()["version"] == i, 10, f"version {i}"))
            b4 = lb.backend("web", "b4")
            assert (b4["health"], b4["available"]) == ("down", False), b4
            time.sleep(0.7)
        res = load.stop()
        print(
            f"\nhaproxy engine, 3 SIGHUP reloads under load "
            f"(took {', '.join(f'{s * 1000:.0f} ms' for s in steps)}): {res.summary()}; "
            f"versions {dict(res.versions)}"
        )
        assert res.failed == 0, res.first_failure
        assert set(res.versions) >= {"1", "4"}
        assert res.backends["b4"] == 0
        after = run_requests(lb.port, 500)
        assert after.failed == 0
        assert set(after.backends) == {"b1", "b3", "b5"}
        assert after.versions == {"4": 500}
        assert after.backends["b1"] == pytest.approx(300, abs=40)
        assert lb.status()["engine"]["restarts"] == 0


def test_a_refused_reload_keeps_the_running_config(tmp_path, backend_factory):
    bs = backend_factory.many(2, zone="z1")
    topo = Topo().pool("web", bs).listener("web")
    with haproxy_lb(tmp_path, topo) as lb:
        bad = topo.copy()
        bad.pool_doc("web")["backends"][0]["weight"] = -1
        lb.write_topology(bad)
        r = lb.admin("POST", "/reload")
        print(f"\nrefused reload: {r.status} {r.body.decode().strip()[:200]}")
        assert r.status == 422
        assert lb.status()["version"] == 1
        assert run_requests(lb.port, 50).failed == 0


def test_haproxy_killed_is_restarted_and_counted(tmp_path, backend_factory):
    bs = backend_factory.many(2, zone="z1")
    topo = Topo().pool("web", bs).listener("web")
    with haproxy_lb(tmp_path, topo) as lb:
        lb.set_admin("web", "b2", "drain")
        engine = lb.status()["engine"]
        assert engine["restarts"] == 0
        old = _haproxy_pids(lb)
        t0 = time.monotonic()
        os.kill(engine["pid"], signal.SIGKILL)
        wait_for(
            lambda: (
                lb.status()["engine"]["restarts"] == 1
                and lb.status()["engine"]["pid"] not in (None, engine["pid"])
            ),
            10,
            "restart counted",
        )
        wait_for(lambda: run_requests(lb.port, 10).failed == 0, 10, "serving again")
        took = time.monotonic() - t0
        after = lb.status()["engine"]
        print(f"\nHAProxy SIGKILLed: serving again after {took * 1000:.0f} ms; engine {after}")
        # The killed master's workers do not linger beside the new HAProxy.
        wait_for(lambda: not any(_alive(p) for p in old), 10, "old workers gone")
        # The desired state is applied to the new HAProxy: b2 is still drained.
        wait_for(lambda: run_requests(lb.port, 40).backends.keys() == {"b1"}, 5, "drain kept")


def _served(lb: Lb) -> float:
    """zonegate_requests_total of pool web, summed over backends and classes."""
    return sum(
        v
        for (name, labels), v in parse_metrics(lb.metrics())
        if name == "zonegate_requests_total" and labels.get("pool") == "web"
    )


def test_counters_never_go_down_across_reloads_and_restarts(tmp_path, backend_factory):
    bs = backend_factory.many(3, zone="z1")
    topo = Topo().pool("web", bs[:2]).listener("web")
    with haproxy_lb(tmp_path, topo) as lb:
        assert run_requests(lb.port, 300).failed == 0
        first = _served(lb)
        assert first >= 300
        t2 = topo.copy()
        t2.pool_doc("web")["backends"].append(backend_entry(bs[2]))
        lb.reload(t2)
        wait_for(lambda: lb.status()["version"] == 2, 10, "version 2")
        assert _served(lb) >= first
        assert run_requests(lb.port, 300).failed == 0
        second = _served(lb)
        assert second >= first + 300
        os.kill(lb.status()["engine"]["pid"], signal.SIGKILL)
        wait_for(lambda: lb.status()["engine"]["restarts"] == 1, 10, "restart")
        assert _served(lb) >= second
        wait_for(lambda: run_requests(lb.port, 10).failed == 0, 10, "serving again")
        print(f"\nrequests counted: {first:.0f}, {second:.0f} after a reload, {_served(lb):.0f}")
        # A clean stop: exit 0 (and, checked on leaving, no HAProxy left).
        assert lb.stop() == 0


def test_missing_haproxy_names_the_debian_package(tmp_path):
    # ZONEGATE_HAPROXY=haproxy: look on PATH only (not in /usr/sbin as a fallback).
    topo = Topo().pool("web", ["127.0.0.1:9"]).listener("web")
    path = topo.write(tmp_path / "topology.yaml")
    empty = tmp_path / "bin"
    empty.mkdir()
    argv = [sys.executable, "-m", "zonegate", "lb", str(path), "--zone", "z1"]
    argv += ["--engine", "haproxy", "--state-dir", str(tmp_path / "state")]
    r = subprocess.run(
        argv,
        env={**os.environ, "PATH": str(empty), "ZONEGATE_HAPROXY": "haproxy"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    print(f"\nwithout haproxy on PATH: exit {r.returncode}: {r.stderr.strip()}")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "haproxy" in lines[0]
    assert "apt-get install haproxy" in lines[0]


def test_print_config_passes_haproxy_check(tmp_path):
    topo = Topo().pool("web", ["127.0.0.1:9"]).listener("web")
    path = topo.write(tmp_path / "topology.yaml")
    state = tmp_path / "state"
    argv = [sys.executable, "-m", "zonegate", "lb", str(path), "--zone", "z1"]
    argv += ["--engine", "haproxy", "--state-dir", str(state), "--print-config"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    assert "frontend fe_http" in r.stdout
    assert "backend be_web" in r.stdout
    assert not state.exists(), "--print-config only prints"
    # What the engine writes beside haproxy.cfg before it runs HAProxy.
    state.mkdir()
    (state / "version.map").write_text("version 1\n")
    cfg = tmp_path / "printed.cfg"
    cfg.write_text(r.stdout)
    check = subprocess.run(
        [HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr


def _smuggling_topo(backend) -> Topo:
    return (
        Topo()
        .pool("web", [backend], health={"active": None})
        .listener("web", limits={"request_line_bytes": 256, "header_bytes": 1024})
    )


@pytest.fixture(scope="module")
def smuggling_lb(tmp_path_factory):
    from tests.peers.processes import start_backend

    backend = start_backend("solo", zone="z1")
    try:
        with haproxy_lb(tmp_path_factory.mktemp("smuggling"), _smuggling_topo(backend)) as lb:
            yield lb, backend
    finally:
        backend.kill()


@pytest.fixture(scope="module")
def builtin_smuggling_lb(smuggling_lb, tmp_path_factory):
    """The built-in engine on the same backend and topology: the reference."""
    _, backend = smuggling_lb
    with start_lb(tmp_path_factory.mktemp("smuggling-builtin"), _smuggling_topo(backend)) as lb:
        yield lb


HAPROXY_FORWARDS = {
    # HAProxy 2.6's parser normalizes these before any rule can see them: it drops
    # Content-Length when Transfer-Encoding is present (RFC 9112 §6.3 lets an
    # intermediary forward by Transfer-Encoding alone), unfolds obs-fold and takes a
    # bare LF as a line end. One framing reaches the backend (test below), so nothing
    # is smuggled past it; docs/lb.md "Engines". Strict, so a fix shows up here.
    "bare_lf_everywhere",
    "bare_lf_in_headers",
    "cl_and_te",
    "obs_fold",
    "obs_fold_on_te",
    "smuggled_after_cl_zero_te",
    "te_and_cl",
}

RENDERED_REFUSALS = {
    # Refused by the rules render.py writes (HAProxy alone would forward them), with
    # the built-in engine's status and words.
    "absolute_form_other_scheme": "unsupported scheme in the request target",
    "absolute_form_userinfo": "userinfo in the request target",
    "host_list": "invalid Host",
    "host_userinfo": "invalid Host",
    "host_with_slash": "invalid Host",
    "host_with_space": "invalid Host",
    "http_0_9_request_line": "HTTP version not supported",
    "http_2_0_request_line": "HTTP version not supported",
    "http_3_0_request_line": "HTTP version not supported",
    "no_host_http11": "missing Host field",
    "nul_in_header_value": "malformed request: Invalid header value char",
    "target_not_origin_form": "request target must be an absolute path",
    "te_in_http10": "Transfer-Encoding in an HTTP/1.0 request",
}


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            c,
            marks=pytest.mark.xfail(
                strict=True, reason="HAProxy's parser normalizes it (one framing) and forwards"
            ),
        )
        if c in HAPROXY_FORWARDS
        else c
        for c in sorted(SMUGGLING)
    ],
)
def test_smuggling_corpus_refused_and_not_forwarded(smuggling_lb, case):
    """The built-in engine's corpus (test_smuggling.py): HAProxy refuses each request
    and the backend receives nothing. Where a rendered rule refuses it, the status and
    reason are the built-in engine's; where HAProxy's parser does, HAProxy's own 400."""
    lb, backend = smuggling_lb
    data, want = SMUGGLING[case]
    before = backend_requests(backend)
    # HAProxy closes at once after refusing; a forwarded request's connection stays open.
    reply = raw_exchange(lb.port, data, timeout=1.0)
    after = backend_requests(backend)
    assert after - before == 1, f"the backend received the request: {reply[:200]!r}"
    # The backend does not count a request it refuses itself: it must not have answered.
    assert b"x-backend:" not in reply.lower(), reply[:300]
    if case in RENDERED_REFUSALS:
        status = int(reply.split(b" ", 2)[1])
        assert status == want, reply[:300]
        head, _, body = reply.partition(b"\r\n\r\n")
        assert body.decode().strip().endswith(f": {RENDERED_REFUSALS[case]}"), reply[:300]
        assert b"connection: close" in head.lower(), reply[:300]
        assert b"x-zonegate-version: 1" in head.lower(), reply[:300]
    elif reply:  # HAProxy may also just close
        status = int(reply.split(b" ", 2)[1])
        assert 400 <= status < 600, reply[:300]


@pytest.mark.parametrize("case", ["host_list", "http_2_0_request_line", "te_in_http10"])
def test_rendered_refusal_pipelined_after_good_requests(smuggling_lb, case):
    """The good requests before it are answered in order, then the refusal, then the
    connection closes: the request pipelined after it is never served."""
    lb, backend = smuggling_lb
    data, want = SMUGGLING[case]
    good = b"GET /echo?n=%d HTTP/1.1\r\nHost: app.test\r\n\r\n"
    before = backend_requests(backend)
    reply = raw_exchange(lb.port, good % 1 + good % 2 + data + good % 3, timeout=2.0)
    after = backend_requests(backend)
    statuses = [int(part[:3]) for part in reply.split(b"HTTP/1.1 ")[1:]]
    assert statuses == [200, 200, want], reply[:600]
    assert reply.index(b'"query":"n=1"') < reply.index(b'"query":"n=2"')
    assert after - before == 3, "only the good requests before it reach the backend"


def _exchange(port: int, data: bytes) -> tuple[int, bytes]:
    """Send one raw request, read one response (status, body) with a real parser."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        resp = http.client.HTTPResponse(s)
        resp.begin()
        return resp.status, resp.read()


@pytest.mark.parametrize("case", sorted(HAPROXY_FORWARDS))
def test_what_haproxy_normalizes_reaches_the_backend_with_one_framing(smuggling_lb, case):
    """Why the strict xfails above are safe: the backend (httptools, strict) receives
    one well-formed request, framed one way only (chunked, no Content-Length), with
    no folded or bare-LF line, and nothing after it."""
    lb, backend = smuggling_lb
    data, _ = SMUGGLING[case]
    method, _, rest = data.partition(b" / ")
    before = backend_requests(backend)
    status, body = _exchange(lb.port, method + b" /echo " + rest)
    after = backend_requests(backend)
    assert status == 200, body[:300]
    assert after - before == 2, "exactly one request reached the backend"
    seen = json.loads(body)
    names = [n.lower() for n, _ in seen["headers"]]
    values = [v for _, v in seen["headers"]]
    if "transfer-encoding" in names:
        assert "content-length" not in names, seen["headers"]
        assert seen["body_bytes"] == (5 if case == "smuggled_after_cl_zero_te" else 0)
    assert not any("\r" in v or "\n" in v for v in values), seen["headers"]
    print(f"\n{case}: the backend saw {seen['method']} {seen['target']} {seen['headers']}")


VALID_REQUESTS = {
    # Accepted by the built-in engine; the rendered rules must let them through.
    "extension_method": b"PURGE /echo HTTP/1.1\r\nHost: app.test\r\n\r\n",
    "http_1_2": b"GET /echo HTTP/1.2\r\nHost: app.test\r\n\r\n",
    "http_1_0_without_host": b"GET /echo HTTP/1.0\r\n\r\n",
    "absolute_form_http": b"GET http://app.test/echo HTTP/1.1\r\nHost: app.test\r\n\r\n",
    "absolute_form_https": b"GET HTTPS://app.test/echo?q=1 HTTP/1.1\r\nHost: app.test\r\n\r\n",
    "absolute_form_without_host": b"GET http://app.test:8080/echo HTTP/1.1\r\n\r\n",
    "absolute_form_ipv6": b"GET http://[2001:db8::1]:8080/echo HTTP/1.1\r\n\r\n",
    "ipv6_literal_host": b"GET /echo HTTP/1.1\r\nHost: [::1]\r\n\r\n",
    "ipv6_literal_host_port": b"GET /echo HTTP/1.1\r\nHost: [::ffff:10.0.0.1]:8080\r\n\r\n",
    "host_with_port": b"GET /echo HTTP/1.1\r\nHost: app.test:8080\r\n\r\n",
    "host_ipv4_and_port": b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n",
    "host_trailing_dot": b"GET /echo HTTP/1.1\r\nHost: App.Test.\r\n\r\n",
    "host_pct_encoded": b"GET /echo HTTP/1.1\r\nHost: a%2Db.test\r\n\r\n",
    "empty_host": b"GET /echo HTTP/1.1\r\nHost:\r\n\r\n",
    "chunked_body": b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n"
    b"\r\n3\r\nabc\r\n0\r\n\r\n",
    "comma_in_other_field": b"GET /echo HTTP/1.1\r\nHost: app.test\r\nAccept: a/b, c/d\r\n\r\n",
}


@pytest.mark.parametrize("engine", ["builtin", "haproxy"])
@pytest.mark.parametrize("case", sorted(VALID_REQUESTS))
def test_valid_requests_pass_through_the_rendered_rules(
    smuggling_lb, builtin_smuggling_lb, engine, case
):
    """Both engines forward what the built-in parser accepts, the rules included."""
    lb, backend = smuggling_lb
    if engine == "builtin":
        lb = builtin_smuggling_lb
    before = backend_requests(backend)
    status, body = _exchange(lb.port, VALID_REQUESTS[case])
    after = backend_requests(backend)
    assert status == 200, body[:300]
    assert after - before == 2, "the request reached the backend"
    seen = json.loads(body)
    assert seen["path"] == "/echo"


MORE_REFUSALS = {
    # Beyond the corpus: refused by the built-in engine, forwarded by HAProxy 2.6 alone.
    "absolute_form_bad_authority": b"GET http://app.test,evil.test/ HTTP/1.1\r\n\r\n",
    "absolute_form_no_authority": b"GET http:///x HTTP/1.1\r\nHost: app.test\r\n\r\n",
    "absolute_form_bad_ipv6": b"GET http://[1:2:3]/ HTTP/1.1\r\n\r\n",
    "bad_ipv6_literal_host": b"GET / HTTP/1.1\r\nHost: [1:2:3]:80\r\n\r\n",
    "ipv6_zone_id_host": b"GET / HTTP/1.1\r\nHost: [fe80::1%25eth0]\r\n\r\n",
    "host_bad_pct_encoding": b"GET / HTTP/1.1\r\nHost: a%zz.test\r\n\r\n",
    "host_port_not_digits": b"GET / HTTP/1.1\r\nHost: app.test:8o\r\n\r\n",
    "connect": b"CONNECT app.test:443 HTTP/1.1\r\nHost: app.test:443\r\n\r\n",
    "control_byte_in_header_value": b"GET / HTTP/1.1\r\nHost: app.test\r\nX-A: a\x01b\r\n\r\n",
    "del_in_header_value": b"GET / HTTP/1.1\r\nHost: app.test\r\nX-A: a\x7fb\r\n\r\n",
    "asterisk_form_not_options": b"GET * HTTP/1.1\r\nHost: app.test\r\n\r\n",
    "http_1_2_without_host": b"GET / HTTP/1.2\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(MORE_REFUSALS))
def test_more_refusals_match_the_builtin_engine(smuggling_lb, builtin_smuggling_lb, case):
    """The same status and reason from both engines (the built-in one may add the
    offending value), the connection closed, and nothing reaches the backend."""
    lb, backend = smuggling_lb
    data = MORE_REFUSALS[case]
    answers = []
    for port in (builtin_smuggling_lb.port, lb.port):
        before = backend_requests(backend)
        reply = raw_exchange(port, data, timeout=2.0)
        assert backend_requests(backend) - before == 1, f"forwarded: {reply[:200]!r}"
        assert b"x-backend:" not in reply.lower(), reply[:300]
        head, _, body = reply.partition(b"\r\n\r\n")
        assert b"connection: close" in head.lower(), reply[:300]
        answers.append((head.split(b" ", 2)[1], body.decode().strip()))
    (builtin, builtin_body), (haproxy, haproxy_body) = answers
    print(f"\n{case}: built-in {builtin_body!r}, haproxy {haproxy_body!r}")
    assert builtin == haproxy
    assert builtin_body.startswith(haproxy_body)


def test_a_change_haproxy_refuses_keeps_the_running_config(tmp_path, backend_factory):
    bs = backend_factory.many(1, zone="z1")
    topo = Topo().pool("web", bs).listener("web")
    topo.doc["zones"]["z1"]["lb_engine"] = "haproxy"  # TLS is valid for this zone
    with haproxy_lb(tmp_path, topo) as lb:
        # Valid for zonegate, refused by HAProxy: a certificate that is no certificate.
        (tmp_path / "bad.pem").write_text("not a certificate\n")
        t2 = topo.copy().listener(
            "web", name="secure", tls={"certificate": "bad.pem", "key": "bad.pem"}
        )
        lb.write_topology(t2)
        r = lb.admin("POST", "/reload")
        text = r.body.decode()
        print(f"\nHAProxy refuses the new config: {r.status} {text.strip()[:300]}")
        assert r.status == 422
        assert "[ALERT]" in text
        # HAProxy's words, traced back to the topology's file:line.
        assert f"{lb.path}:" in text
        assert "listeners.secure" in text
        assert lb.status()["version"] == 1
        assert lb.status()["engine"]["restarts"] == 0
        res = run_requests(lb.port, 100)
        assert res.failed == 0
        assert res.versions == {"1": 100}


def _zonegate_lb(tmp_path: Path, topo: Topo, *args: str) -> subprocess.CompletedProcess[str]:
    path = topo.write(tmp_path / "topology.yaml")
    argv = [sys.executable, "-m", "zonegate", "lb", str(path), "--zone", "z1", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def test_engine_override_refuses_what_the_engine_cannot_honour(tmp_path):
    (tmp_path / "cert.pem").write_text("x\n")
    topo = Topo().pool("web", ["127.0.0.1:9"])
    topo.listener("web", tls={"certificate": "cert.pem", "key": "cert.pem"})
    topo.doc["zones"]["z1"]["lb_engine"] = "haproxy"
    r = _zonegate_lb(tmp_path, topo, "--engine", "builtin")
    print(f"\n--engine builtin with TLS: exit {r.returncode}: {r.stderr.strip()}")
    assert r.returncode == 1
    assert "listeners.http.tls" in r.stderr
    assert "--engine builtin" in r.stderr


def test_print_config_needs_the_haproxy_engine(tmp_path):
    r = _zonegate_lb(
        tmp_path, Topo().pool("web", ["127.0.0.1:9"]).listener("web"), "--print-config"
    )
    assert r.returncode == 2
    assert r.stderr.strip() == "zonegate lb: --print-config needs the haproxy engine"


def test_haproxy_threads_follow_workers(tmp_path, backend_factory):
    bs = backend_factory.many(2, zone="z1")
    topo = Topo().pool("web", bs).listener("web")
    with haproxy_lb(tmp_path, topo, workers=2) as lb:
        assert lb.status()["workers"] == 2
        assert "nbthread 2" in (lb.state_dir / "haproxy.cfg").read_text()
        assert run_requests(lb.port, 200).failed == 0


def test_a_reload_haproxy_cannot_bind_keeps_the_running_config(tmp_path, backend_factory):
    bs = backend_factory.many(2, zone="z1")
    topo = Topo().pool("web", bs).listener("web")
    with haproxy_lb(tmp_path, topo) as lb, socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # `haproxy -c` accepts it; the reload itself fails: the port is taken.
        t2 = topo.copy().listener("web", name="more", port=port)
        lb.write_topology(t2)
        r = lb.admin("POST", "/reload")
        text = r.body.decode()
        print(f"\nreload onto a taken port: {r.status} {text.strip()[:400]}")
        assert r.status == 422
        assert "keeping version 1" in text
        assert lb.status()["version"] == 1
        assert run_requests(lb.port, 100).versions == {"1": 100}
        # The config on disk is the running one again (a restart would read it) ...
        assert "fe_more" not in (lb.state_dir / "haproxy.cfg").read_text()
        # ... and the next good reload works.
        t3 = topo.copy()
        t3.pool_doc("web")["retries"] = 1
        lb.write_topology(t3)
        r = lb.admin("POST", "/reload")
        assert r.status == 200, r.body
        wait_for(lambda: lb.get("/").headers["x-zonegate-version"] == "2", 5, "version 2")
        assert run_requests(lb.port, 100).failed == 0


def _runtime_api(lb: Lb, command: str) -> str:
    """One command on the LB's HAProxy stats socket, as an operator would send it."""
    assert lb.state_dir is not None
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(lb.state_dir / "haproxy.sock"))
        s.sendall(command.encode() + b"\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out.decode()


def test_drift_is_repaired_and_logged(tmp_path, backend_factory):
    bs = backend_factory.many(2, zone="z1")
    topo = Topo().pool("web", bs).listener("web")
    with haproxy_lb(tmp_path, topo) as lb:
        # Someone puts b2 in maintenance and changes b1's weight behind zonegate's back.
        _runtime_api(lb, "set server be_web/b2 state maint")
        _runtime_api(lb, "set server be_web/b1 weight 7")
        t0 = time.monotonic()
        wait_for(lambda: lb.status()["engine"]["repairs"] >= 1, 5, "drift repaired")
        took = time.monotonic() - t0
        line = next(x for x in lb.proc.stderr().splitlines() if "repaired drift" in x)
        print(f"\ndrift repaired after {took * 1000:.0f} ms: {line.split(': ', 2)[-1]}")
        assert "reconcile: repaired drift in HAProxy" in lb.proc.stderr()
        res = run_requests(lb.port, 200)
        assert res.backends["b1"] == pytest.approx(100, abs=10)


def test_sigterm_finishes_in_flight_requests_and_does_not_wait_for_idle_ones(
    tmp_path, backend_factory
):
    bs = backend_factory.many(1, zone="z1")
    topo = Topo().pool("web", bs).listener("web")
    with haproxy_lb(tmp_path, topo, extra=["--drain-timeout", "30s"]) as lb:
        idle = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
        idle.request("GET", "/")
        assert idle.getresponse().read()  # then left open, idle
        slow: dict[str, object] = {}

        def call() -> None:
            try:
                slow["response"] = lb.get("/slow?ms=1500", timeout=10)
            except Exception as e:  # reported below
                slow["error"] = e

        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.5)
        lb.proc.signal(signal.SIGTERM)
        t.join(10)
        # Bounded well below the 30 s drain timeout: the idle connection is not awaited.
        status = lb.proc.proc.wait(10)
        print(f"\nSIGTERM with a 1.5 s request in flight and an idle connection: {slow}")
        assert slow.get("response") is not None, slow
        assert slow["response"].status == 200
        assert status == 0
        idle.close()
