"""zonegate's client SDK: DeviceID traffic split, failover and HTTPDNS for httpx.

    import httpx, zonegate.client as zc

    transport = zc.Transport(
        control=["https://cfg-cp.example.test", "https://cfg-yq.example.test"],
        device_id="a1b2c3",
        httpdns=["https://httpdns.example.test"],
    )
    client = httpx.Client(transport=transport)        # AsyncTransport: httpx.AsyncClient
    client.get("https://api.example.test/v1/feed")    # api-cp or api-yq by the split map

A request for a split domain goes to the zone domain whose `[lower, upper)` holds
`shard_hash(device_id) % sharding` (the hash of `zonegate.balance.shard`, with
published vectors); a newer `X-Zonegate-Version` on a response refreshes the split
config in the background; network errors open a per-zone breaker and move the device
to the next zone; idempotent requests are retried once there. See docs/client.md.
"""

from zonegate.client._addresses import CachePolicy, RankPolicy
from zonegate.client._client import AsyncTransport, Transport, is_idempotent
from zonegate.client._exceptions import ClientError, ConfigUnavailable, ResolveError
from zonegate.client._failover import BreakerPolicy, BreakerState
from zonegate.client._follow import VERSION_HEADER
from zonegate.client._httpdns import Resolver, system_resolver
from zonegate.client._shard import ClientConfig, Route, route, shard_hash, shard_of

__all__ = [
    "VERSION_HEADER",
    "AsyncTransport",
    "BreakerPolicy",
    "BreakerState",
    "CachePolicy",
    "ClientConfig",
    "ClientError",
    "ConfigUnavailable",
    "RankPolicy",
    "ResolveError",
    "Resolver",
    "Route",
    "Transport",
    "is_idempotent",
    "route",
    "shard_hash",
    "shard_of",
    "system_resolver",
]
