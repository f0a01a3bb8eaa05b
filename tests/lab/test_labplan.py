"""zonegate.lab.labplan: the lab's address plan, topology, nftables script and state
file (pure; no root)."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from zonegate.lab.labplan import (
    DEFAULT_PREFIX,
    LabPlan,
    LabState,
    partition_nft,
    plan,
    processes,
    topology_doc,
)
from zonegate.lab.netns import check_ifname
from zonegate.topology.load import load_topology


def test_address_plan():
    p = plan()
    assert p.prefix == DEFAULT_PREFIX == "zglab-"
    assert p.core_ip == "10.77.0.2"
    assert p.client_ip == "10.77.0.100"
    assert {z.name: z.vip for z in p.zones.values()} == {
        "changping": "10.77.0.11",
        "yanqing": "10.77.0.12",
    }
    assert p.zones["changping"].nodes == {"lb-cp-1": "10.77.0.21", "lb-cp-2": "10.77.0.22"}
    addrs = list(p.addresses().values())
    vips = [z.vip for z in p.zones.values()]
    assert len(set(addrs + vips)) == len(addrs) + len(vips), "every address is unique"
    net = ipaddress.ip_network("10.77.0.0/24")
    assert all(ipaddress.ip_address(a) in net for a in addrs + vips)
    # The switch port of each namespace is named after it: a valid interface name.
    for short in p.namespaces():
        check_ifname(short)
        assert p.ns(short) == "zglab-" + short
    assert p.namespaces()[0] == "sw"
    assert p.zone_of_node("lb-yq-2").name == "yanqing"
    assert p.control_url == "http://10.77.0.2:9900"


def test_plan_options_and_errors():
    p = plan("zgt1-", "10.88.5", advert=0.25, dns_port=5353, control_port=19900)
    assert p.zones["yanqing"].vip == "10.88.5.12"
    assert p.dns == "10.88.5.2:5353"
    assert p.advert == 0.25
    with pytest.raises(ValueError, match="prefix"):
        plan("zg")
    with pytest.raises(ValueError, match="prefix"):
        plan("zg lab-")
    with pytest.raises(ValueError, match="subnet"):
        plan(subnet="10.77")
    with pytest.raises(ValueError, match="subnet"):
        plan(subnet="224.0.0")
    with pytest.raises(ValueError, match="advert"):
        plan(advert=0.005)
    with pytest.raises(ValueError, match="advert"):
        plan(advert=0.125)
    with pytest.raises(ValueError, match="dns port"):
        plan(dns_port=0)


def test_topology_is_valid(tmp_path: Path):
    """The generated document passes the topology loader (schema and cross-checks)."""
    p = plan()
    path = tmp_path / "lab.yaml"
    yaml = YAML(typ="safe", pure=True)
    with open(path, "w") as f:
        yaml.dump(topology_doc(p), f)
    topo = load_topology(path)
    assert set(topo.zones) == {"changping", "yanqing"}
    assert str(topo.zones["changping"].lb_admin) == "10.77.0.11:9901"
    assert str(topo.listeners["http-cp"].bind) == "10.77.0.11:80"
    assert topo.pools["web-cp"].backup == "web-yq"
    assert [str(b.address) for b in topo.pools["web-yq"].backends] == [
        "10.77.0.51:8201",
        "10.77.0.51:8202",
        "10.77.0.51:8203",
    ]
    inst = topo.vrrp.instances
    assert set(inst) == {"lb-cp-1", "lb-cp-2", "lb-yq-1", "lb-yq-2"}
    assert inst["lb-cp-1"].vrid == inst["lb-cp-2"].vrid == 51
    assert inst["lb-yq-1"].vrid == 52
    assert inst["lb-cp-1"].priority > inst["lb-cp-2"].priority
    assert inst["lb-cp-1"].advert_interval == pytest.approx(0.1)
    assert str(inst["lb-cp-2"].admin) == "10.77.0.22:9960"
    # Losing its LB drops the preferred node below the backup.
    track = inst["lb-cp-1"].track[0]
    assert track.type == "lb"
    assert str(track.address) == "127.0.0.1:9901"
    assert inst["lb-cp-1"].priority - track.weight < inst["lb-cp-2"].priority
    split = topo.split["api.example.test"]
    assert {z: (s.lower, s.upper) for z, s in split.zones.items()} == {
        "changping": (0, 50),
        "yanqing": (50, 100),
    }
    gslb = topo.dns.domains["example.test"].gslb
    assert set(gslb) == {"api", "api-cp", "api-yq"}
    assert str(topo.dns.listen) == "10.77.0.2:53"


def test_processes_start_order():
    p = plan()
    specs = processes(p, "/py", "/run/lab/topology.yaml", "/run/lab")
    names = [s.name for s in specs]
    assert len(names) == len(set(names)) == 6 + 1 + 4 + 4 + 4 + 2
    group = {s.name: s.group for s in specs}
    # Backends and control before the LBs, LBs before the VRRP agents tracking them,
    # the GSLB last (its zone health asks the LBs through the VIPs).
    assert group["backend cp-1"] == group["control"] < group["lb lb-cp-1"]
    assert group["lb lb-cp-1"] < group["vrrp lb-cp-1"] < group["dns"] == group["httpdns"]
    lb = next(s for s in specs if s.name == "lb lb-yq-2")
    assert lb.ns == "lb-yq-2"
    assert lb.argv[:3] == ("/py", "-m", "zonegate")
    assert "--admin" in lb.argv
    assert "0.0.0.0:9901" in lb.argv
    assert lb.argv[lb.argv.index("--zone") + 1] == "yanqing"
    assert lb.log == "/run/lab/lb-lb-yq-2.log"
    vr = next(s for s in specs if s.name == "vrrp lb-cp-2")
    assert vr.argv[-2:] == ("--instance", "lb-cp-2")
    assert vr.ready == "zonegate vrrp ready"
    be = next(s for s in specs if s.name == "backend cp-3")
    assert be.ns == "be-cp"
    assert "10.77.0.41:8103" in be.argv


def test_partition_rules():
    p = plan()
    script = partition_nft(p, "changping")
    assert script.startswith("table inet zglab_partition {")
    # Everything of the zone, and nothing of the other zone or the core.
    for addr in ("10.77.0.11", "10.77.0.21", "10.77.0.22", "10.77.0.41"):
        assert addr in script
    for addr in ("10.77.0.12", "10.77.0.2,", "10.77.0.100", "10.77.0.31"):
        assert addr not in script
    # VRRP adverts (multicast) between the zone's own nodes still pass.
    assert "224.0.0.0/4 accept" in script
    assert script.count("meta nfproto ipv4 drop") == 2


def test_state_round_trip():
    p = plan("zgt9-", advert=0.2, dns_port=5353)
    specs = processes(p, "/py", "/d/topology.yaml", "/d")
    state = LabState(p, "/d", "/d/topology.yaml", "/d/operator.token")
    state.specs = {s.name: s for s in specs}
    state.namespaces = [p.ns(s) for s in p.namespaces()]
    state.pids = {"control": (1234, 99), "dns": (1240, 101)}
    state.ready = True
    doc = json.loads(json.dumps(state.to_json()))
    back = LabState.from_json(doc)
    assert back.plan == p
    assert back.specs == state.specs
    assert back.pids == state.pids
    assert back.namespaces == state.namespaces
    assert back.ready
    assert doc["vips"] == {"changping": "10.77.0.11", "yanqing": "10.77.0.12"}
    assert doc["addresses"]["zgt9-client"] == "10.77.0.100"
    assert doc["urls"]["dns"] == "10.77.0.2:5353"
    assert doc["processes"]["httpdns"]["pid"] == 0


def test_state_rejects_other_versions():
    with pytest.raises(ValueError, match="version"):
        LabState.from_json({"version": 99})
    with pytest.raises(ValueError, match="bad state"):
        LabState.from_json({"version": 1, "plan": {}})


def test_plan_json_round_trip():
    p = plan("zgx-", "10.1.2", advert=1.0, control_port=9000)
    assert LabPlan.from_json(json.loads(json.dumps(p.to_json()))) == p


def test_lab_commands_need_root(monkeypatch, tmp_path: Path):
    """As another user each command says it needs root and changes nothing."""
    from rich.console import Console

    from zonegate.lab import lab

    monkeypatch.setattr(lab.os, "geteuid", lambda: 1000)
    console = Console(file=open(os.devnull, "w"))  # noqa: SIM115 - closed below
    try:
        with pytest.raises(lab.LabError, match="needs root"):
            lab.lab_up(tmp_path, console)
        with pytest.raises(lab.LabError, match="needs root"):
            lab.lab_down(tmp_path, console)
    finally:
        console.file.close()
    assert not list(tmp_path.iterdir())


def test_cli_parses_lab_commands():
    from zonegate.cli import build_parser

    args = build_parser().parse_args(["lab", "up", "--advert", "200ms", "--dns-port", "5353"])
    assert (args.lab_command, args.advert, args.dns_port, args.prefix) == (
        "up",
        "200ms",
        5353,
        "zglab-",
    )
    args = build_parser().parse_args(["lab", "drill", "--quick", "--dir", "/tmp/x"])
    assert (args.lab_command, args.quick, args.dir) == ("drill", True, "/tmp/x")
    args = build_parser().parse_args(["lab", "down"])
    assert (args.dir, args.prefix) == ("/run/zonegate-lab", None)
