"""The agent's admin endpoint (over a live Agent object, no sockets) and the CLI's edges."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from zonegate.cli import main
from zonegate.topology.load import load_topology_text
from zonegate.vrrp.admin import AdminApp
from zonegate.vrrp.agent import Agent, AgentOptions, machine_config
from zonegate.vrrp.machine import Machine, Startup, TimerFired
from zonegate.vrrp.track import CheckSpec, Tracker

TOPO = """\
zones:
  lab: {vips: [10.9.0.100], lb_admin: 127.0.0.1:9901}
vrrp:
  instances:
    n1:
      zone: lab
      interface: eth0
      vrid: 51
      priority: 150
      track: [{type: lb, weight: 60}]
"""


@pytest.fixture
def agent() -> Agent:
    topo = load_topology_text(TOPO)
    inst = topo.vrrp.instances["n1"]
    a = Agent(topo, "n1", inst, AgentOptions(path="t.yaml", instance="n1"))
    a.primary = IPv4Address("10.9.0.1")
    cfg = machine_config(topo, inst, a.primary)
    a.machine = Machine(cfg, 0.0)
    a.machine.handle(Startup(), 0.0)
    a.machine.handle(TimerFired(), a.machine.deadline)
    a.tracker = Tracker(150, [CheckSpec("lb 127.0.0.1:9901", 60, 2, 2)])
    a.tracker.record(0, False)
    a.stats.adverts_sent = 7
    a.stats.drops["bad_ttl"] = 2
    a.stats.transitions["Master"] = 1
    return a


async def test_status_document(agent: Agent):
    status, ctype, body = await AdminApp(agent).handle("GET", "/status")
    assert status == 200
    assert ctype == "application/json"
    doc = json.loads(body)
    for key in (
        "instance",
        "state",
        "priority",
        "effective_priority",
        "vrid",
        "interface",
        "vips",
        "master_ip",
        "transitions",
        "adverts_sent",
        "adverts_received",
        "drops",
        "garp_sent",
        "garp_failed",
    ):
        assert key in doc
    assert doc["state"] == "Master"
    assert doc["vips"] == ["10.9.0.100/32"]
    assert doc["drops"]["bad_ttl"] == 2
    assert doc["adverts_sent"] == 7
    assert doc["track"] == [{"name": "lb 127.0.0.1:9901", "state": "down", "weight": 60}]


async def test_metrics(agent: Agent):
    status, ctype, body = await AdminApp(agent).handle("GET", "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain")
    text = body.decode()
    assert 'zonegate_vrrp_state{instance="n1",vrid="51"} 2.0' in text
    assert 'zonegate_vrrp_adverts_sent_total{instance="n1",vrid="51"} 7.0' in text
    assert 'zonegate_vrrp_drops_total{instance="n1",reason="bad_ttl",vrid="51"} 2.0' in text
    assert 'zonegate_vrrp_transitions_total{instance="n1",to="Master",vrid="51"} 1.0' in text
    assert 'zonegate_vrrp_track_up{check="lb 127.0.0.1:9901",instance="n1",vrid="51"} 0.0' in text
    assert 'zonegate_vrrp_garp_failed_total{instance="n1",vrid="51"} 0.0' in text
    assert "zonegate_vrrp_lease_held" not in text


async def test_unknown_path_and_method(agent: Agent):
    assert (await AdminApp(agent).handle("GET", "/nope"))[0] == 404
    assert (await AdminApp(agent).handle("POST", "/status"))[0] == 405


def test_cli_help_mentions_the_essentials(capsys):
    with pytest.raises(SystemExit) as info:
        main(["vrrp", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for word in ("--instance", "--admin", "--interface", "--priority", "SIGTERM", "status"):
        assert word in out


def test_cli_needs_an_instance(tmp_path: Path, capsys):
    path = tmp_path / "t.yaml"
    path.write_text(TOPO)
    assert main(["vrrp", str(path)]) == 2
    assert "--instance" in capsys.readouterr().err


def test_cli_unknown_instance(tmp_path: Path, capsys):
    path = tmp_path / "t.yaml"
    path.write_text(TOPO)
    assert main(["vrrp", str(path), "--instance", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no instance 'nope'" in err
    assert "vrrp.instances: n1" in err


def test_cli_bad_topology(tmp_path: Path, capsys):
    path = tmp_path / "t.yaml"
    path.write_text(TOPO.replace("vrid: 51", "vrid: 300"))
    assert main(["vrrp", str(path), "--instance", "n1"]) == 1
    assert "vrid: must be ≤ 255" in capsys.readouterr().err


def test_cli_status_needs_admin(capsys):
    assert main(["vrrp", "status"]) == 2
    assert "--admin" in capsys.readouterr().err


def test_cli_status_unreachable(capsys):
    from tests.peers.processes import refused_port

    assert main(["vrrp", "status", "--admin", f"127.0.0.1:{refused_port()}"]) == 1
    assert "zonegate vrrp status" in capsys.readouterr().err


def test_cli_status_help_is_the_status_commands(capsys):
    """Issue 12 item 28: `vrrp status --help` described the agent (FILE, --instance)."""
    with pytest.raises(SystemExit) as exc:
        main(["vrrp", "status", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: zonegate vrrp status")
    assert "--admin" in out
    assert "--instance" not in out


def test_cli_status_bad_admin_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["vrrp", "status", "--admin", "nowhere"])
    assert exc.value.code == 2
    assert "zonegate vrrp status: error: argument --admin" in capsys.readouterr().err
