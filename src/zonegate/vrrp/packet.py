"""VRRPv3 advertisements on the wire (RFC 5798 §5), IPv4 only. Pure: bytes in, values out.

Theory of operation
-------------------
An advertisement is an IPv4 datagram of protocol 112 sent with TTL 255 to
224.0.0.18 (or to each unicast peer). Its payload (RFC 5798 §5.1)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |(rsvd) |     Max Adver Int     |          Checksum             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                       IPv4 Address(es)                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

The checksum is the Internet checksum (RFC 1071) of the VRRP message preceded by
the IPv4 pseudo-header (source, destination, zero, protocol 112, VRRP length), as
for UDP (RFC 5798 §5.2.8). The destination is the one in the IP header: 224.0.0.18
in multicast mode, the peer's address in unicast mode (keepalived does the same).

`decode` takes a whole IPv4 datagram as a raw socket returns it, header included, so
that the TTL can be checked (RFC 5798 §7.1: a packet with TTL != 255 may come from
off-link and MUST be dropped). Every refusal is a `VrrpDecodeError` carrying a
`DropReason`, which the agent counts per reason; `decode` never raises anything
else, whatever the bytes (property-tested).

`encode` builds the payload only (the kernel adds the IP header; the agent sets TTL
255 and TOS 0xc0 on the socket); `encode_ip` builds a whole datagram, for tests and
scripted peers.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

from zonegate.errors import RemoteProtocolError

VRRP_PROTOCOL = 112  # IANA protocol number, RFC 5798 §5.2
VRRP_GROUP = IPv4Address("224.0.0.18")  # RFC 5798 §5.1.1.2
VRRP_TTL = 255  # RFC 5798 §5.1.1.3: sent with TTL 255, received TTL must be 255
VRRP_VERSION = 3  # RFC 5798 §5.2.1
TYPE_ADVERTISEMENT = 1  # RFC 5798 §5.2.2: the only type defined
PRIORITY_OWNER = 255  # RFC 5798 §5.2.4: the router that owns the addresses
PRIORITY_STOP = 0  # RFC 5798 §5.2.4: the master stops; a backup takes over after Skew_Time
MAX_ADVER_INT_CS = 0xFFF  # RFC 5798 §5.2.7: 12 bits of centiseconds (40.95 s)
HEADER_LEN = 8  # RFC 5798 §5.1: version .. checksum
IPV4_HEADER_MIN = 20
TOS_INTERNETWORK_CONTROL = 0xC0  # DSCP CS6, what keepalived and routers send VRRP with
MAX_ADDRESSES = 255  # the count is one octet


class DropReason(enum.Enum):
    """Why a received datagram was dropped; the value is the metric label."""

    TRUNCATED = "truncated"
    """Shorter than an IPv4 header plus the 8-byte VRRP header."""
    NOT_IPV4 = "not_ipv4"
    """Not an IPv4 datagram of protocol 112, or a fragment."""
    BAD_TTL = "bad_ttl"
    """TTL is not 255 (RFC 5798 §7.1)."""
    BAD_VERSION = "bad_version"
    """VRRP version is not 3 (VRRPv2 adverts included)."""
    BAD_TYPE = "bad_type"
    """Type is not 1 (ADVERTISEMENT)."""
    BAD_LENGTH = "bad_length"
    """Lengths disagree: IP total length, count of addresses, payload size; or count 0."""
    BAD_CHECKSUM = "bad_checksum"
    """The checksum over the pseudo-header and the message does not verify."""
    BAD_INTERVAL = "bad_interval"
    """Max Adver Int is 0: Master_Down_Interval would be Skew_Time alone."""
    WRONG_VRID = "wrong_vrid"
    """Another virtual router's advert on the same link (counted, never an error)."""
    OWN = "own"
    """Our own advert looped back (counted by the agent)."""


