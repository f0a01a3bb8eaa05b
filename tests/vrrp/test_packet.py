"""The VRRPv3 codec: golden bytes written from RFC 5798 §5.1, each drop reason, fuzzing."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zonegate.errors import RemoteProtocolError
from zonegate.vrrp.packet import (
    VRRP_GROUP,
    Advert,
    DropReason,
    VrrpDecodeError,
    checksum,
    decode,
    decode_message,
    encode,
    encode_ip,
)

SRC = IPv4Address("10.9.0.1")
VIP = IPv4Address("10.9.0.100")

# vrid 51, priority 150, one address, 1 s = 100 cs, 10.9.0.100, from 10.9.0.1 to the group.
# Checksum by hand (RFC 1071), 16-bit words of the pseudo-header then the message:
#   0a09 0001 | e000 0012 | 0070 000c | 3133 9601 | 0064 0000 | 0a09 0064
#   sum = 0x1bc9d -> fold 0xbc9e -> complement 0x4361
GOLDEN = bytes.fromhex(
    "31"  # version 3, type 1
    "33"  # VRID 51
    "96"  # priority 150
    "01"  # count 1
    "0064"  # reserved 0, max adver int 100 cs
    "4361"  # checksum
    "0a090064"  # 10.9.0.100
)
# The same advert in unicast mode to 10.9.0.2: the checksum covers that destination.
#   0a09 0001 | 0a09 0002 | 0070 000c | 3133 9601 | 0064 0000 | 0a09 0064
#   sum = 0xe696 (no carry) -> complement 0x1969
GOLDEN_UNICAST = bytes.fromhex("313396010064" + "1969" + "0a090064")


def ip_header(payload: bytes, *, ttl: int = 255, proto: int = 112, src=SRC, dst=VRRP_GROUP):
    return (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0xC0,
            20 + len(payload),
            0,
            0,
            ttl,
            proto,
            0,
            src.packed,
            dst.packed,
        )
        + payload
    )


def advert(**kw) -> Advert:
    fields = {"vrid": 51, "priority": 150, "max_adver_int_cs": 100, "addresses": (VIP,)}
    fields.update(kw)
    return Advert(**fields)


def test_golden_multicast():
    assert encode(advert(), SRC, VRRP_GROUP) == GOLDEN


def test_golden_unicast():
    assert encode(advert(), SRC, IPv4Address("10.9.0.2")) == GOLDEN_UNICAST


def test_golden_decodes():
    got = decode(ip_header(GOLDEN), vrid=51)
    assert got.src == SRC
    assert got.dst == VRRP_GROUP
    assert got.ttl == 255
    assert got.advert == advert()


def test_several_addresses_and_max_interval():
    a = advert(
        addresses=(VIP, IPv4Address("10.9.0.101"), IPv4Address("192.0.2.7")),
        max_adver_int_cs=4095,
        priority=255,
    )
    wire = encode(a, SRC, VRRP_GROUP)
    assert len(wire) == 8 + 12
    assert wire[3] == 3
    assert wire[4:6] == b"\x0f\xff"
    assert decode(ip_header(wire)).advert == a


def test_checksum_of_valid_message_with_pseudo_header_is_zero():
    pseudo = SRC.packed + VRRP_GROUP.packed + bytes([0, 112, 0, 12])
    assert checksum(pseudo + GOLDEN) == 0


def test_checksum_odd_length():
    assert checksum(b"\x01") == checksum(b"\x01\x00")


def test_reserved_bits_ignored():
    msg = bytearray(GOLDEN)
    msg[4] |= 0xF0  # the 4 reserved bits
    msg[6:8] = b"\0\0"
    pseudo = SRC.packed + VRRP_GROUP.packed + bytes([0, 112, 0, len(msg)])
    msg[6:8] = struct.pack("!H", checksum(pseudo + bytes(msg)))
    assert decode(ip_header(bytes(msg))).advert.max_adver_int_cs == 100


def test_encode_ip_is_a_valid_datagram():
    dg = encode_ip(advert(), SRC, VRRP_GROUP)
    assert dg[1] == 0xC0  # TOS
    assert dg[8] == 255  # TTL
    assert checksum(dg[:20]) == 0
    assert decode(dg).advert == advert()


def _fix_checksum(msg: bytearray, dst=VRRP_GROUP) -> bytes:
    msg[6:8] = b"\0\0"
    pseudo = SRC.packed + dst.packed + bytes([0, 112, 0, len(msg)])
    msg[6:8] = struct.pack("!H", checksum(pseudo + bytes(msg)))
    return bytes(msg)


def _msg(**edits) -> bytes:
    m = bytearray(GOLDEN)
    for index, value in edits.items():
        m[int(index[1:])] = value
    return _fix_checksum(m)


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (b"", DropReason.TRUNCATED),
        (ip_header(GOLDEN)[:19], DropReason.TRUNCATED),
        (ip_header(GOLDEN)[:24], DropReason.BAD_LENGTH),  # total length says 32
        (ip_header(b"\x31\x33\x96"), DropReason.TRUNCATED),
        (b"\x65" + ip_header(GOLDEN)[1:], DropReason.NOT_IPV4),  # IP version 6
        (ip_header(GOLDEN, proto=17), DropReason.NOT_IPV4),
        (ip_header(GOLDEN, ttl=254), DropReason.BAD_TTL),
        (ip_header(GOLDEN, ttl=1), DropReason.BAD_TTL),
        (ip_header(_msg(b0=0x21)), DropReason.BAD_VERSION),  # VRRPv2
        (ip_header(_msg(b0=0x32)), DropReason.BAD_TYPE),
        (ip_header(_msg(b3=2)), DropReason.BAD_LENGTH),  # count 2, one address
        (ip_header(_msg(b3=0)), DropReason.BAD_LENGTH),
        (ip_header(GOLDEN[:6] + b"\x43\x62" + GOLDEN[8:]), DropReason.BAD_CHECKSUM),
        (ip_header(GOLDEN, dst=IPv4Address("10.9.0.2")), DropReason.BAD_CHECKSUM),
        (ip_header(_msg(b5=0)), DropReason.BAD_INTERVAL),
        (ip_header(_msg(b1=0)), DropReason.WRONG_VRID),
    ],
)
def test_drop_reasons(datagram: bytes, reason: DropReason):
    with pytest.raises(VrrpDecodeError) as info:
        decode(datagram, vrid=None)
    assert info.value.reason is reason
    assert isinstance(info.value, RemoteProtocolError)


def test_wrong_vrid_only_when_asked():
    assert decode(ip_header(GOLDEN)).advert.vrid == 51
    with pytest.raises(VrrpDecodeError) as info:
        decode(ip_header(GOLDEN), vrid=52)
    assert info.value.reason is DropReason.WRONG_VRID


def test_fragment_dropped():
    dg = bytearray(ip_header(GOLDEN))
    dg[6] = 0x20  # more fragments
    with pytest.raises(VrrpDecodeError) as info:
        decode(bytes(dg))
    assert info.value.reason is DropReason.NOT_IPV4


def test_ip_options_are_skipped():
    options = b"\x01\x01\x01\x00"  # NOP NOP NOP EOL
    dg = (
        struct.pack(
            "!BBHHHBBH4s4s", 0x46, 0, 24 + 12, 0, 0, 255, 112, 0, SRC.packed, VRRP_GROUP.packed
        )
        + options
        + GOLDEN
    )
    assert decode(dg).advert == advert()


def test_trailing_bytes_after_total_length_ignored():
    # Ethernet padding can follow a short datagram; the IP total length bounds it.
    assert decode(ip_header(GOLDEN) + b"\0" * 6).advert == advert()


def test_decode_message_alone():
    assert decode_message(GOLDEN, SRC, VRRP_GROUP) == advert()


@pytest.mark.parametrize(
    "kw",
    [
        {"vrid": 0},
        {"vrid": 256},
        {"priority": 256},
        {"priority": -1},
        {"max_adver_int_cs": 0},
        {"max_adver_int_cs": 4096},
        {"addresses": ()},
    ],
)
def test_advert_rejects_out_of_range(kw):
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies per field
        advert(**kw)


addresses = st.lists(st.integers(0, 2**32 - 1).map(IPv4Address), min_size=1, max_size=20).map(tuple)
adverts = st.builds(
    Advert,
    vrid=st.integers(1, 255),
    priority=st.integers(0, 255),
    max_adver_int_cs=st.integers(1, 4095),
    addresses=addresses,
)
ips = st.integers(0, 2**32 - 1).map(IPv4Address)


@given(adverts, ips, ips)
def test_round_trip(a: Advert, src: IPv4Address, dst: IPv4Address):
    got = decode(encode_ip(a, src, dst), vrid=a.vrid)
    assert got.advert == a
    assert (got.src, got.dst) == (src, dst)


@given(st.binary(max_size=128))
def test_random_bytes_raise_only_decode_error(data: bytes):
    try:
        decode(data)
    except VrrpDecodeError:
        pass


@given(adverts, st.data())
def test_mutated_adverts_raise_only_decode_error(a: Advert, data: st.DataObject):
    dg = bytearray(encode_ip(a, SRC, VRRP_GROUP))
    i = data.draw(st.integers(0, len(dg) - 1))
    dg[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(dg)))
    try:
        decode(bytes(dg[:cut]), vrid=a.vrid)
    except VrrpDecodeError:
        pass


@given(adverts, st.integers(0, 11 * 8 - 1))
def test_any_single_bit_flip_in_message_is_caught(a: Advert, bit: int):
    """The checksum catches every single-bit error in the VRRP message."""
    dg = bytearray(encode_ip(a, SRC, VRRP_GROUP))
    payload_bits = (len(dg) - 20) * 8
    bit %= payload_bits
    dg[20 + bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(VrrpDecodeError):
        decode(bytes(dg), vrid=a.vrid)
