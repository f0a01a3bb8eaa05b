"""Cross-reference checks of the `dns` section and zone VIPs (`topology.validate`)."""

from __future__ import annotations

from typing import Any

import pytest

from zonegate.errors import ConfigErrors
from zonegate.topology.load import load_topology_text
from zonegate.topology.schema import Topology
from zonegate.topology.validate import qualify, validate

Problems = list[tuple[tuple[str | int, ...], str]]

ZONES: dict[str, Any] = {
    "cp": {"region": "north", "vips": ["10.0.1.1"]},
    "yq": {"region": "west", "vips": ["10.0.2.1", "2001:db8::2"]},
}


def problems(
    domain: dict[str, Any] | None = None,
    *,
    zones: dict[str, Any] | None = None,
    domains: dict[str, Any] | None = None,
    **dns: Any,
) -> Problems:
    if domains is None:
        domains = {"example.test": {"ns": ["ns1.other.test."], **(domain or {})}}
    data = {"zones": ZONES if zones is None else zones, "dns": {"domains": domains, **dns}}
    return validate(Topology.model_validate(data))


D: tuple[str, ...] = ("dns", "domains", "example.test")


def test_a_consistent_dns_section_has_no_problems() -> None:
    assert (
        problems(
            {
                "ns": ["ns1", "ns2.example.test", "ns.other.test."],
                "soa": {"mname": "ns1", "rname": "hostmaster"},
                "records": {
                    "ns1": [{"type": "A", "value": "192.0.2.1"}],
                    "ns2": [{"type": "AAAA", "value": "2001:db8::53"}],
                    "www": [{"type": "CNAME", "value": "api"}],
                    "@": [
                        {"type": "TXT", "value": "v=spf1 -all"},
                        {"type": "MX", "value": "10 mail.other.test."},
                    ],
                    "_dmarc": [{"type": "TXT", "value": "v=DMARC1; p=none"}],
                    "*.wild": [{"type": "A", "value": "192.0.2.7"}],
                    "sub": [{"type": "NS", "value": "ns.other.test."}],
                },
                "gslb": {
                    "api": {"admin_order": ["yq", "cp"], "ip_weights": {"10.0.1.1": 2}},
                    "api-cp": {"zones": ["cp"]},
                    "next": {"cname": "api.gslb.other.test."},
                    "abs.example.test.": {
                        "fallback": "addresses",
                        "fallback_addresses": ["192.0.2.9"],
                    },
                },
            },
            regions={
                "north": {"prefixes": ["1.2.0.0/16", "2001:db8:1::/48"], "countries": ["CN"]},
                "west": {"prefixes": ["1.3.0.0/16"], "zones": ["yq", "cp"]},
            },
            default_region="north",
            trusted_proxies=["10.0.0.0/8"],
        )
        == []
    )


@pytest.mark.parametrize(
    ("name", "origin", "fqdn"),
    [
        ("www", "example.test", "www.example.test"),
        ("WWW", "Example.Test.", "www.example.test"),
        ("@", "example.test", "example.test"),
        ("a.b", "example.test", "a.b.example.test"),
        ("api.other.test.", "example.test", "api.other.test"),
        # Already ends with the domain: taken as written, not doubled.
        ("www.example.test", "example.test", "www.example.test"),
        ("example.test", "example.test", "example.test"),
        ("www.example.testing", "example.test", "www.example.testing.example.test"),
        ("example.test", ".", "example.test"),
    ],
)
def test_qualify(name: str, origin: str, fqdn: str) -> None:
    assert qualify(name, origin) == fqdn


# --- zones and regions --------------------------------------------------------------


def test_vips_are_addresses_and_unique_in_a_zone() -> None:
    zones = {"cp": {"vips": ["10.0.1.1", "10.0.1.999", "10.0.1.01", "::1", "0:0::1"]}}
    assert problems(zones=zones) == [
        (
            ("zones", "cp", "vips", 1),
            "invalid address '10.0.1.999': expected an IPv4 or IPv6 address",
        ),
        (
            ("zones", "cp", "vips", 2),
            "invalid address '10.0.1.01': expected an IPv4 or IPv6 address",
        ),
        (("zones", "cp", "vips", 4), "duplicate vip ::1 (also vips[3])"),
    ]


