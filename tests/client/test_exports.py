"""The public surface of zonegate.client is pinned: a change here is an API change."""

from __future__ import annotations

import zonegate.client as zc

EXPORTS = {
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
}


def test_all_is_pinned():
    assert set(zc.__all__) == EXPORTS
    assert len(zc.__all__) == len(EXPORTS)


def test_every_export_exists_and_public_names_are_exported():
    for name in zc.__all__:
        assert hasattr(zc, name), name
    public = {n for n in vars(zc) if not n.startswith("_")}
    assert public == EXPORTS


def test_exception_tree():
    import httpx

    from zonegate.errors import ZonegateError

    assert issubclass(zc.ClientError, ZonegateError)
    assert issubclass(zc.ConfigUnavailable, zc.ClientError)
    assert issubclass(zc.ResolveError, zc.ClientError)
    assert issubclass(zc.ResolveError, httpx.ConnectError)
