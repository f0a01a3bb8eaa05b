"""The `vrrp` section of the topology: schema, cross-references with file:line, machine config."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from zonegate.errors import ConfigErrors
from zonegate.topology.load import load_topology, load_topology_text
from zonegate.topology.validate import vrrp_vips
from zonegate.vrrp.agent import machine_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

BASE = """\
zones:
  a: {vips: [10.0.0.1, "2001:db8::1"], lb_admin: 127.0.0.1:9901}
  b: {vips: ["2001:db8::2"]}
vrrp:
  instances:
"""


def problems(instances: str) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load_topology_text(BASE + instances, filename="t.yaml")
    return [str(p) for p in info.value.problems]


def test_example_lab_is_valid():
    topo = load_topology(EXAMPLES / "vrrp-lab.yaml")
    inst = topo.vrrp.instances["lb-1"]
    assert inst.vrid == 51
    assert inst.garp.count == 5
    assert inst.startup_delay == 5.0
    assert vrrp_vips(topo, inst) == [IPv4Interface("10.9.0.100/24")]


def test_two_zones_example_still_valid():
    assert load_topology(EXAMPLES / "two-zones.yaml").vrrp.instances == {}


def test_defaults_and_zone_vips():
    topo = load_topology_text(BASE + "    n1: {zone: a, interface: eth0, vrid: 5}\n")
    inst = topo.vrrp.instances["n1"]
    assert inst.priority == 100
    assert inst.advert_interval == 1.0
    assert inst.preempt
    assert inst.graceful_handoff
    assert inst.quorum is None
    # The zone's IPv4 vips as /32; the IPv6 one is not VRRP's.
    assert vrrp_vips(topo, inst) == [IPv4Interface("10.0.0.1/32")]
    cfg = machine_config(topo, inst, IPv4Address("10.0.0.9"))
    assert cfg.advert_interval_cs == 100
    assert cfg.vips == (IPv4Interface("10.0.0.1/32"),)
    assert machine_config(topo, inst, IPv4Address("10.0.0.9"), priority=200).priority == 200


def test_unknown_zone():
    assert problems("    n1: {zone: nope, interface: eth0, vrid: 5}\n") == [
        "t.yaml:6:16: vrrp.instances.n1.zone: unknown zone 'nope' (zones: a, b)"
    ]


def test_same_vrid_on_a_link_for_two_zones():
    got = problems(
        "    n1: {zone: a, interface: eth0, vrid: 5}\n"
        "    n2: {zone: b, interface: eth0, vrid: 5, vips: [10.0.0.2]}\n"
    )
    assert len(got) == 1
    assert got[0].startswith("t.yaml:7:42: vrrp.instances.n2.vrid: vrid 5 on eth0 is already used")


def test_same_vrid_same_zone_is_the_group():
    load_topology_text(
        BASE
        + "    n1: {zone: a, interface: eth0, vrid: 5}\n"
        + "    n2: {zone: a, interface: eth0, vrid: 5, priority: 50}\n"
    )


def test_same_vrid_other_interface_is_fine():
    load_topology_text(
        BASE
        + "    n1: {zone: a, interface: eth0, vrid: 5}\n"
        + "    n2: {zone: b, interface: eth1, vrid: 5, vips: [10.0.0.2]}\n"
    )


def test_group_members_must_announce_the_same_vips():
    got = problems(
        "    n1: {zone: a, interface: eth0, vrid: 5}\n"
        "    n2: {zone: a, interface: eth0, vrid: 5, vips: [10.0.0.7]}\n"
    )
    assert got == [
        "t.yaml:7:45: vrrp.instances.n2.vips: VIPs differ from those of instance 'n1' of the "
        "same virtual router (every node must announce the same addresses)"
    ]


@pytest.mark.parametrize("interval", ["0s", "5ms", "15ms", "41s", "1.005s"])
def test_advert_interval_range(interval):
    got = problems(f"    n1: {{zone: a, interface: eth0, vrid: 5, advert_interval: {interval}}}\n")
    assert len(got) == 1
    assert "advert_interval must be whole centiseconds from 10ms to 40.95s" in got[0]
    assert got[0].startswith("t.yaml:6:")


@pytest.mark.parametrize("interval", ["10ms", "40.95s", "250ms", "3s"])
def test_advert_interval_accepted(interval):
    load_topology_text(
        BASE + f"    n1: {{zone: a, interface: eth0, vrid: 5, advert_interval: {interval}}}\n"
    )


def test_vips_must_be_ipv4():
    got = problems(
        '    n1: {zone: a, interface: eth0, vrid: 5, vips: ["2001:db8::5", 10.0.0.9/33, x]}\n'
    )
    assert got == [
        "t.yaml:6:52: vrrp.instances.n1.vips[0]: invalid VIP '2001:db8::5': VRRP here is "
        "IPv4 only, e.g. 10.9.0.100/24",
        "t.yaml:6:67: vrrp.instances.n1.vips[1]: invalid VIP '10.0.0.9/33': expected an "
        "address with an optional /prefix, e.g. 10.9.0.100/24",
        "t.yaml:6:80: vrrp.instances.n1.vips[2]: invalid VIP 'x': expected an address with "
        "an optional /prefix, e.g. 10.9.0.100/24",
    ]


def test_zone_without_ipv4_vip_needs_vips():
    got = problems("    n1: {zone: b, interface: eth0, vrid: 5}\n")
    assert got == [
        "t.yaml:6:16: vrrp.instances.n1.zone: zone 'b' has no IPv4 vip: set vrrp.instances.n1.vips"
    ]


def test_schema_ranges_and_unknown_keys():
    got = problems("    n1: {zone: a, interface: eth0, vrid: 256, priority: 0, prempt: true}\n")
    assert any("vrid: must be ≤ 255, got 256" in p for p in got)
    assert any("priority: must be ≥ 1, got 0" in p for p in got)
    assert any("unknown key 'prempt' (did you mean 'preempt'?)" in p for p in got)


def test_track_checks():
    got = problems(
        "    n1:\n"
        "      zone: b\n"
        "      interface: eth0\n"
        "      vrid: 5\n"
        "      vips: [10.0.0.3]\n"
        "      track:\n"
        "        - {type: interface, weight: 10, command: x}\n"
        "        - {type: lb, weight: 10}\n"
        "        - {type: command, weight: 10}\n"
    )
    assert got == [
        "t.yaml:12:11: vrrp.instances.n1.track[0]: a check of type interface needs 'name'",
        "t.yaml:12:50: vrrp.instances.n1.track[0].command: 'command' is not used by a check "
        "of type interface",
        "t.yaml:13:11: vrrp.instances.n1.track[1]: a check of type lb needs 'address' (zone "
        "'b' has no lb_admin)",
        "t.yaml:14:11: vrrp.instances.n1.track[2]: a check of type command needs 'command'",
    ]


def test_unicast_peers_and_source_ipv4():
    got = problems(
        '    n1: {zone: a, interface: eth0, vrid: 5, unicast_peers: ["2001:db8::9"], '
        'source: "::1"}\n'
    )
    assert len(got) == 2
    assert all("expected an IPv4 address" in p for p in got)


def test_quorum_lease_ttl_limit_and_urls():
    got = problems(
        "    n1: {zone: a, interface: eth0, vrid: 5, "
        'quorum: {control: ["http://127.0.0.1:9900"], lease_ttl: 30s}}\n'
    )
    assert got == [
        "t.yaml:6:101: vrrp.instances.n1.quorum.lease_ttl: lease_ttl must be at most 10s, got 30s"
    ]
    got = problems('    n1: {zone: a, interface: eth0, vrid: 5, quorum: {control: ["ftp://x"]}}\n')
    assert len(got) == 1
    assert "quorum.control[0]" in got[0]


def test_two_zones_commented_vrrp_section_is_valid_when_uncommented():
    lines = (EXAMPLES / "two-zones.yaml").read_text().splitlines()
    start = lines.index("# vrrp:")
    text = "\n".join(lines[:start] + [line.removeprefix("# ") for line in lines[start:]])
    topo = load_topology_text(text, filename="two-zones.yaml")
    assert set(topo.vrrp.instances) == {"lb-cp-1", "lb-cp-2", "lb-yq-1"}