def test_region_prefixes_are_networks_without_host_bits() -> None:
    got = problems(
        regions={
            "north": {"prefixes": ["1.2.3.4/16", "1.2.0.0/33", "1.2.0.0/16", "1.2.0.0/16"]},
            "west": {"prefixes": ["1.2.0.0/16", "2001:db8::1/32"], "countries": ["US"]},
            "east": {"countries": ["US"]},
        }
    )
    r = ("dns", "regions")
    assert got == [
        (
            (*r, "north", "prefixes", 0),
            "invalid prefix '1.2.3.4/16': host bits set (the network is 1.2.0.0/16)",
        ),
        (
            (*r, "north", "prefixes", 1),
            "invalid prefix '1.2.0.0/33': expected a network such as 10.1.0.0/16 or 2001:db8::/32",
        ),
        ((*r, "north", "prefixes", 3), "duplicate prefix 1.2.0.0/16 (also [2])"),
        (
            (*r, "west", "prefixes", 1),
            "invalid prefix '2001:db8::1/32': host bits set (the network is 2001:db8::/32)",
        ),
        ((*r, "west", "prefixes", 0), "prefix 1.2.0.0/16 is also in region 'north'"),
        ((*r, "east", "countries", 0), "country US is also in region 'west'"),
    ]


def test_trusted_proxies_are_networks() -> None:
    assert problems(trusted_proxies=["10.0.0.1/8"]) == [
        (
            ("dns", "trusted_proxies", 0),
            "invalid prefix '10.0.0.1/8': host bits set (the network is 10.0.0.0/8)",
        )
    ]


def test_region_zones_and_default_region_exist() -> None:
    assert problems(regions={"north": {"zones": ["cp", "bj"]}}, default_region="south") == [
        (("dns", "regions", "north", "zones", 1), "unknown zone 'bj' (zones: cp, yq)"),
        (
            ("dns", "default_region"),
            "unknown region 'south' (dns.regions and zone regions: north, west)",
        ),
    ]
    # A region named only by a zone's `region` is a region.
    assert problems(default_region="west") == []


# --- names --------------------------------------------------------------------------


def test_domain_names_are_dns_names_and_defined_once() -> None:
    ns = {"ns": ["ns.other.test."]}
    got = problems(domains={"bad_domain.test": ns, "example.test": ns, "Example.Test.": ns})
    assert got == [
        (
            ("dns", "domains", "bad_domain.test"),
            "invalid domain 'bad_domain.test': expected a DNS name",
        ),
        (
            ("dns", "domains", "Example.Test."),
            "domain example.test is defined twice (also 'example.test')",
        ),
    ]


def test_record_and_gslb_names_are_dns_names() -> None:
    got = problems(
        {
            "records": {
                "bad name": [{"type": "TXT", "value": "x"}],
                "-x": [{"type": "TXT", "value": "x"}],
            },
            "gslb": {"_api": {}, "*.api": {}},
        }
    )
    assert got == [
        (
            (*D, "records", "bad name"),
            "invalid record name 'bad name': expected a DNS name, '@' for the domain or a name "
            "ending with '.' for an absolute one",
        ),
        (
            (*D, "records", "-x"),
            "invalid record name '-x': expected a DNS name, '@' for the domain or a name "
            "ending with '.' for an absolute one",
        ),
        (
            (*D, "gslb", "_api"),
            "invalid GSLB name '_api': expected a host name, '@' for the domain or a name "
            "ending with '.' for an absolute one",
        ),
        (
            (*D, "gslb", "*.api"),
            "invalid GSLB name '*.api': expected a host name, '@' for the domain or a name "
            "ending with '.' for an absolute one",
        ),
    ]


def test_names_outside_the_domain() -> None:
    got = problems(
        {
            "records": {"www.other.test.": [{"type": "A", "value": "192.0.2.1"}]},
            "gslb": {"api.other.test.": {}},
        }
    )
    assert got == [
        (
            (*D, "records", "www.other.test."),
            "record name 'www.other.test' is not inside domain example.test",
        ),
        (
            (*D, "gslb", "api.other.test."),
            "GSLB name 'api.other.test' is not inside domain example.test",
        ),
    ]


def test_names_inside_a_more_specific_domain_belong_there() -> None:
    ns = ["ns.other.test."]
    got = problems(
        domains={
            "example.test": {"ns": ns, "gslb": {"api.cp": {}}},
            "cp.example.test": {"ns": ns},
        }
    )
    assert got == [
        (
            ("dns", "domains", "example.test", "gslb", "api.cp"),
            "GSLB name 'api.cp.example.test' is inside domain cp.example.test, which is "
            "configured separately: define it there",
        )
    ]


