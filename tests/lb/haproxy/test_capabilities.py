"""`zonegate check` knows what each LB engine honours: errors and warnings at file:line."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from zonegate.errors import ConfigErrors
from zonegate.lb.haproxy.capabilities import zone_engine
from zonegate.topology.check import run_check
from zonegate.topology.load import load_topology_text

BASE = """\
zones:
  a: {lb_engine: ENGINE}
pools:
  p:
    zone: a
    backends: [{address: 127.0.0.1:1}]
listeners:
  l:
    zone: a
    bind: 127.0.0.1:2
    routes: [{pool: p}]
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load_topology_text(text, "t.yaml")
    return [str(p) for p in info.value.problems]


def test_engine_defaults_to_builtin_and_the_option_overrides_it() -> None:
    topo = load_topology_text("zones: {a: {}, b: {lb_engine: haproxy}}\n")
    assert zone_engine(topo, "a") == "builtin"
    assert zone_engine(topo, "b") == "haproxy"
    assert zone_engine(topo, "a", "haproxy") == "haproxy"
    with pytest.raises(ValueError, match="unknown engine 'nginx'"):
        zone_engine(topo, "a", "nginx")


def test_unknown_engine_is_refused_at_its_line() -> None:
    assert _problems(BASE.replace("ENGINE", "nginx")) == [
        "t.yaml:2:18: zones.a.lb_engine: expected 'builtin' or 'haproxy', got 'nginx'"
    ]


def test_builtin_refuses_tls() -> None:
    text = BASE.replace("ENGINE", "builtin") + "    tls: {certificate: c.pem, key: k.pem}\n"
    assert _problems(text) == [
        "t.yaml:12:5: listeners.l.tls: TLS needs the haproxy engine: zone 'a' uses "
        "builtin (set zones.a.lb_engine: haproxy)"
    ]


def test_a_listener_of_an_unknown_zone_gets_one_problem() -> None:
    text = BASE.replace("ENGINE", "builtin").replace(
        "    zone: a\n    bind", "    zone: b\n    bind"
    )
    text += "    tls: {certificate: c.pem, key: k.pem}\n"
    assert _problems(text) == ["t.yaml:9:11: listeners.l.zone: unknown zone 'b' (zones: a)"]


def test_haproxy_takes_tls_with_alpn() -> None:
    text = BASE.replace("ENGINE", "haproxy") + (
        "    tls: {certificate: c.pem, key: k.pem, alpn: [http/1.1]}\n"
    )
    tls = load_topology_text(text).listeners["l"].tls
    assert tls is not None
    assert (tls.certificate, tls.key, tls.alpn) == ("c.pem", "k.pem", ["http/1.1"])
    bad = text.replace("alpn: [http/1.1]", "alpn: [spdy]")
    assert _problems(bad) == [
        "t.yaml:12:50: listeners.l.tls.alpn[0]: expected 'h2' or 'http/1.1', got 'spdy'"
    ]


def test_haproxy_refuses_what_it_cannot_honour() -> None:
    text = """\
zones:
  a: {lb_engine: haproxy}
pools:
  p:
    zone: a
    balance: hash
    hash_key: header:x-id
    backends: [{address: 127.0.0.1:1}]
  q:
    zone: a
    backends: [{address: 127.0.0.1:3}]
listeners:
  web:
    zone: a
    bind: 127.0.0.1:2
    routes: [{pool: q}]
    timeouts: {total: 5s}
    version_header: "X Version"
  raw:
    zone: a
    bind: 127.0.0.1:4
    protocol: tcp
    routes: [{pool: p}]
    tls: {certificate: c.pem, key: k.pem, alpn: [h2]}
  raw2:
    zone: a
    bind: 127.0.0.1:5
    protocol: tcp
    routes: [{pool: q}]
"""
    assert _problems(text) == [
        "t.yaml:7:15: pools.p.hash_key: pool 'p' serves a tcp listener of zone 'a': the "
        "haproxy engine can hash only client_ip there, not header:x-id",
        "t.yaml:9:3: pools.q: pool 'q' is reached from both http and tcp listeners of zone "
        "'a': an HAProxy backend has one mode (use two pools)",
        "t.yaml:17:23: listeners.web.timeouts.total: the haproxy engine has no cap on a whole "
        "exchange: remove timeouts.total, or use lb_engine: builtin",
        "t.yaml:18:21: listeners.web.version_header: invalid header name 'X Version': "
        "expected a token",
        "t.yaml:24:43: listeners.raw.tls.alpn: alpn applies to http listeners, not to "
        "protocol: tcp",
    ]
    # The same file is fine for the built-in engine.
    load_topology_text(
        text.replace("lb_engine: haproxy", "lb_engine: builtin").replace(
            "    tls: {certificate: c.pem, key: k.pem, alpn: [h2]}\n", ""
        )
    )


