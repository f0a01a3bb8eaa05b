"""The example topologies and `zonegate check` (run_check) on them."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from zonegate.errors import ConfigErrors
from zonegate.topology.check import run_check
from zonegate.topology.load import load_topology
from zonegate.topology.types import HostPort

ROOT = Path(__file__).resolve().parents[2]

BAD_PROBLEMS = [
    "examples/bad.yaml:12:5: zones.yanqing: unknown key 'regoin' (did you mean 'region'?)",
    "examples/bad.yaml:19:18: pools.web-cp.backends[1].address: "
    "duplicate backend address 127.0.0.1:8101 (also backends[0])",
    "examples/bad.yaml:22:24: pools.web-cp.health.passive.base_ejection: "
    "base_ejection (600s) is longer than max_ejection (300s)",
    "examples/bad.yaml:24:13: pools.web-cp.backup: backup cycle: "
    "web-cp -> web-yq -> web-bj -> web-cp "
    "(only two pools in different zones may back each other up)",
    "examples/bad.yaml:31:11: pools.web-bj.zone: unknown zone 'beijing' "
    "(zones: changping, yanqing)",
    "examples/bad.yaml:37:14: pools.static.balance: expected 'random', 'round_robin', "
    "'weighted', 'hash', 'least_conn' or 'least_load', got 'rr'",
    "examples/bad.yaml:39:18: pools.static.backends[0].address: "
    "invalid address '300.1.1.1:8401': '300.1.1.1' is not a valid IPv4 address",
    "examples/bad.yaml:41:17: pools.static.backends[1].weight: must be ≥ 0, got -1",
    "examples/bad.yaml:44:19: pools.static.health.active.interval: "
    "duration 2 needs a unit, e.g. '2s' or '2ms'",
    "examples/bad.yaml:45:3: pools.api: missing required key 'backends'",
    "examples/bad.yaml:47:3: pools: duplicate key 'web-yq' (first at line 25)",
    "examples/bad.yaml:59:15: listeners.http-cp.routes[1].pool: "
    "unknown pool 'web-xx' (pools: api, static, web-bj, web-cp, web-yq)",
    "examples/bad.yaml:62:11: listeners.tcp-cp.bind: "
    "address 127.0.0.1:8080 is already bound by listener 'http-cp'",
    "examples/bad.yaml:65:15: listeners.tcp-cp.routes[0].host: a tcp listener cannot route by host",
    'examples/bad.yaml:71:5: split["api.example.test"].zones: gap [40, 50) not covered',
    'examples/bad.yaml:73:48: split["api.example.test"].zones.yanqing.domain: '
    "invalid domain 'api_yq.example.test': expected a DNS name",
]


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # Problems name the file as given: run from the root so they read examples/....
    monkeypatch.chdir(ROOT)


def test_two_zones_loads_clean() -> None:
    topo = load_topology("examples/two-zones.yaml")
    assert list(topo.zones) == ["changping", "yanqing"]
    assert topo.zones["changping"].lb_admin == HostPort("127.0.0.1", 9901)
    cp, yq = topo.pools["web-cp"], topo.pools["web-yq"]
    assert (cp.zone, cp.backup, cp.balance) == ("changping", "web-yq", "weighted")
    assert (yq.zone, yq.backup, yq.balance) == ("yanqing", "web-cp", "least_load")
    assert [b.address.port for b in cp.backends] == [8101, 8102, 8103]
    assert [b.address.port for b in yq.backends] == [8201, 8202, 8203]
    assert cp.health.slow_start == 5.0
    assert cp.health.active is not None
    assert cp.health.active.type == "http"
    assert cp.health.active.path == "/healthz"
    assert topo.listeners["http-cp"].bind == HostPort("127.0.0.1", 8080)
    assert [r.host for r in topo.listeners["http-cp"].routes] == ["api.example.test", None]
    assert topo.listeners["http-yq"].bind == HostPort("127.0.0.1", 8090)
    split = topo.split["api.example.test"]
    assert split.sharding == 100
    assert {z: (s.lower, s.upper, s.domain) for z, s in split.zones.items()} == {
        "changping": (0, 50, "api-cp.example.test"),
        "yanqing": (50, 100, "api-yq.example.test"),
    }


def test_bad_yaml_reports_every_problem_in_file_order() -> None:
    with pytest.raises(ConfigErrors) as info:
        load_topology("examples/bad.yaml")
    assert [str(p) for p in info.value.problems] == BAD_PROBLEMS


def test_every_mistake_in_bad_yaml_is_reported() -> None:
    # Each line bad.yaml marks with a trailing comment is a mistake with a problem.
    lines = (ROOT / "examples/bad.yaml").read_text(encoding="utf-8").splitlines()
    marked = {
        n
        for n, line in enumerate(lines, 1)
        if "#" in line and not line.lstrip().startswith("#") and "not reported" not in line
    }
    reported = {int(p.split(":")[1]) for p in BAD_PROBLEMS}
    assert len(marked) >= 14
    assert marked <= reported


def test_run_check_ok() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run_check("examples/two-zones.yaml", out=out, err=err) == 0
    assert out.getvalue() == (
        "examples/two-zones.yaml: OK — 2 zones, 2 pools (6 backends), 2 listeners, 1 split map\n"
    )
    assert err.getvalue() == ""


def test_run_check_problems() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run_check("examples/bad.yaml", out=out, err=err) == 1
    assert out.getvalue() == ""
    assert err.getvalue().splitlines() == [*BAD_PROBLEMS, "examples/bad.yaml: 16 errors"]


def test_run_check_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_check("examples/nope.yaml") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "examples/nope.yaml: cannot read topology file: No such file or directory\n"
        "examples/nope.yaml: 1 error\n"
    )


def test_run_check_counts_singular(tmp_path: Path) -> None:
    path = tmp_path / "one.yaml"
    path.write_text(
        "zones: {a: {}}\npools: {p: {zone: a, backends: [{address: 127.0.0.1:1}]}}\n",
        encoding="utf-8",
    )
    out = io.StringIO()
    assert run_check(str(path), out=out, err=io.StringIO()) == 0
    assert out.getvalue() == f"{path}: OK — 1 zone, 1 pool (1 backend), 0 listeners, 0 split maps\n"


def test_run_check_ends_with_a_count_line(tmp_path: Path) -> None:
    # issue 12 item 28: the last line counts the errors (singular for one)
    path = tmp_path / "one.yaml"
    path.write_text("zones: {a: {}}\npools: {p: {zone: b, backends: []}}\n", encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    assert run_check(str(path), out=out, err=err) == 1
    assert err.getvalue().splitlines() == [
        f"{path}:2:32: pools.p.backends: must not be empty",
        f"{path}: 1 error",
    ]
    assert out.getvalue() == ""


def test_docs_show_the_real_check_output() -> None:
    doc = (ROOT / "docs/topology.md").read_text(encoding="utf-8").splitlines()
    start = doc.index("$ zonegate check examples/bad.yaml") + 1
    end = doc.index("$ echo $?", start)
    assert doc[start:end] == [*BAD_PROBLEMS, "examples/bad.yaml: 16 errors"]
    ok = doc.index("$ zonegate check examples/two-zones.yaml") + 1
    assert doc[ok] == (
        "examples/two-zones.yaml: OK — 2 zones, 2 pools (6 backends), 2 listeners, 1 split map"
    )