def test_a_name_is_defined_once_and_is_static_or_gslb() -> None:
    got = problems(
        {
            "records": {
                "www": [{"type": "A", "value": "192.0.2.1"}],
                "WWW.example.test.": [{"type": "A", "value": "192.0.2.2"}],
                "api": [{"type": "TXT", "value": "x"}],
            },
            "gslb": {"api": {}, "web": {}, "web.example.test": {}},
        }
    )
    assert got == [
        (
            (*D, "records", "WWW.example.test."),
            "name 'www.example.test' is defined twice (also dns.domains[\"example.test\"].records.www)",
        ),
        (
            (*D, "gslb", "api"),
            "'api.example.test' is both a static record "
            '(dns.domains["example.test"].records.api) and a GSLB name',
        ),
        (
            (*D, "gslb", "web.example.test"),
            "GSLB name 'web.example.test' is defined twice "
            '(also dns.domains["example.test"].gslb.web)',
        ),
    ]


def test_cname_rules() -> None:
    got = problems(
        {
            "records": {
                "a": [{"type": "CNAME", "value": "b"}, {"type": "TXT", "value": "x"}],
                "b": [{"type": "CNAME", "value": "c"}, {"type": "CNAME", "value": "d"}],
                "@": [{"type": "CNAME", "value": "www.other.test."}],
                "loop1": [{"type": "CNAME", "value": "loop2"}],
            },
            "gslb": {"loop2": {"cname": "loop1.example.test."}},
        }
    )
    rec = (*D, "records")
    assert got == [
        (
            (*rec, "a"),
            "'a.example.test' has a CNAME and other records: a CNAME must be alone (RFC 1034 §3.6.2)",
        ),
        ((*rec, "b"), "'b.example.test' has 2 CNAME records: at most one"),
        ((*rec, "@"), "the domain apex example.test cannot be a CNAME (it holds SOA and NS)"),
        (
            (*rec, "loop1", 0, "value"),
            "CNAME loop: loop1.example.test -> loop2.example.test -> loop1.example.test",
        ),
    ]


def test_record_values() -> None:
    got = problems(
        {
            "records": {
                "a": [
                    {"type": "A", "value": "2001:db8::1"},
                    {"type": "AAAA", "value": "192.0.2.1"},
                    {"type": "A", "value": "nope"},
                    {"type": "MX", "value": "mail.other.test."},
                    {"type": "MX", "value": "70000 mail"},
                    {"type": "MX", "value": "10 bad_host"},
                    {"type": "NS", "value": "ns one"},
                ],
            },
        }
    )
    at = (*D, "records", "a")
    assert got == [
        ((*at, 0, "value"), "invalid A value '2001:db8::1': expected an IPv4 address"),
        ((*at, 1, "value"), "invalid AAAA value '192.0.2.1': expected an IPv6 address"),
        ((*at, 2, "value"), "invalid A value 'nope': expected an IPv4 address"),
        (
            (*at, 3, "value"),
            "invalid MX value 'mail.other.test.': expected 'PREFERENCE NAME' such as "
            "'10 mail.example.test.' (preference 0-65535)",
        ),
        (
            (*at, 4, "value"),
            "invalid MX value '70000 mail': expected 'PREFERENCE NAME' such as "
            "'10 mail.example.test.' (preference 0-65535)",
        ),
        ((*at, 5, "value"), "invalid MX exchange 'bad_host': expected a DNS name"),
        ((*at, 6, "value"), "invalid NS target 'ns one': expected a DNS name"),
    ]


# --- GSLB records -------------------------------------------------------------------


def test_gslb_zone_references() -> None:
    zones = {**ZONES, "lab": {}}
    got = problems(
        {"gslb": {"api": {"zones": ["cp", "bj", "cp", "lab"], "admin_order": ["xx"]}}},
        zones=zones,
    )
    at = (*D, "gslb", "api")
    assert got == [
        ((*at, "zones", 1), "unknown zone 'bj' (zones: cp, lab, yq)"),
        ((*at, "zones", 2), "duplicate zone 'cp' (also zones[0])"),
        ((*at, "zones", 3), "zone lab has no vips (zones.lab.vips)"),
        ((*at, "admin_order", 0), "unknown zone 'xx' (zones: cp, lab, yq)"),
    ]


def test_gslb_name_needs_zones_with_vips() -> None:
    assert problems({"gslb": {"api": {}}}, zones={"cp": {}}) == [
        ((*D, "gslb", "api"), "no zone has vips: a GSLB name needs candidate zones with vips")
    ]
    # A CNAME record needs none.
    assert problems({"gslb": {"api": {"cname": "x.other.test."}}}, zones={"cp": {}}) == []


