"""The loader: YAML with line marks -> schema -> cross-references, every problem located."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from zonegate.errors import ConfigErrors
from zonegate.topology.load import load_topology, load_topology_text, render_path
from zonegate.topology.types import HostPort

ZONES = """\
zones:
  cp: {region: north}
  yq: {region: west}
"""


def problems(*parts: str) -> list[str]:
    """The rendered problems of a topology given as YAML parts, each dedented."""
    with pytest.raises(ConfigErrors) as info:
        load_topology_text("".join(textwrap.dedent(p) for p in parts), filename="t.yaml")
    return [str(p) for p in info.value.problems]


def test_minimal_topology_loads() -> None:
    topo = load_topology_text(
        ZONES
        + textwrap.dedent("""\
        pools:
          web:
            zone: cp
            backends:
              - address: 127.0.0.1:8101
            health: {active: {interval: 250ms}}
        """)
    )
    pool = topo.pools["web"]
    assert pool.backends[0].address == HostPort("127.0.0.1", 8101)
    assert pool.health.active is not None
    assert pool.health.active.interval == 0.25
    assert pool.balance == "weighted"


def test_unknown_key_suggests_the_closest() -> None:
    assert problems(
        ZONES,
        """\
        pools:
          web:
            zone: cp
            backend:
              - address: 127.0.0.1:8101
        """,
    ) == [
        "t.yaml:5:3: pools.web: missing required key 'backends'",
        "t.yaml:7:5: pools.web: unknown key 'backend' (did you mean 'backends'?)",
    ]


def test_unknown_key_lists_the_allowed_ones() -> None:
    assert problems(
        """\
        zones:
          cp:
            colour: blue
        """
    ) == [
        "t.yaml:3:5: zones.cp: unknown key 'colour' (allowed: region, lb_admin, vips, weight, capacity, health, lb_engine)"
    ]


def test_wrong_types() -> None:
    assert problems(
        ZONES,
        """\
        pools:
          web:
            zone: cp
            backends:
              - address: 127.0.0.1:8101
                weight: x
              - address: 127.0.0.1:8102
                weight: true
            retries: "3"
            panic_threshold: 2
            balance: rr
        """,
    ) == [
        "t.yaml:9:17: pools.web.backends[0].weight: expected an integer, got 'x'",
        "t.yaml:11:17: pools.web.backends[1].weight: expected an integer, got true",
        "t.yaml:12:14: pools.web.retries: expected an integer, got '3'",
        "t.yaml:13:22: pools.web.panic_threshold: must be ≤ 1.0, got 2",
        "t.yaml:14:14: pools.web.balance: expected 'random', 'round_robin', 'weighted', "
        "'hash', 'least_conn' or 'least_load', got 'rr'",
    ]


def test_missing_key_points_at_the_parent() -> None:
    assert problems(
        ZONES,
        """\
        pools:
          web:
            zone: cp
            backends:
              - weight: 2
        listeners:
          http:
            zone: cp
            routes: [{pool: web}]
        """,
    ) == [
        "t.yaml:8:9: pools.web.backends[0]: missing required key 'address'",
        "t.yaml:10:3: listeners.http: missing required key 'bind'",
    ]


def test_missing_zones() -> None:
    assert problems("pools: {}\n") == ["t.yaml:1:1: missing required key 'zones'"]


def test_duplicate_key_names_both_lines() -> None:
    assert problems(
        ZONES,
        """\
        pools:
          web-cp:
            zone: cp
            backends: [{address: 127.0.0.1:8101}]
          web-yq:
            zone: yq
            backends: [{address: 127.0.0.1:8201}]
          web-cp:
            zone: cp
            zone: yq
            backends: [{address: 127.0.0.1:8102}]
        """,
    ) == [
        "t.yaml:11:3: pools: duplicate key 'web-cp' (first at line 5)",
        "t.yaml:13:5: pools.web-cp: duplicate key 'zone' (first at line 12)",
    ]


def test_duplicate_backend_names_and_addresses() -> None:
    assert problems(
        ZONES,
        """\
        pools:
          web:
            zone: cp
            backends:
              - {address: 127.0.0.1:8101, name: a}
              - {address: 127.0.0.1:8102, name: a}
              - {address: 127.0.0.1:8101}
        """,
    ) == [
        "t.yaml:9:41: pools.web.backends[1].name: duplicate backend 'a' (also backends[0])",
        "t.yaml:10:19: pools.web.backends[2].address: "
        "duplicate backend address 127.0.0.1:8101 (also backends[0])",
    ]


def test_unknown_zone() -> None:
    assert problems(
        ZONES,
        """\
        pools:
          web:
            zone: foo
            backends: [{address: 127.0.0.1:8101}]
        """,
    ) == ["t.yaml:6:11: pools.web.zone: unknown zone 'foo' (zones: cp, yq)"]


def test_backup_cycle_of_three() -> None:
    assert problems(
        ZONES,
        """\
        pools:
          a:
            zone: cp
            backends: [{address: 127.0.0.1:8101}]
            backup: b
          b:
            zone: yq
            backends: [{address: 127.0.0.1:8201}]
            backup: c
          c:
            zone: cp
            backends: [{address: 127.0.0.1:8301}]
            backup: a
        """,
    ) == [
        "t.yaml:8:13: pools.a.backup: backup cycle: a -> b -> c -> a "
        "(only two pools in different zones may back each other up)"
    ]


def test_self_backup() -> None:
    assert problems(
        ZONES,
        """\
        pools:
          a:
            zone: cp
            backends: [{address: 127.0.0.1:8101}]
            backup: a
        """,
    ) == ["t.yaml:8:13: pools.a.backup: pool 'a' is its own backup"]


def test_mutual_backup_across_zones_is_allowed() -> None:
    topo = load_topology_text(
        ZONES
        + textwrap.dedent("""\
        pools:
          a: {zone: cp, backends: [{address: 127.0.0.1:8101}], backup: b}
          b: {zone: yq, backends: [{address: 127.0.0.1:8201}], backup: a}
        """)
    )
    assert topo.pools["a"].backup == "b"
    assert topo.pools["b"].backup == "a"


def test_invalid_addresses() -> None:
    assert problems(
        ZONES,
        """\
        pools:
          web:
            zone: cp
            backends:
              - address: 300.1.1.1:80
              - address: 127.0.0.1:70000
              - address: "[::1]:80"
        listeners:
          http: {zone: cp, bind: 8080, routes: [{pool: web}]}
        """,
    ) == [
        "t.yaml:8:18: pools.web.backends[0].address: "
        "invalid address '300.1.1.1:80': '300.1.1.1' is not a valid IPv4 address",
        "t.yaml:9:18: pools.web.backends[1].address: "
        "invalid address '127.0.0.1:70000': port must be a number from 1 to 65535",
        "t.yaml:12:26: listeners.http.bind: expected an address 'host:port', got 8080",
    ]


def test_durations_need_units() -> None:
    assert problems(
        ZONES,
        """\
        pools:
          web:
            zone: cp
            backends: [{address: 127.0.0.1:8101}]
            health:
              active: {interval: 1, timeout: 1 sec}
        """,
    ) == [
        "t.yaml:9:26: pools.web.health.active.interval: "
        "duration 1 needs a unit, e.g. '1s' or '1ms'",
        "t.yaml:9:38: pools.web.health.active.timeout: "
        "invalid duration '1 sec': expected a number and a unit (us, ms, s, m, h)",
    ]


def test_duration_with_a_blank_is_refused_at_its_line() -> None:
    # issue 12 item 28: `interval: 1 s` used to load as 1s; the one written form is `1s`.
    assert problems(
        ZONES,
        """\
        pools:
          web:
            zone: cp
            backends: [{address: 127.0.0.1:8101}]
            health:
              active:
                interval: 1 s
        """,
    ) == [
        "t.yaml:10:19: pools.web.health.active.interval: "
        "invalid duration '1 s': no blanks in a duration, write '1s'",
    ]


def test_split_overlap_and_gap() -> None:
    assert problems(
        ZONES,
        """\
        split:
          api.example.test:
            sharding: 100
            zones:
              cp: {lower: 0, upper: 60, domain: api-cp.example.test}
              yq: {lower: 40, upper: 90, domain: api-yq.example.test}
        """,
    ) == [
        't.yaml:7:5: split["api.example.test"].zones: gap [90, 100) not covered',
        't.yaml:9:7: split["api.example.test"].zones.yq: zones cp and yq overlap on [40, 60)',
    ]


def test_split_bounds() -> None:
    assert problems(
        ZONES,
        """\
        split:
          api.example.test:
            sharding: 100
            zones:
              cp: {lower: 0, upper: 150, domain: api-cp.example.test}
              yq: {lower: 100, upper: 100, domain: api-yq.example.test}
        """,
    ) == ['t.yaml:8:29: split["api.example.test"].zones.cp.upper: upper 150 is above sharding 100']


def test_bad_name() -> None:
    assert problems(
        """\
        zones:
          cp: {}
          "chang ping": {}
        """
    ) == [
        "t.yaml:3:3: zones: invalid name 'chang ping': "
        "use 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "zones:\n  cp: {region: [north\n",
            "t.yaml:3:1: invalid YAML: expected ',' or ']', but got '<stream end>' "
            "(while parsing a flow sequence at line 2, column 16)",
        ),
        (
            "zones:\n  cp: {}\n bad: 1\n",
            "t.yaml:3:2: invalid YAML: expected <block end>, but found '<block mapping start>' "
            "(while parsing a block mapping at line 1, column 1)",
        ),
        (
            "zones:\n\tcp: {}\n",
            "t.yaml:2:1: invalid YAML: found character '\\t' that cannot start any token",
        ),
        (
            "zones: {cp: {}}\n---\nzones: {}\n",
            "t.yaml:2:1: invalid YAML: but found another document "
            "(expected a single document in the stream at line 1, column 1)",
        ),
    ],
)
def test_yaml_syntax_errors(text: str, expected: str) -> None:
    assert problems(text) == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "t.yaml:1:1: empty topology: expected a mapping with 'zones'"),
        ("# nothing yet\n", "t.yaml:1:1: empty topology: expected a mapping with 'zones'"),
        ("- a\n", "t.yaml:1:1: expected a mapping with 'zones' at the top level, got a list"),
        ("zones:\n", "t.yaml:1:1: zones: expected a mapping, got null"),
        ("zones: {}\n", "t.yaml:1:8: zones: must not be empty"),
        ("zones: {cp: !x {}}\n", "t.yaml:1:13: zones.cp: unsupported YAML tag '!x'"),
        ("zonez: {}\n", "t.yaml:1:1: missing required key 'zones'"),
    ],
)
def test_degenerate_documents(text: str, expected: str) -> None:
    assert expected in problems(text)


def test_unknown_top_level_key() -> None:
    assert problems(ZONES, "pool: {}\n") == [
        "t.yaml:4:1: unknown key 'pool' (did you mean 'pools'?)"
    ]


def test_alias_bomb_is_bounded() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcde", "bcdef", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    assert problems("\n".join(lines) + "\n") == [
        "t.yaml:1:1: document too large: more than 200000 values (aliases?)"
    ]


def test_anchors_and_merge_keys_work() -> None:
    topo = load_topology_text(
        ZONES
        + textwrap.dedent("""\
        pools:
          a:
            zone: cp
            backends: [{address: 127.0.0.1:8101}]
            health: &checks
              active: {type: http, path: /healthz}
          b:
            zone: yq
            backends: [{address: 127.0.0.1:8201}]
            health: *checks
          c:
            <<: {zone: yq, backends: [{address: 127.0.0.1:8301}]}
            balance: random
        """)
    )
    assert topo.pools["b"].health == topo.pools["a"].health
    assert topo.pools["c"].zone == "yq"


def test_schema_and_cross_reference_problems_together() -> None:
    # `broken` fails the schema; a route to it is not also reported as unknown,
    # but a route to a pool that does not exist at all is.
    assert problems(
        ZONES,
        """\
        pools:
          broken:
            zone: cp
            backends: []
        listeners:
          http:
            zone: cp
            bind: 127.0.0.1:8080
            routes:
              - {host: a.test, pool: broken}
              - {pool: missing}
        """,
    ) == [
        "t.yaml:7:15: pools.broken.backends: must not be empty",
        "t.yaml:14:16: listeners.http.routes[1].pool: unknown pool 'missing' (pools: broken)",
    ]


def test_load_topology_reads_files(tmp_path: Path) -> None:
    path = tmp_path / "topo.yaml"
    path.write_text(ZONES, encoding="utf-8")
    assert list(load_topology(path).zones) == ["cp", "yq"]
    assert list(load_topology(str(path)).zones) == ["cp", "yq"]


def test_load_topology_file_problems(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigErrors) as info:
        load_topology(missing)
    assert [str(p) for p in info.value.problems] == [
        f"{missing}: cannot read topology file: No such file or directory"
    ]
    with pytest.raises(ConfigErrors, match="cannot read topology file: Is a directory"):
        load_topology(tmp_path)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"zones: {caf\xe9: {}}\n")
    with pytest.raises(ConfigErrors, match=r"not UTF-8 text \(invalid byte at offset 11\)"):
        load_topology(latin1)
    bad = tmp_path / "bad.yaml"
    bad.write_text("zones:\n  cp: {region: 1}\n", encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_topology(bad)
    assert [str(p) for p in info.value.problems] == [
        f"{bad}:2:16: zones.cp.region: expected a string, got 1"
    ]


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ((), ""),
        (("pools", "web-cp", "backends", 2, "weight"), "pools.web-cp.backends[2].weight"),
        (("split", "api.example.test", "zones"), 'split["api.example.test"].zones'),
        (("zones", "chang ping"), 'zones["chang ping"]'),
        (("a.b",), '["a.b"]'),
    ],
)
def test_render_path(path: tuple[str | int, ...], text: str) -> None:
    assert render_path(path) == text


def test_standard_tags_are_accepted() -> None:
    topo = load_topology_text("zones: !!map\n  cp: {region: !!str 5}\n")
    assert topo.zones["cp"].region == "5"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("zones:\n  a: {{b: [1]}}\n", "t.yaml:2:7: zones.a: unsupported mapping key (a mapping)"),
        (
            "zones:\n  a:\n    ? [1, 2]\n    : x\n",
            "t.yaml:3:7: zones.a: unsupported mapping key (a list)",
        ),
    ],
)
def test_mapping_or_list_as_a_key_is_an_error_not_a_crash(text: str, expected: str) -> None:
    with pytest.raises(ConfigErrors) as info:
        load_topology_text(text, filename="t.yaml")
    assert [str(p) for p in info.value.problems] == [expected]
