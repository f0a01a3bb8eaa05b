"""The SDK's routing decision: which zone domain serves a request of this device.

Theory of operation
-------------------
The control plane publishes a desired state (`GET /v1/state`): a version, per split
domain a `SplitMap` (modulus and per-zone `[lower, upper)` ranges with the zone's own
domain), and the admin state of every zone. The SDK keeps the latest one it has as a
`ClientConfig` and, per request::

    host ── split domain? ── no ──► untouched (not ours)
              │ yes
              ▼
    shard = shard_of(device_id, sharding)           (balance.shard: SHA-256, first
    zone  = the zone with lower <= shard < upper      8 bytes big-endian, mod N)
              │
              ▼
    Route(host, zone, domain = that zone's domain, shard)

`zone_order` then lists where a request may go, best first: the device's zone, then
the other zones of the map in map order starting after it (a ring, so with three
zones the devices of one failing zone do not all land on the same neighbour only
by accident of order), enabled zones before drained or disabled ones. The failover
code walks that list; this module only decides, it never looks at health.

The hash is `zonegate.balance.shard.shard_hash`, re-exported unchanged: the SDK, the
HTTPDNS server and every other-language SDK compute the same shard (published
vectors in tests/vectors/shard.json).

This module is pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from zonegate.balance.shard import shard_hash, shard_of
from zonegate.topology.schema import SplitMap

__all__ = [
    "ClientConfig",
    "Route",
    "normalize_host",
    "route",
    "shard_hash",
    "shard_of",
    "zone_order",
    "zones_of",
]

ENABLED = "enabled"


def normalize_host(host: str) -> str:
    """A host name as the split maps are keyed: lower case, no trailing dot."""
    return host.lower().rstrip(".")


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """The part of the control plane's desired state the SDK uses, as of one version.

    Attributes:
        version: the control plane's version (>= 1), or 0 for a seed given in code.
        split: per split domain (normalized, see `normalize_host`), its split map.
        zones: admin state per zone ("enabled", "drain", "disabled"); a zone missing
            here is enabled.
    """

    version: int
    split: Mapping[str, SplitMap]
    zones: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_state(cls, doc: Mapping[str, Any]) -> ClientConfig:
        """Read a `GET /v1/state` document (or a cache file holding one).

        Unknown top-level keys are ignored, so an older SDK reads a newer control
        plane's state; the split maps themselves are checked strictly.

        Args:
            doc: the decoded JSON object.

        Returns:
            The config.

        Raises:
            ValueError: not an object, no integer `version` >= 1, or a split map that
                does not parse.
        """
        if not isinstance(doc, Mapping):
            raise ValueError("state: expected a JSON object")
        version = doc.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"state: version must be an integer >= 1, got {version!r}")
        return cls(
            version=version,
            split=_splits(doc.get("split", {})),
            zones=_zones(doc.get("zones", {})),
        )

    @classmethod
    def seed(cls, split: Mapping[str, SplitMap | Mapping[str, Any]]) -> ClientConfig:
        """A version-0 config from split maps given in code (`Transport(split=...)`).

        Any version the control plane announces replaces it.

        Raises:
            ValueError: a split map that does not parse.
        """
        return cls(version=0, split=_splits(split), zones={})

    def zone_domains(self) -> list[str]:
        """Every zone domain of every split map, without duplicates, in map order."""
        seen: dict[str, None] = {}
        for split in self.split.values():
            for zone in split.zones.values():
                seen.setdefault(normalize_host(zone.domain), None)
        return list(seen)


def _splits(raw: object) -> dict[str, SplitMap]:
    if not isinstance(raw, Mapping):
        raise ValueError("state: split must be an object")
    out: dict[str, SplitMap] = {}
    for domain, value in raw.items():
        if not isinstance(domain, str):
            raise ValueError(f"state: split key {domain!r} is not a string")
        try:
            split = value if isinstance(value, SplitMap) else SplitMap.model_validate(value)
        except ValidationError as e:
            raise ValueError(f"state: split[{domain!r}]: {e}") from None
        out[normalize_host(domain)] = split
    return out


def _zones(raw: object) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise ValueError("state: zones must be an object")
    return {str(k): str(v) for k, v in raw.items()}


@dataclass(frozen=True, slots=True)
class Route:
    """Where a device's request for a split domain belongs.

    Attributes:
        host: the split domain asked for (normalized).
        zone: the zone whose range holds the device's shard.
        domain: that zone's domain (normalized), e.g. api-cp.example.test.
        shard: `shard_of(device_id, sharding)`.
    """

    host: str
    zone: str
    domain: str
    shard: int


def route(config: ClientConfig, host: str, device_id: str) -> Route | None:
    """The zone a device's request for `host` belongs to.

    Args:
        config: the split config in force.
        host: the request's host (any case, trailing dot allowed).
        device_id: the DeviceID (any string; hashed as UTF-8).

    Returns:
        The route, or None when `host` is not a split domain, or when no range holds
        the shard (only with ranges that do not tile, which the control plane refuses).

    Raises:
        ValueError: `device_id` has no UTF-8 encoding (a lone surrogate).
    """
    name = normalize_host(host)
    split = config.split.get(name)
    if split is None:
        return None
    shard = shard_of(device_id, split.sharding)
    for zone_name, zone in split.zones.items():
        if zone.lower <= shard < zone.upper:
            return Route(name, zone_name, normalize_host(zone.domain), shard)
    return None


def zone_order(config: ClientConfig, r: Route) -> list[tuple[str, str]]:
    """Where a routed request may go, best first: `(zone, zone domain)` pairs.

    The route's own zone first, then the map's other zones in map order starting
    after it (wrapping around). Zones whose admin state is not "enabled" go last, in
    the same relative order, so a disabled zone is only tried when nothing else is
    left; that applies to the route's own zone too.

    Args:
        config: the config the route came from.
        r: the route (its host must be a split domain of `config`).

    Returns:
        Every zone of the domain's split map exactly once.

    Raises:
        ValueError: `r.host` is not a split domain of `config`.
    """
    split = config.split.get(r.host)
    if split is None:
        raise ValueError(f"{r.host!r} is not a split domain of config version {config.version}")
    names = list(split.zones)
    start = names.index(r.zone) if r.zone in names else 0
    ring = names[start:] + names[:start]
    pairs = [(z, normalize_host(split.zones[z].domain)) for z in ring]
    enabled = [p for p in pairs if config.zones.get(p[0], ENABLED) == ENABLED]
    others = [p for p in pairs if config.zones.get(p[0], ENABLED) != ENABLED]
    return enabled + others


def zones_of(config: ClientConfig) -> Sequence[str]:
    """Every zone named by any split map, in first-seen order."""
    seen: dict[str, None] = {}
    for split in config.split.values():
        for name in split.zones:
            seen.setdefault(name, None)
    return list(seen)