def test_haproxy_refuses_hash_key_names_it_cannot_write() -> None:
    text = BASE.replace("ENGINE", "haproxy").replace(
        "    zone: a\n    backends",
        "    zone: a\n    balance: hash\n    hash_key: cookie:a'b\n    backends",
        1,
    )
    assert _problems(text) == [
        "t.yaml:7:15: pools.p.hash_key: the haproxy engine takes hash key names of "
        "letters, digits, '_', '.' and '-' only, not \"a'b\""
    ]
    load_topology_text(text.replace("lb_engine: haproxy", "lb_engine: builtin"))


def test_haproxy_needs_a_name_for_an_ipv6_backend() -> None:
    text = BASE.replace("ENGINE", "haproxy").replace("127.0.0.1:1", '"[::1]:1"')
    assert _problems(text) == [
        "t.yaml:6:26: pools.p.backends[0].address: the haproxy engine names a server by its "
        "backend's id, and [::1]:1 cannot be an HAProxy server name: give it a name"
    ]
    load_topology_text(text.replace("lb_engine: haproxy", "lb_engine: builtin"))
    load_topology_text(text.replace('"[::1]:1"', '"[::1]:1", name: v6'))


def test_check_warns_where_haproxy_behaves_differently(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        """\
zones:
  a: {lb_engine: haproxy}
pools:
  p:
    zone: a
    backends: [{address: 127.0.0.1:1}]
    health:
      passive: {base_ejection: 1s, max_ejected_percent: 30}
  q:
    zone: a
    backends: [{address: 127.0.0.1:3}]
    health: {active: null}
listeners:
  l:
    zone: a
    bind: 127.0.0.1:2
    routes: [{pool: p}, {host: q.test, pool: q}]
    limits: {request_line_bytes: 4096}
"""
    )
    out, err = io.StringIO(), io.StringIO()
    assert run_check(str(path), out=out, err=err) == 0
    assert err.getvalue().splitlines() == [
        f"{path}:8:17: pools.p.health.passive.base_ejection: warning: haproxy engine: "
        "base_ejection is not applied: after consecutive_failures errors HAProxy marks the "
        "server down until its active check passes rise times",
        f"{path}:8:36: pools.p.health.passive.max_ejected_percent: warning: haproxy engine: "
        "max_ejected_percent is not applied: after consecutive_failures errors HAProxy marks "
        "the server down until its active check passes rise times",
        f"{path}:12:5: pools.q.health.passive.consecutive_failures: warning: haproxy engine: "
        "no passive ejection without an active check (a server HAProxy marks down comes "
        "back only by its check); set health.active",
        f"{path}:18:14: listeners.l.limits.request_line_bytes: warning: haproxy engine: no "
        "separate request-line limit; the line counts in the head buffer sized from "
        "header_bytes + request_line_bytes",
    ]
    assert "OK (4 warnings)" in out.getvalue()
    # The built-in engine honours all of it: no warning.
    path.write_text(path.read_text().replace("lb_engine: haproxy", "lb_engine: builtin"))
    out, err = io.StringIO(), io.StringIO()
    assert run_check(str(path), out=out, err=err) == 0
    assert err.getvalue() == ""


def test_check_warns_that_leastconn_ramps_slow_start_only_under_load(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        """\
zones:
  a: {lb_engine: haproxy}
pools:
  p:
    zone: a
    balance: least_conn
    backends: [{address: 127.0.0.1:1}]
    health: {slow_start: 10s}
listeners:
  l:
    zone: a
    bind: 127.0.0.1:2
    routes: [{pool: p}]
"""
    )
    out, err = io.StringIO(), io.StringIO()
    assert run_check(str(path), out=out, err=err) == 0
    assert err.getvalue().splitlines() == [
        f"{path}:8:14: pools.p.health.slow_start: warning: haproxy engine: leastconn ramps a "
        "slow-starting server only while the pool is busy; in an idle pool it takes its full "
        "share at once",
    ]
    path.write_text(path.read_text().replace("lb_engine: haproxy", "lb_engine: builtin"))
    out, err = io.StringIO(), io.StringIO()
    assert run_check(str(path), out=out, err=err) == 0
    assert err.getvalue() == ""
