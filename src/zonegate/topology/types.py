"""Scalar types of the topology file: durations, addresses, status ranges, hash keys.

Each is a string in YAML, parsed once at load into a typed value. Parsers raise
ValueError with a message that says what was expected; pydantic reports it with the
field's path and the loader adds file and line.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(us|ms|s|m|h)")
# The same with blanks around or inside it: refused with a hint at the one written form.
_SPACED_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(us|ms|s|m|h)\s*")
# (multiplier, divisor): dividing by an exact integer rounds once, so '250ms' is exactly
# float('250') / 1000 and format_duration can round-trip every value it prints.
_UNIT_SCALE = {"us": (1, 1_000_000), "ms": (1, 1000), "s": (1, 1), "m": (60, 1), "h": (3600, 1)}


def parse_duration(value: Any) -> float:
    """Parse '250ms', '3s', '1.5m', '2h', '100us' into float seconds.

    Rejects bare numbers (a duration must say its unit) and blanks anywhere in the
    text (`1 s`, ` 1s`): one written form, as every example and doc shows it.
    """
    if isinstance(value, float | int) and not isinstance(value, bool):
        if value == 0:
            return 0.0
        raise ValueError(f"duration {value!r} needs a unit, e.g. '{value}s' or '{value}ms'")
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as '250ms' or '3s', got {value!r}")
    m = _DURATION.fullmatch(value)
    if not m and (spaced := _SPACED_DURATION.fullmatch(value)):
        number, unit = spaced.groups()
        raise ValueError(
            f"invalid duration {value!r}: no blanks in a duration, write '{number}{unit}'"
        )
    if not m:
        raise ValueError(
            f"invalid duration {value!r}: expected a number and a unit (us, ms, s, m, h)"
        )
    multiplier, divisor = _UNIT_SCALE[m.group(2)]
    seconds = float(m.group(1)) * multiplier / divisor
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {value!r}: too large")
    return seconds


def _plain_number(x: Decimal) -> str:
    # Decimal(repr(float)) is the shortest exact text of a float, but may print with
    # an exponent, which parse_duration (like every duration in the file) rejects.
    text = format(x, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_duration(seconds: float) -> str:
    """The inverse of parse_duration, for dumping a model back to YAML/JSON.

    Sub-second values print in milliseconds when that text parses back to the same
    float, else in seconds; either way `parse_duration(format_duration(x)) == x`.
    """
    exact = Decimal(repr(float(seconds)))
    if 0 < seconds < 1:
        ms = _plain_number(exact * 1000)
        if float(ms) / 1000 == seconds:
            return f"{ms}ms"
    return f"{_plain_number(exact)}s"


Duration = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(format_duration)]

_HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True, slots=True)
class HostPort:
    """A host (IP literal or DNS name) and a TCP/UDP port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _check_host(host: str, text: str) -> str:
    if not host:
        raise ValueError(f"invalid address {text!r}: empty host")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", host):
        raise ValueError(f"invalid address {text!r}: {host!r} is not a valid IPv4 address")
    if len(host) > 253 or not all(_HOSTNAME_LABEL.match(p) for p in host.rstrip(".").split(".")):
        raise ValueError(
            f"invalid address {text!r}: {host!r} is neither an IP address nor a host name"
        )
    return host


def parse_hostport(value: Any) -> HostPort:
    """Parse 'host:port', '1.2.3.4:80' or '[::1]:80'; the port is required (1-65535)."""
    if isinstance(value, HostPort):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an address 'host:port', got {value!r}")
    text = value.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"invalid address {value!r}: expected '[v6addr]:port'")
        port_text = rest[1:]
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise ValueError(
                f"invalid address {value!r}: {host!r} is not an IPv6 address"
            ) from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"invalid address {value!r}: missing ':port'")
        if ":" in host:
            raise ValueError(f"invalid address {value!r}: write IPv6 addresses as '[addr]:port'")
        host = _check_host(host, value)
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"invalid address {value!r}: port must be a number from 1 to 65535")
    return HostPort(host, int(port_text))


Address = Annotated[HostPort, BeforeValidator(parse_hostport), PlainSerializer(str)]


@dataclass(frozen=True, slots=True)
class StatusRange:
    """An inclusive range of HTTP status codes."""

    low: int
    high: int

    def __contains__(self, status: object) -> bool:
        return isinstance(status, int) and self.low <= status <= self.high

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


def parse_status_range(value: Any) -> StatusRange:
    """Parse 200, '200', '200-399' or '2xx'."""
    if isinstance(value, StatusRange):
        return value
    text = str(value).strip().lower()
    m = re.fullmatch(r"([1-5])xx", text)
    if m:
        base = int(m.group(1)) * 100
        return StatusRange(base, base + 99)
    m = re.fullmatch(r"([0-9]{3})(?:\s*-\s*([0-9]{3}))?", text)
    if not m:
        raise ValueError(f"invalid status range {value!r}: expected '200', '200-399' or '2xx'")
    low = int(m.group(1))
    high = int(m.group(2) or low)
    if not 100 <= low <= high <= 599:
        raise ValueError(
            f"invalid status range {value!r}: codes must satisfy 100 <= low <= high <= 599"
        )
    return StatusRange(low, high)


StatusCodes = Annotated[StatusRange, BeforeValidator(parse_status_range), PlainSerializer(str)]

HASH_KEY_KINDS = ("header", "cookie", "query", "client_ip")


@dataclass(frozen=True, slots=True)
class HashKey:
    """What a consistent-hash pool hashes: a header, a cookie, a query argument or the client IP."""

    kind: str
    name: str = ""

    def __str__(self) -> str:
        return self.kind if self.kind == "client_ip" else f"{self.kind}:{self.name}"


def parse_hash_key(value: Any) -> HashKey:
    """Parse 'client_ip', 'header:X-Device-Id', 'cookie:sid' or 'query:uid'."""
    if isinstance(value, HashKey):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a hash key such as 'header:X-Device-Id', got {value!r}")
    kind, _, name = value.strip().partition(":")
    if kind not in HASH_KEY_KINDS:
        raise ValueError(
            f"invalid hash key {value!r}: "
            "expected client_ip, header:NAME, cookie:NAME or query:NAME"
        )
    if kind == "client_ip":
        if name:
            raise ValueError(f"invalid hash key {value!r}: client_ip takes no name")
        return HashKey("client_ip")
    if not name or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
        raise ValueError(f"invalid hash key {value!r}: {kind} needs a name, e.g. '{kind}:id'")
    return HashKey(kind, name.lower() if kind == "header" else name)


HashKeySpec = Annotated[HashKey, BeforeValidator(parse_hash_key), PlainSerializer(str)]
