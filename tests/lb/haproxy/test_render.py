"""haproxy.cfg rendering: golden files, HAProxy's own checker, and real traffic.

Golden files pin the text (regenerate with ZONEGATE_UPDATE_GOLDEN=1 after a
deliberate change, and read the diff); `haproxy -c` has the last word on every
rendered example; one test serves real requests through a rendered config to check
what the text means (routes, 404, error bodies, version header, forwarding headers).
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from tests.peers.processes import (
    Proc,
    ProcessError,
    free_port,
    refused_port,
    retry_addr_in_use,
    start_backends,
)
from zonegate.errors import HttpParseError
from zonegate.lb import http1
from zonegate.lb.haproxy.model import WEIGHT_MAX
from zonegate.lb.haproxy.render import (
    HOST_REGEX,
    SERVER_STATE_EMPTY,
    SOCKET_PATH_MAX,
    HaproxyPaths,
    base_weight,
    quote,
    render_config,
    rendered_pools,
    spill_pools,
    status_regex,
    tls_bundles,
    version_map_text,
)
from zonegate.topology.load import load_topology, load_topology_text
from zonegate.topology.schema import Pool
from zonegate.topology.snapshot import Snapshot
from zonegate.topology.types import StatusRange

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).parent / "golden"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
needs_haproxy = pytest.mark.skipif(
    not os.access(HAPROXY, os.X_OK), reason="haproxy not installed (make test installs it)"
)
GOLDEN_DIR = "/run/zonegate/lb"

CASES = [
    ("examples/two-zones.yaml", "changping"),
    ("examples/two-zones.yaml", "yanqing"),
    ("tests/lb/haproxy/golden/full.yaml", "east"),
    ("tests/lb/haproxy/golden/full.yaml", "west"),
]


def _snapshot(path: str, version: int = 7) -> Snapshot:
    return Snapshot(version, load_topology(ROOT / path), path)


def _every_example() -> list[tuple[str, str]]:
    out = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        rel = str(path.relative_to(ROOT))
        try:
            topo = load_topology(path)
        except Exception:
            continue  # bad.yaml: invalid on purpose
        out += [
            (rel, z) for z in topo.zones if any(lst.zone == z for lst in topo.listeners.values())
        ]
    return out


@pytest.mark.parametrize(("path", "zone"), CASES)
def test_golden(path: str, zone: str) -> None:
    text = render_config(_snapshot(path), zone, HaproxyPaths.in_dir(f"{GOLDEN_DIR}-{zone}"))
    golden = GOLDEN / f"{Path(path).stem}-{zone}.cfg"
    if os.environ.get("ZONEGATE_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Not tmp_path: HAProxy binds a unix socket path of at most 97 bytes.
    d = Path(tempfile.mkdtemp(prefix="zg-hap-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _prepare(
    snap: Snapshot, zone: str, state: Path, ca: trustme.CA | None = None, **kw: int
) -> Path:
    """Write what the engine shell writes before starting HAProxy; return the cfg."""
    paths = HaproxyPaths.in_dir(state)
    (state / "version.map").write_text(version_map_text(snap.version))
    (state / "server-state").write_text(SERVER_STATE_EMPTY)
    bundles = tls_bundles(snap, zone, paths)
    if bundles:
        cert = (ca or trustme.CA()).issue_cert("localhost")
        (state / "tls").mkdir(exist_ok=True)
        for bundle in bundles:
            Path(bundle).write_bytes(cert.private_key_and_cert_chain_pem.bytes())
    cfg = state / "haproxy.cfg"
    cfg.write_text(render_config(snap, zone, paths, **kw))
    return cfg


@needs_haproxy
@pytest.mark.parametrize(("path", "zone"), sorted(set(CASES + _every_example())))
def test_haproxy_accepts_the_rendered_config(path: str, zone: str, state_dir: Path) -> None:
    cfg = _prepare(_snapshot(path), zone, state_dir, threads=2)
    out = subprocess.run(
        [HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # No warning either: a warning is a setting HAProxy reads differently than we mean.
    assert "[WARNING]" not in out.stdout + out.stderr
    assert "[ALERT]" not in out.stdout + out.stderr


def test_bad_input_is_a_clear_error() -> None:
    snap = _snapshot("examples/two-zones.yaml")
    with pytest.raises(ValueError, match="unknown zone 'nope'"):
        render_config(snap, "nope", HaproxyPaths.in_dir("/run/x"))
    with pytest.raises(ValueError, match="threads must be >= 1"):
        render_config(snap, "changping", HaproxyPaths.in_dir("/run/x"), threads=0)
    with pytest.raises(ValueError, match="letters, digits"):
        HaproxyPaths.in_dir("/tmp/with space")
    with pytest.raises(ValueError, match="unix socket path takes at most 97"):
        HaproxyPaths.in_dir("/tmp/" + "d" * 100)


@needs_haproxy
def test_the_longest_socket_path_accepted_is_one_haproxy_binds(state_dir: Path) -> None:
    # Regression: sun_path's 107 bytes were accepted, and HAProxy refused the config
    # at start ("socket path ... too long (max 97)") under pytest's long tmp_path.
    longest = SOCKET_PATH_MAX - len(str(state_dir)) - len("//haproxy.sock")
    deep = state_dir / ("d" * longest)
    deep.mkdir()
    assert len(str(HaproxyPaths.in_dir(deep).stats_socket).encode()) == SOCKET_PATH_MAX
    cfg = _prepare(_snapshot("examples/two-zones.yaml"), "changping", deep)
    out = subprocess.run(
        [HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stdout + out.stderr
    with pytest.raises(ValueError, match="choose a shorter state directory"):
        HaproxyPaths.in_dir(f"{deep}d")


def test_tls_bundles_take_paths_relative_to_the_topology_file() -> None:
    snap = _snapshot("tests/lb/haproxy/golden/full.yaml")
    paths = HaproxyPaths.in_dir("/run/x")
    assert tls_bundles(snap, "east", paths) == {
        paths.tls_bundle("tls"): [
            "tests/lb/haproxy/golden/cert.pem",
            "tests/lb/haproxy/golden/key.pem",
        ],
        paths.tls_bundle("h1only"): [
            "tests/lb/haproxy/golden/cert.pem",
            "tests/lb/haproxy/golden/key.pem",
        ],
    }
    assert tls_bundles(snap, "west", paths) == {}
    remote = Snapshot(1, snap.topology, "http://control.test:8000")
    assert tls_bundles(remote, "east", paths)[paths.tls_bundle("tls")] == ["cert.pem", "key.pem"]


def test_pools_and_spill_servers() -> None:
    snap = _snapshot("tests/lb/haproxy/golden/full.yaml")
    assert rendered_pools(snap, "east") == [
        "api",
        "api-west",
        "cookie",
        "db",
        "query",
        "rand",
        "static",
    ]
    # api-west is rendered as api's backup, with no spill servers of its own.
    assert spill_pools(snap, "east") == {"api": "api-west"}
    assert spill_pools(_snapshot("examples/two-zones.yaml"), "changping") == {"web-cp": "web-yq"}


def _pool(balance: str, weights: list[int]) -> Pool:
    return Pool.model_validate(
        {
            "zone": "z",
            "balance": balance,
            "backends": [
                {"address": f"127.0.0.1:{i + 1}", "weight": w} for i, w in enumerate(weights)
            ],
        }
    )


@given(
    st.lists(st.integers(0, 10000), min_size=1, max_size=8),
    st.sampled_from(["weighted", "random", "least_conn"]),
)
def test_base_weight_keeps_proportions_in_haproxy_range(weights: list[int], balance: str) -> None:
    pool = _pool(balance, weights)
    got = [base_weight(pool, b) for b in pool.backends]
    assert all(0 <= g <= WEIGHT_MAX for g in got)
    assert [g == 0 for g in got] == [w == 0 for w in weights]
    if max(weights) > 0:
        assert max(got) == WEIGHT_MAX
        for w, g in zip(weights, got, strict=True):
            if w:
                assert abs(g - w * WEIGHT_MAX / max(weights)) <= 1


def test_round_robin_ignores_weights() -> None:
    pool = _pool("round_robin", [1, 7, 0])
    assert [base_weight(pool, b) for b in pool.backends] == [WEIGHT_MAX, WEIGHT_MAX, 0]


@given(st.integers(100, 599), st.integers(0, 499))
def test_status_regex_matches_exactly_the_range(low: int, span: int) -> None:
    high = min(599, low + span)
    rx = re.compile(status_regex(StatusRange(low, high)))
    for code in range(100, 600):
        assert bool(rx.fullmatch(str(code))) == (low <= code <= high), code


def _builtin_accepts_host(value: str) -> bool:
    try:
        http1._host_without_port(value.encode("latin-1"))
    except HttpParseError:
        return False
    return True


def _ipv6_forms(addr: ipaddress.IPv6Address) -> st.SearchStrategy[str]:
    forms = [str(addr), addr.exploded, addr.compressed.upper()]
    if addr.ipv4_mapped is not None:
        forms.append(f"::ffff:{addr.ipv4_mapped}")
    return st.sampled_from(forms)


_HOST_CHARS = "aZ09.-_~!$&'()*+;=%:[]@/, \tfF"  # no LF: HAProxy ends a field there

_HOSTS = st.one_of(
    st.text(_HOST_CHARS, max_size=12),
    st.builds(
        lambda ip, port, broken: f"[{ip[:-1] if broken else ip}]{port}",
        st.ip_addresses(v=6).flatmap(_ipv6_forms),
        st.sampled_from(["", ":", ":80", ":8o"]),
        st.booleans(),
    ),
    st.builds(
        lambda a, b: f"[{a}:{b}]",
        st.text("0123456789abcdef:.", max_size=20),
        st.text("0f:", max_size=4),
    ),
)


@given(_HOSTS)
def test_host_regex_accepts_what_the_builtin_parser_accepts(host: str) -> None:
    """The rendered Host/authority check is lb/http1.py's, in HAProxy's regex syntax
    (PCRE2 reads this pattern as Python's re does)."""
    assert (re.search(HOST_REGEX, host) is not None) == _builtin_accepts_host(host), host


def test_host_regex_examples() -> None:
    for good in ["app.test", "App.Test.:8080", "[::1]", "[::ffff:10.0.0.1]:80", "", "a%2Db", ":80"]:
        assert re.search(HOST_REGEX, good), good
    for bad in ["a, b", "a b", "u@a", "a/b", "[1:2:3]", "[fe80::1%25eth0]", "a:8o", "[::1]x"]:
        assert not re.search(HOST_REGEX, bad), bad


def test_refusals_are_rendered_in_each_http_frontend_before_any_routing() -> None:
    text = render_config(
        _snapshot("tests/lb/haproxy/golden/full.yaml"), "east", HaproxyPaths.in_dir("/run/x")
    )
    for section in text.split("\n\n"):
        head = section.split("\n", 1)[0]
        if not head.startswith("frontend "):
            continue
        lines = section.splitlines()
        denies = [i for i, line in enumerate(lines) if "http-request deny" in line]
        if "    mode tcp" in lines:
            assert denies == [], head
            continue
        assert len(denies) == 10, head
        first_other = min(
            i for i, line in enumerate(lines) if "use_backend" in line or "set-header" in line
        )
        assert max(denies) < first_other, head
        assert all("hdr Connection close if" in lines[i] for i in denies)


def test_quote_escapes_what_haproxy_would_read() -> None:
    assert quote('a "b" $HOME \\ #x') == '"a \\"b\\" \\$HOME \\\\ #x"'
    assert quote("é\n") == '"\\xc3\\xa9\\x0a"'


# --- real traffic through a rendered config ----------------------------------------

TOPO = """
zones:
  z: {{lb_engine: haproxy}}
pools:
  p:
    zone: z
    backends: [{{address: "{b1}", name: b1}}]
    health: {{active: {{type: http, path: /healthz, interval: 100ms, rise: 1}}}}
  q:
    zone: z
    backends: [{{address: "{b2}", name: b2}}]
    health: {{active: {{type: tcp, interval: 100ms, rise: 1}}}}
  dead:
    zone: z
    backends: [{{address: "127.0.0.1:{refused}"}}]
    health: {{active: {{type: tcp, interval: 100ms, fall: 1}}}}
listeners:
  web:
    zone: z
    bind: 127.0.0.1:{port}
    routes:
      - {{host: a.test, pool: p}}
      - {{host: a.test, path_prefix: /echo/q, pool: q}}
      - {{host: "*.w.test", pool: q}}
      - {{path_prefix: /dead, pool: dead}}
"""


def _start_haproxy(cfg: Path, port: int) -> Proc:
    proc = Proc([HAPROXY, "-db", "-f", str(cfg)]).spawn()
    deadline = time.monotonic() + 10
    while True:
        if proc.proc.poll() is not None:
            raise ProcessError(f"haproxy exited:\n{proc.describe()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise ProcessError(f"haproxy not listening:\n{proc.describe()}") from None
            time.sleep(0.02)


@needs_haproxy
def test_rendered_config_serves_as_the_builtin_proxy_would(state_dir: Path) -> None:
    b1, b2 = start_backends(2)
    try:
        refused = refused_port()

        def start() -> tuple[Proc, int]:
            port = free_port()
            text = TOPO.format(b1=b1.address, b2=b2.address, refused=refused, port=port)
            snap = Snapshot(42, load_topology_text(text), "t.yaml")
            return _start_haproxy(_prepare(snap, "z", state_dir), port), port

        hap, port = retry_addr_in_use(start)
        try:
            _check_traffic(f"http://127.0.0.1:{port}")
            # An absolute-form target routes by its authority, as in the built-in engine.
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET http://A.test/echo/q HTTP/1.1\r\nConnection: close\r\n\r\n")
                resp = http.client.HTTPResponse(s)
                resp.begin()
                assert (resp.status, resp.getheader("x-backend")) == (200, "b2")
        finally:
            hap.kill()
    finally:
        for b in (b1, b2):
            b.kill()


def _check_traffic(url: str) -> None:
    with httpx.Client(base_url=url, timeout=5) as c:
        deadline = time.monotonic() + 10
        while c.get("/", headers={"Host": "a.test"}).status_code != 200:
            assert time.monotonic() < deadline, "b1 never came up"
            time.sleep(0.05)
        r = c.get("/echo", headers={"Host": "A.Test.:80", "X-Forwarded-For": "10.0.0.1"})
        assert (r.status_code, r.headers["x-backend"], r.headers["x-zonegate-version"]) == (
            200,
            "b1",
            "42",
        )
        headers = [(n.lower(), v) for n, v in r.json()["headers"]]
        assert ("x-forwarded-proto", "http") in headers
        assert ("via", "1.1 zonegate") in headers
        assert [v for n, v in headers if n == "x-forwarded-for"] in (
            ["10.0.0.1, 127.0.0.1"],
            ["10.0.0.1", "127.0.0.1"],
        )
        # Longest path prefix of the exact host, then wildcard hosts.
        assert c.get("/echo/q", headers={"Host": "a.test"}).headers["x-backend"] == "b2"
        assert c.get("/", headers={"Host": "x.w.test"}).headers["x-backend"] == "b2"
        # No route: 404 with a short body and the version header.
        r = c.get("/", headers={"Host": "other.test"})
        assert (r.status_code, r.text) == (404, "404 Not Found: no route for this host and path\n")
        assert r.headers["x-zonegate-version"] == "42"
        # A head over the buffer is HAProxy's own 400 (the built-in proxy says 431),
        # answered by the HTTP/1 parser before any rule runs: docs/lb.md "Engines".
        r = c.get("/", headers={"Host": "a.test", "X-Big": "a" * 40000})
        assert r.status_code == 400
        # A dead pool: HAProxy's own 503 carries the short body and the version too.
        r = c.get("/dead", headers={"Host": "other.test"})
        assert r.status_code == 503
        assert r.text == "503 Service Unavailable: no backend available\n"
        assert r.headers["x-zonegate-version"] == "42"


TLS_TOPO = """
zones: {{z: {{lb_engine: haproxy}}}}
pools:
  p:
    zone: z
    backends: [{{address: "127.0.0.1:{refused}", name: x}}]
    health: {{active: null, passive: {{consecutive_failures: 0}}}}
listeners:
  both: {{zone: z, bind: "127.0.0.1:{port}", routes: [{{pool: p}}], tls: {{certificate: c, key: k}}}}
  h1:
    zone: z
    bind: "127.0.0.1:{port2}"
    routes: [{{pool: p}}]
    tls: {{certificate: c, key: k, alpn: [http/1.1]}}
"""


def _alpn(port: int, ctx: ssl.SSLContext) -> str | None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return tls.selected_alpn_protocol()


@needs_haproxy
def test_tls_listener_offers_its_alpn_protocols(state_dir: Path) -> None:
    ca = trustme.CA()
    refused = refused_port()

    def start() -> tuple[Proc, int, int]:
        port, port2 = free_port(), free_port()
        text = TLS_TOPO.format(refused=refused, port=port, port2=port2)
        snap = Snapshot(5, load_topology_text(text), "t.yaml")
        cfg = _prepare(snap, "z", state_dir, ca=ca)
        return _start_haproxy(cfg, port2), port, port2

    hap, port, port2 = retry_addr_in_use(start)
    try:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        assert _alpn(port, ctx) == "h2"
        assert _alpn(port2, ctx) == "http/1.1"
        with httpx.Client(verify=ctx, timeout=5) as c:
            r = c.get(f"https://localhost:{port2}/")
        assert (r.status_code, r.headers["x-zonegate-version"]) == (503, "5")
    finally:
        hap.kill()