class VrrpDecodeError(RemoteProtocolError):
    """A received VRRP datagram was dropped; `reason` says why."""

    def __init__(self, reason: DropReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Advert:
    """A VRRPv3 advertisement's content (RFC 5798 §5.2).

    Attributes:
        vrid: Virtual router id, 1-255.
        priority: 0 (master stopping) .. 255 (address owner).
        max_adver_int_cs: Advertisement interval in centiseconds, 1-4095.
        addresses: The virtual IPv4 addresses, 1-255 of them.
    """

    vrid: int
    priority: int
    max_adver_int_cs: int
    addresses: tuple[IPv4Address, ...]

    def __post_init__(self) -> None:
        if not 1 <= self.vrid <= 255:
            raise ValueError(f"vrid must be 1-255, got {self.vrid}")
        if not 0 <= self.priority <= 255:
            raise ValueError(f"priority must be 0-255, got {self.priority}")
        if not 1 <= self.max_adver_int_cs <= MAX_ADVER_INT_CS:
            raise ValueError(f"max_adver_int_cs must be 1-4095, got {self.max_adver_int_cs}")
        if not 1 <= len(self.addresses) <= MAX_ADDRESSES:
            raise ValueError(f"an advert carries 1-255 addresses, got {len(self.addresses)}")


@dataclass(frozen=True, slots=True)
class Received:
    """A decoded datagram: the IP header fields the state machine needs and the advert."""

    src: IPv4Address
    dst: IPv4Address
    ttl: int
    advert: Advert


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): one's complement of the one's complement sum.

    Args:
        data: Any bytes; an odd length is padded with a zero byte.

    Returns:
        The 16-bit checksum; 0 when `data` already contains a valid checksum.
    """
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo_header(src: IPv4Address, dst: IPv4Address, length: int) -> bytes:
    # RFC 5798 §5.2.8 -> RFC 2460 §8.1 style pseudo-header, IPv4 layout as for UDP.
    return src.packed + dst.packed + struct.pack("!BBH", 0, VRRP_PROTOCOL, length)


def encode(advert: Advert, src: IPv4Address, dst: IPv4Address) -> bytes:
    """The VRRP message (no IP header) of `advert`, with its checksum.

    Args:
        advert: What to announce.
        src: The IPv4 source address the datagram will carry.
        dst: Its destination: 224.0.0.18, or a unicast peer.

    Returns:
        8 + 4 * len(addresses) bytes.
    """
    body = struct.pack(
        "!BBBBH",
        (VRRP_VERSION << 4) | TYPE_ADVERTISEMENT,
        advert.vrid,
        advert.priority,
        len(advert.addresses),
        advert.max_adver_int_cs & MAX_ADVER_INT_CS,  # the 4 reserved bits are 0
    )
    addrs = b"".join(a.packed for a in advert.addresses)
    length = HEADER_LEN + len(addrs)
    csum = checksum(_pseudo_header(src, dst, length) + body + b"\0\0" + addrs)
    return body + struct.pack("!H", csum) + addrs


def encode_ip(
    advert: Advert,
    src: IPv4Address,
    dst: IPv4Address,
    *,
    ttl: int = VRRP_TTL,
    tos: int = TOS_INTERNETWORK_CONTROL,
    ident: int = 0,
) -> bytes:
    """A whole IPv4 datagram carrying `advert` (for tests and scripted peers)."""
    payload = encode(advert, src, dst)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        tos,
        IPV4_HEADER_MIN + len(payload),
        ident,
        0,
        ttl,
        VRRP_PROTOCOL,
        0,
        src.packed,
        dst.packed,
    )
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


def decode(datagram: bytes, *, vrid: int | None = None) -> Received:
    """Decode an IPv4 datagram (header included) carrying a VRRPv3 advertisement.

    Checks, in this order: IPv4, protocol 112, not a fragment, lengths, TTL 255,
    version 3, type 1, count ≥ 1 and matching the length, checksum, interval ≥ 1,
    and the VRID when `vrid` is given. The IP header checksum is the kernel's job.

    Args:
        datagram: The bytes a raw socket returned.
        vrid: The virtual router we run; another VRID is dropped as WRONG_VRID.

    Returns:
        The source, destination, TTL and advert.

    Raises:
        VrrpDecodeError: With the first failed check's `DropReason`; nothing else.
    """
    data = bytes(datagram)
    if len(data) < IPV4_HEADER_MIN:
        raise VrrpDecodeError(DropReason.TRUNCATED, f"{len(data)} bytes")
    ver_ihl, _tos, total, _ident, frag, ttl, proto = struct.unpack_from("!BBHHHBB", data)
    if ver_ihl >> 4 != 4:
        raise VrrpDecodeError(DropReason.NOT_IPV4, f"IP version {ver_ihl >> 4}")
    if proto != VRRP_PROTOCOL:
        raise VrrpDecodeError(DropReason.NOT_IPV4, f"protocol {proto}")
    if frag & 0x3FFF:  # more-fragments flag or an offset: VRRP never fragments
        raise VrrpDecodeError(DropReason.NOT_IPV4, "fragment")
    ihl = (ver_ihl & 0x0F) * 4
    if ihl < IPV4_HEADER_MIN:
        raise VrrpDecodeError(DropReason.BAD_LENGTH, f"IP header length {ihl}")
    if total > len(data) or total < ihl:
        raise VrrpDecodeError(DropReason.BAD_LENGTH, f"IP total length {total}, got {len(data)}")
    if total - ihl < HEADER_LEN:
        raise VrrpDecodeError(DropReason.TRUNCATED, f"VRRP message of {total - ihl} bytes")
    src = IPv4Address(data[12:16])
    dst = IPv4Address(data[16:20])
    if ttl != VRRP_TTL:
        raise VrrpDecodeError(DropReason.BAD_TTL, f"TTL {ttl} from {src}")
    return Received(src, dst, ttl, decode_message(data[ihl:total], src, dst, vrid=vrid))


def decode_message(
    message: bytes, src: IPv4Address, dst: IPv4Address, *, vrid: int | None = None
) -> Advert:
    """Decode the VRRP message of a datagram whose IP header was already read.

    Args:
        message: The IP payload.
        src: IP source (enters the checksum).
        dst: IP destination (enters the checksum).
        vrid: See `decode`.

    Raises:
        VrrpDecodeError: See `decode`.
    """
    if len(message) < HEADER_LEN:
        raise VrrpDecodeError(DropReason.TRUNCATED, f"VRRP message of {len(message)} bytes")
    ver_type, got_vrid, priority, count, rsvd_int, _csum = struct.unpack_from("!BBBBHH", message)
    if ver_type >> 4 != VRRP_VERSION:
        raise VrrpDecodeError(DropReason.BAD_VERSION, f"version {ver_type >> 4} from {src}")
    if ver_type & 0x0F != TYPE_ADVERTISEMENT:
        raise VrrpDecodeError(DropReason.BAD_TYPE, f"type {ver_type & 0x0F} from {src}")
    if count == 0 or len(message) != HEADER_LEN + 4 * count:
        raise VrrpDecodeError(
            DropReason.BAD_LENGTH, f"{count} addresses in a {len(message)}-byte message"
        )
    if checksum(_pseudo_header(src, dst, len(message)) + message) != 0:
        raise VrrpDecodeError(DropReason.BAD_CHECKSUM, f"from {src}")
    interval = rsvd_int & MAX_ADVER_INT_CS  # RFC 5798 §5.2.6: reserved bits are ignored
    if interval == 0:
        raise VrrpDecodeError(DropReason.BAD_INTERVAL, f"interval 0 from {src}")
    if got_vrid == 0:
        raise VrrpDecodeError(DropReason.WRONG_VRID, "VRID 0")
    if vrid is not None and got_vrid != vrid:
        raise VrrpDecodeError(DropReason.WRONG_VRID, f"VRID {got_vrid} from {src}")
    addrs = tuple(
        ipaddress.IPv4Address(message[i : i + 4]) for i in range(HEADER_LEN, len(message), 4)
    )
    return Advert(got_vrid, priority, interval, addrs)


__all__ = [
    "MAX_ADVER_INT_CS",
    "PRIORITY_OWNER",
    "PRIORITY_STOP",
    "TOS_INTERNETWORK_CONTROL",
    "VRRP_GROUP",
    "VRRP_PROTOCOL",
    "VRRP_TTL",
    "Advert",
    "DropReason",
    "Received",
    "VrrpDecodeError",
    "checksum",
    "decode",
    "decode_message",
    "encode",
    "encode_ip",
]
