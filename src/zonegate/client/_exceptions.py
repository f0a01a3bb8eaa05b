"""The SDK's exceptions.

```
ZonegateError (zonegate.errors)
└── ClientError                 the SDK could not do what was asked
    ├── ConfigUnavailable       no split config: no control plane answered, no cache
    │                           file, no `split=` seed
    └── ResolveError            a zone domain has no address (HTTPDNS, the system
                                resolver and the cache all failed); also an
                                httpx.ConnectError, so httpx code handles it as one
```

Network errors of the requests themselves stay httpx's own (`httpx.ConnectError`,
`httpx.ReadTimeout`, ...): the transport retries what it may and re-raises the rest
unchanged, as any httpx transport does.
"""

from __future__ import annotations

import httpx

from zonegate.errors import ZonegateError

__all__ = ["ClientError", "ConfigUnavailable", "ResolveError"]


class ClientError(ZonegateError):
    """The zonegate client SDK failed."""


class ConfigUnavailable(ClientError):
    """No split config: no control plane endpoint answered, there is no readable
    cache file, and no `split=` seed was given."""


class ResolveError(ClientError, httpx.ConnectError):
    """A zone domain could not be resolved (HTTPDNS, system resolver and cache)."""

    def __init__(self, host: str, why: str) -> None:
        super().__init__(f"cannot resolve {host}: {why}")
        self.host = host
        self.why = why
