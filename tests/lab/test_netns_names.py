"""zonegate.lab.netns and vrrplab: names and config text (no root needed)."""

from __future__ import annotations

import pytest

from zonegate.lab.netns import Netns, check_ifname, run_prefix
from zonegate.lab.vrrplab import VrrpSettings, keepalived_conf, zonegate_topology


def test_run_prefix():
    assert run_prefix(1234) == "zgl-1234-"
    assert run_prefix().startswith("zgl-")


@pytest.mark.parametrize("name", ["eth0", "br0", "n1", "a" * 15, "v-1.x_y"])
def test_valid_ifnames(name):
    assert check_ifname(name) == name


@pytest.mark.parametrize("name", ["", "a" * 16, "eth 0", "eth/0", "é"])
def test_invalid_ifnames(name):
    with pytest.raises(ValueError, match="interface name"):
        check_ifname(name)


def test_namespace_names_use_the_prefix():
    net = Netns("zgl-99-")
    assert net.name("n1") == "zgl-99-n1"
    with pytest.raises(ValueError, match="bad namespace name"):
        net.name("a/b")
    assert net.argv("zgl-99-n1", ["true"]) == ["ip", "netns", "exec", "zgl-99-n1", "true"]


def test_keepalived_conf():
    text = keepalived_conf(
        "n1", priority=150, vip="10.99.0.200/24", settings=VrrpSettings(advert=0.1, preempt=False)
    )
    assert "vrrp_version 3" in text
    assert "enable_script_security" in text
    assert "advert_int 0.1" in text
    assert "priority 150" in text
    assert "nopreempt" in text
    assert "10.99.0.200/24 dev eth0" in text
    assert "smtp" not in text.lower()
    assert "notification_email" not in text
    assert text.count("{") == text.count("}")


def test_zonegate_topology_follows_the_contract():
    doc = zonegate_topology({"n1": 150, "n2": 100}, vip="10.99.0.200/24", settings=VrrpSettings())
    n1 = doc["vrrp"]["instances"]["n1"]
    assert n1["priority"] == 150
    assert n1["advert_interval"] == "1s"
    assert n1["vrid"] == 51
    assert n1["vips"] == ["10.99.0.200/24"]
    assert n1["interface"] == "eth0"
    fast = zonegate_topology({"n1": 1}, vip="10.0.0.1/24", settings=VrrpSettings(advert=0.1))
    assert fast["vrrp"]["instances"]["n1"]["advert_interval"] == "100ms"
