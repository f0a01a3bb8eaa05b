"""dns.maxmind: a MaxMind database as the topology method's country hook."""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import pytest

from zonegate.dns.maxmind import open_country_lookup
from zonegate.dns.model import ClientInfo, ZoneState
from zonegate.dns.policy import SelectionState, compile_gslb, decide
from zonegate.errors import ConfigError
from zonegate.topology.schema import Topology


@pytest.fixture
def mmdb(tmp_path: Path) -> Path:
    """A tiny GeoLite2-Country-shaped database, written with mmdb-writer."""
    writer_mod = pytest.importorskip("mmdb_writer", reason="mmdb-writer (test extra) is needed")
    netaddr = pytest.importorskip("netaddr", reason="netaddr (mmdb-writer's dependency)")
    writer = writer_mod.MMDBWriter(
        ip_version=6, database_type="GeoLite2-Country", ipv4_compatible=True
    )
    writer.insert_network(netaddr.IPSet(["9.9.9.0/24"]), {"country": {"iso_code": "US"}})
    writer.insert_network(netaddr.IPSet(["8.8.0.0/16"]), {"registered_country": {"iso_code": "fr"}})
    writer.insert_network(netaddr.IPSet(["2001:db8:9::/48"]), {"country": {"iso_code": "CN"}})
    writer.insert_network(netaddr.IPSet(["7.7.7.0/24"]), {"city": {"geoname_id": 1}})
    path = tmp_path / "country.mmdb"
    writer.to_db_file(str(path))
    return path


def test_country_of_an_address(mmdb: Path) -> None:
    lookup = open_country_lookup(mmdb)
    try:
        assert lookup("9.9.9.9") == "US"
        assert lookup("8.8.4.4") == "FR"  # registered_country when no country, upper case
        assert lookup("2001:db8:9::1") == "CN"
        assert lookup("7.7.7.7") is None  # a record without a country
        assert lookup("1.1.1.1") is None  # not in the database
        assert lookup("not an ip") is None
    finally:
        lookup.close()


def test_lookup_feeds_the_topology_method(mmdb: Path) -> None:
    topo = Topology.model_validate(
        {
            "zones": {"cp": {"vips": ["10.0.1.1"]}, "us": {"vips": ["10.0.2.1"]}},
            "dns": {
                "domains": {"example.test": {"ns": ["ns1.other.test."], "gslb": {"api": {}}}},
                "regions": {"america": {"countries": ["US"], "zones": ["us"]}},
            },
        }
    )
    lookup = open_country_lookup(mmdb)
    try:
        table = compile_gslb(topo, country_of=lookup)
        client = ClientInfo("1.1.1.1", ipaddress.ip_network("9.9.9.0/24"))
        health = {"cp": ZoneState(up=True), "us": ZoneState(up=True)}
        d = decide(
            "api.example.test", "A", client, table, health, SelectionState(), random.Random()
        )
        assert d is not None
        assert d.addresses == ("10.0.2.1",)
        assert d.steps[1].why == "client 9.9.9.0/24 -> region america (country US) -> zones us"
    finally:
        lookup.close()


def test_missing_database_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.mmdb"
    with pytest.raises(ConfigError) as info:
        open_country_lookup(path)
    assert str(info.value) == f"{path}: dns.geoip_db: MaxMind database not found"


def test_not_a_database_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.mmdb"
    path.write_bytes(b"not a maxmind database" * 10)
    with pytest.raises(ConfigError, match=r"junk\.mmdb: dns\.geoip_db: not a MaxMind database"):
        open_country_lookup(path)
