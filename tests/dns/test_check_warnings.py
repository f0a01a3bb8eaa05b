"""`zonegate check` warns about GSLB zones whose health cannot be probed."""

from __future__ import annotations

import io
from pathlib import Path

from zonegate.topology.check import config_warnings, run_check
from zonegate.topology.load import load_topology

TOPOLOGY = """\
zones:
  z1:
    vips: [127.0.0.11]
  z2:
    vips: [127.0.0.12]
    lb_admin: 127.0.0.1:9902
  z3:
    vips: [127.0.0.13]
    health: {type: lb_status, interval: 1s}
  z4:
    vips: [127.0.0.14]
    health: {type: tcp}
dns:
  domains:
    example.test:
      ns: [ns1]
      records:
        ns1: [{type: A, value: 192.0.2.53}]
      gslb:
        api: {preferred: [weight]}
"""


def test_lb_status_without_lb_admin_is_a_warning_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(TOPOLOGY)
    out, err = io.StringIO(), io.StringIO()
    assert run_check(str(path), out=out, err=err) == 0  # usable: a warning, not an error
    assert "OK (2 warnings)" in out.getvalue()
    lines = err.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{path}:2:3: zones.z1: warning: health check lb_status")
    assert "no lb_admin" in lines[0]
    assert "always up" in lines[0]
    assert lines[1].startswith(f"{path}:9:14: zones.z3: warning:")  # at health.type
    # z2 has lb_admin; z4's tcp check defaults to its first VIP: nothing to say


def test_no_warning_without_gslb_names(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("zones:\n  z1:\n    vips: [127.0.0.11]\n")
    assert config_warnings(str(path), load_topology(path)) == []


def test_zones_no_gslb_name_answers_are_not_warned_about(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(TOPOLOGY.replace("api: {preferred: [weight]}", "api: {zones: [z2]}"))
    assert config_warnings(str(path), load_topology(path)) == []


def test_available_sessions_needs_lb_status_zones(tmp_path: Path) -> None:
    """Issue 12 item 15: `available_sessions` ranks by the sessions an LB reports in
    /status; a candidate with a tcp check would always look empty, so check refuses it
    at the method's line."""
    path = tmp_path / "t.yaml"
    path.write_text(
        TOPOLOGY.replace("api: {preferred: [weight]}", "api: {preferred: [available_sessions]}")
    )
    out, err = io.StringIO(), io.StringIO()
    assert run_check(str(path), out=out, err=err) == 1
    (error,) = [line for line in err.getvalue().splitlines() if "needs the sessions" in line]
    assert error.startswith(f"{path}:20:27:")  # at the method
    assert 'dns.domains["example.test"].gslb.api.preferred[0]' in error
    assert "zone z4 reports" in error
    assert "zones.z4.health.type is tcp" in error
    # Candidates that all report sessions: fine.
    path.write_text(
        TOPOLOGY.replace(
            "api: {preferred: [weight]}",
            "api: {zones: [z2, z3], preferred: [available_sessions, weight]}",
        )
    )
    assert run_check(str(path), out=io.StringIO(), err=io.StringIO()) == 0