def test_fallback_addresses() -> None:
    got = problems(
        {
            "gslb": {
                "a": {"fallback": "addresses"},
                "b": {"fallback": "all", "fallback_addresses": ["192.0.2.1", "1.2.3"]},
            }
        }
    )
    assert got == [
        ((*D, "gslb", "a", "fallback"), "fallback 'addresses' needs fallback_addresses"),
        (
            (*D, "gslb", "b", "fallback_addresses", 1),
            "invalid address '1.2.3': expected an IPv4 or IPv6 address",
        ),
    ]


def test_ip_weights_name_candidate_vips() -> None:
    got = problems(
        {
            "gslb": {
                "api": {"zones": ["cp"], "ip_weights": {"10.0.1.1": 1, "10.0.2.1": 1, "1.2.3": 1}}
            }
        }
    )
    at = (*D, "gslb", "api", "ip_weights")
    assert got == [
        ((*at, "10.0.2.1"), "address 10.0.2.1 is not a vip of this name's zones"),
        ((*at, "1.2.3"), "invalid address '1.2.3': expected an IPv4 or IPv6 address"),
    ]


def test_gslb_cname_target() -> None:
    got = problems({"gslb": {"a": {"cname": "bad_name"}, "@": {"cname": "x.other.test."}}})
    assert got == [
        ((*D, "gslb", "a", "cname"), "invalid cname 'bad_name': expected a DNS name"),
        (
            (*D, "gslb", "@", "cname"),
            "the domain apex example.test cannot be a CNAME (it holds SOA and NS)",
        ),
    ]


# --- name servers -------------------------------------------------------------------


def test_name_servers_inside_a_domain_need_glue() -> None:
    got = problems(
        {
            "ns": ["ns1", "ns2.example.test.", "ns3", "ns.other.test.", "bad ns"],
            "records": {
                "ns1": [{"type": "A", "value": "192.0.2.1"}],
                "ns3": [{"type": "TXT", "value": "no address"}],
            },
        }
    )
    assert got == [
        (
            (*D, "ns", 1),
            "name server ns2.example.test is inside example.test but has no A or AAAA "
            "record (glue): add records.ns2 of type A",
        ),
        (
            (*D, "ns", 2),
            "name server ns3.example.test is inside example.test but has no A or AAAA "
            "record (glue): add records.ns3 of type A",
        ),
        ((*D, "ns", 4), "invalid name server 'bad ns': expected a DNS name"),
    ]


def test_glue_in_another_configured_domain_counts() -> None:
    got = problems(
        domains={
            "example.test": {"ns": ["ns1.dns.test."]},
            "dns.test": {"ns": ["ns1"], "records": {"ns1": [{"type": "A", "value": "192.0.2.1"}]}},
        }
    )
    assert got == []


def test_soa_names() -> None:
    got = problems({"soa": {"mname": "bad_mname", "rname": "admin@example.test"}})
    assert got == [
        ((*D, "soa", "mname"), "invalid mname 'bad_mname': expected a DNS name"),
        ((*D, "soa", "rname"), "invalid rname 'admin@example.test': expected a DNS name"),
    ]


# --- through the loader: file and line ----------------------------------------------


def test_problems_point_at_the_line() -> None:
    text = """\
zones:
  cp:
    vips: [10.0.1.1, 10.0.1.300]
dns:
  regions:
    north:
      prefixes: [1.2.3.4/16]
  domains:
    example.test:
      ns: [ns1]
      gslb:
        api:
          zones: [cp, bj]
"""
    with pytest.raises(ConfigErrors) as info:
        load_topology_text(text, "t.yaml")
    assert [str(p) for p in info.value.problems] == [
        "t.yaml:3:22: zones.cp.vips[1]: invalid address '10.0.1.300': expected an IPv4 or IPv6 address",
        "t.yaml:7:18: dns.regions.north.prefixes[0]: invalid prefix '1.2.3.4/16': host bits set "
        "(the network is 1.2.0.0/16)",
        't.yaml:10:12: dns.domains["example.test"].ns[0]: name server ns1.example.test is '
        "inside example.test but has no A or AAAA record (glue): add records.ns1 of type A",
        "t.yaml:13:23: dns.domains[\"example.test\"].gslb.api.zones[1]: unknown zone 'bj' "
        "(zones: cp)",
    ]
