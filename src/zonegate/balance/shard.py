"""The traffic-split hash: which zone a device belongs to.

Theory of operation
-------------------
A split map (`Topology.split[domain]`, a `SplitMap`) cuts the integers
`[0, sharding)` into half-open ranges, one per zone. A device belongs to the zone
whose range holds its shard::

    shard = H(DeviceID) mod sharding          zone: lower <= shard < upper

    0            50                100        (sharding 100)
    [ changping  )[   yanqing      )

The HTTPDNS server, the DNS control plane and every SDK (any language) must compute
the same shard for the same DeviceID, so H is fixed forever and is simple to write
anywhere:

1. Encode the DeviceID as UTF-8 bytes (no normalisation: no case folding, no
   trimming, no Unicode NFC; the empty string is a valid ID).
2. Take its SHA-256 digest (FIPS 180-4), 32 bytes.
3. Read the first 8 bytes as a big-endian unsigned 64-bit integer.
4. Reduce it modulo `sharding` (an integer ≥ 1) with unsigned arithmetic.

Worked example, DeviceID "device-1", sharding 100::

    UTF-8 bytes      64 65 76 69 63 65 2d 31
    SHA-256          03204de92e11fc8c528139be419065920eb83dbff1a4663bbea455aa6e9702bd
    first 8 bytes    03 20 4d e9 2e 11 fc 8c
    as uint64 (BE)   0x03204de92e11fc8c = 225265645264174220
    mod 100          20

so with the ranges above "device-1" belongs to changping. In other languages: Java
`Long.remainderUnsigned(ByteBuffer.wrap(sha256, 0, 8).getLong(), sharding)`; Go
`binary.BigEndian.Uint64(sum[:8]) % uint64(sharding)`; JavaScript
`BigInt.asUintN(64, view.getBigUint64(0)) % BigInt(sharding)` (use BigInt: a 64-bit
value does not fit a JS number). `tests/vectors/shard.json` lists published vectors
(unicode, empty and long IDs; sharding 7, 100, 1000) every implementation must pass.

Why SHA-256 rather than a faster hash: every platform ships it (Java, Go, Swift,
Kotlin, JavaScript's WebCrypto, Python's hashlib), so no SDK needs a dependency, and
its output is uniform, so each shard gets 1/sharding of the devices. The modulo bias
of a 64-bit value over sharding ≤ 1,000,000 is below 1e-13. One hash per request is
not a hot-path cost.

A range with `lower == upper` is empty and owns no device: that is how a zone is
cut out of the split (the control plane's cut-over). Ranges that tile
`[0, sharding)` are checked by `topology.validate`; this module assumes them.

This module is pure: no I/O, no clock.
"""

from __future__ import annotations

from hashlib import sha256
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zonegate.topology.schema import SplitMap, SplitZone

__all__ = ["shard_hash", "shard_of", "zone_for"]


def shard_hash(device_id: str) -> int:
    """The 64-bit hash of a DeviceID: the first 8 bytes of SHA-256(UTF-8), big-endian.

    Args:
        device_id: any string, the empty one included.

    Returns:
        An integer in `[0, 2**64)`.

    Raises:
        ValueError: `device_id` holds a lone surrogate and has no UTF-8 encoding
            (UnicodeEncodeError is a ValueError).
    """
    return int.from_bytes(sha256(device_id.encode("utf-8")).digest()[:8], "big")


def shard_of(device_id: str, sharding: int) -> int:
    """The shard of a device: `shard_hash(device_id) % sharding`.

    Args:
        device_id: the DeviceID as the client sends it.
        sharding: the split map's modulus, an integer ≥ 1.

    Returns:
        An integer in `[0, sharding)`.

    Raises:
        ValueError: `sharding` is below 1 (or not an int), or `device_id` cannot be
            encoded as UTF-8.
    """
    if isinstance(sharding, bool) or not isinstance(sharding, int) or sharding < 1:
        raise ValueError(f"sharding must be an integer >= 1, got {sharding!r}")
    return shard_hash(device_id) % sharding


def zone_for(device_id: str, split: SplitMap) -> tuple[str, SplitZone] | None:
    """The zone of a split map that owns a device.

    Args:
        device_id: the DeviceID.
        split: the domain's split map; its non-empty ranges should tile
            `[0, split.sharding)` (topology.validate checks this).

    Returns:
        `(zone name, SplitZone)` for the zone with `lower <= shard < upper`, or None
        when no range holds the shard (only possible with ranges that do not tile).
        Empty ranges (`lower == upper`) never match. Were ranges to overlap, the
        first zone in the map's order would win.

    Raises:
        ValueError: as `shard_of`.
    """
    shard = shard_of(device_id, split.sharding)
    for name, zone in split.zones.items():
        if zone.lower <= shard < zone.upper:
            return name, zone
    return None
