"""The scalar parsers of the topology file: durations, addresses, status ranges, hash keys."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zonegate.topology.types import (
    HashKey,
    HostPort,
    StatusRange,
    format_duration,
    parse_duration,
    parse_hash_key,
    parse_hostport,
    parse_status_range,
)

# --- durations ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("3s", 3.0),
        ("1.5m", 90.0),
        ("2h", 7200.0),
        ("100us", 0.0001),
        ("0s", 0.0),
        ("0.5ms", 0.0005),
        (0, 0.0),
    ],
)
def test_parse_duration(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (5, "needs a unit, e.g. '5s' or '5ms'"),
        (1.5, "needs a unit"),
        ("5", "expected a number and a unit"),
        ("5 sec", "expected a number and a unit"),
        ("1 s", "no blanks in a duration, write '1s'"),
        (" 5s", "no blanks in a duration, write '5s'"),
        ("250ms ", "no blanks in a duration, write '250ms'"),
        ("1.5\tm", "no blanks in a duration, write '1.5m'"),
        ("-1s", "expected a number and a unit"),
        ("1e3s", "expected a number and a unit"),
        (".5s", "expected a number and a unit"),
        ("", "expected a number and a unit"),
        ("٣s", "expected a number and a unit"),  # non-ASCII digit
        ("9" * 400 + "h", "too large"),
        (True, "expected a duration"),
        (None, "expected a duration"),
        ([1], "expected a duration"),
    ],
)
def test_parse_duration_rejects(value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match="duration") as info:
        parse_duration(value)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "250ms"), (3.0, "3s"), (0.0, "0s"), (90.0, "90s"), (2592000.0, "2592000s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False))
def test_duration_round_trip(seconds: float) -> None:
    text = format_duration(seconds)
    assert "e" not in text  # an exponent would not parse back
    assert parse_duration(text) == seconds


@given(
    st.integers(min_value=0, max_value=10**9),
    st.sampled_from(["us", "ms", "s", "m", "h"]),
)
def test_duration_parse_format_parse(number: int, unit: str) -> None:
    seconds = parse_duration(f"{number}{unit}")
    assert parse_duration(format_duration(seconds)) == seconds


# --- addresses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port", "shown"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080, "127.0.0.1:8080"),
        ("0.0.0.0:80", "0.0.0.0", 80, "0.0.0.0:80"),
        ("[::1]:53", "::1", 53, "[::1]:53"),
        ("[2001:DB8:0:0::1]:443", "2001:db8::1", 443, "[2001:db8::1]:443"),
        ("[fe80::1%eth0]:80", "fe80::1%eth0", 80, "[fe80::1%eth0]:80"),
        ("lb.example.test:9901", "lb.example.test", 9901, "lb.example.test:9901"),
        ("localhost:1", "localhost", 1, "localhost:1"),
        ("example.test.:65535", "example.test.", 65535, "example.test.:65535"),
        (" 10.0.0.1:80 ", "10.0.0.1", 80, "10.0.0.1:80"),
    ],
)
def test_parse_hostport(text: str, host: str, port: int, shown: str) -> None:
    addr = parse_hostport(text)
    assert addr == HostPort(host, port)
    assert str(addr) == shown
    assert parse_hostport(str(addr)) == addr


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("300.1.1.1:80", "'300.1.1.1' is not a valid IPv4 address"),
        ("1.2.3:80", "not a valid IPv4 address"),
        ("01.2.3.4:80", "not a valid IPv4 address"),
        ("127.0.0.1", "missing ':port'"),
        ("127.0.0.1:0", "port must be a number from 1 to 65535"),
        ("127.0.0.1:65536", "port must be a number from 1 to 65535"),
        ("127.0.0.1:-1", "port must be a number"),
        ("127.0.0.1:http", "port must be a number"),
        ("127.0.0.1:²", "port must be a number"),
        ("127.0.0.1:", "port must be a number"),
        (":80", "empty host"),
        ("::1:80", "write IPv6 addresses as '[addr]:port'"),
        ("[::1]", "expected '[v6addr]:port'"),
        ("[::1]80", "expected '[v6addr]:port'"),
        ("[1.2.3.4]:80", "is not an IPv6 address"),
        ("[::g]:80", "is not an IPv6 address"),
        ("bad_host:80", "neither an IP address nor a host name"),
        ("-lead.example:80", "neither an IP address nor a host name"),
        ("a" * 64 + ".test:80", "neither an IP address nor a host name"),
        (8080, "expected an address 'host:port'"),
        (None, "expected an address 'host:port'"),
    ],
)
def test_parse_hostport_rejects(value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match="address") as info:
        parse_hostport(value)
    assert fragment in str(info.value)


@given(st.ip_addresses(), st.integers(min_value=1, max_value=65535))
def test_hostport_round_trip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> None:
    addr = HostPort(str(ip), port)
    assert parse_hostport(str(addr)) == addr


# --- status ranges ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        (200, 200, 200),
        ("200", 200, 200),
        ("200-399", 200, 399),
        ("200 - 204", 200, 204),
        ("2xx", 200, 299),
        ("5XX", 500, 599),
        ("100-599", 100, 599),
    ],
)
def test_parse_status_range(value: object, low: int, high: int) -> None:
    status = parse_status_range(value)
    assert status == StatusRange(low, high)
    assert parse_status_range(str(status)) == status


def test_status_range_contains() -> None:
    ok = parse_status_range("200-399")
    assert 200 in ok
    assert 399 in ok
    assert 400 not in ok
    assert "200" not in ok


@pytest.mark.parametrize(
    "value", ["399-200", "099", "600", "6xx", "0xx", "20x", "200-", "abc", "2000", True, 200.0]
)
def test_parse_status_range_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="invalid status range"):
        parse_status_range(value)


@given(st.integers(100, 599), st.integers(100, 599))
def test_status_range_round_trip(a: int, b: int) -> None:
    status = StatusRange(min(a, b), max(a, b))
    assert parse_status_range(str(status)) == status


# --- hash keys ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "shown"),
    [
        ("client_ip", HashKey("client_ip"), "client_ip"),
        ("header:X-Device-Id", HashKey("header", "x-device-id"), "header:x-device-id"),
        ("cookie:sid", HashKey("cookie", "sid"), "cookie:sid"),
        ("cookie:SID", HashKey("cookie", "SID"), "cookie:SID"),
        ("query:uid", HashKey("query", "uid"), "query:uid"),
    ],
)
def test_parse_hash_key(text: str, key: HashKey, shown: str) -> None:
    assert parse_hash_key(text) == key
    assert str(key) == shown
    assert parse_hash_key(shown) == key


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("client_ip:x", "client_ip takes no name"),
        ("header", "header needs a name"),
        ("header:", "header needs a name"),
        ("header:bad name", "header needs a name"),
        ("body:x", "expected client_ip, header:NAME, cookie:NAME or query:NAME"),
        ("", "expected client_ip"),
        (5, "expected a hash key"),
    ],
)
def test_parse_hash_key_rejects(value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match="hash key") as info:
        parse_hash_key(value)
    assert fragment in str(info.value)


@given(
    st.sampled_from(["header", "cookie", "query"]),
    st.text(alphabet="abcXYZ019-_.!~", min_size=1, max_size=20),
)
def test_hash_key_round_trip(kind: str, name: str) -> None:
    key = parse_hash_key(f"{kind}:{name}")
    assert parse_hash_key(str(key)) == key
