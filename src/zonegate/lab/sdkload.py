"""The demo's load routed by the SDK: `zonegate.client.AsyncTransport` per device.

The SDK's transport belongs to one device (its `device_id` picks the zone), so the
demo runs `groups` devices, each with its own `AsyncTransport` inside one shared
`httpx.AsyncClient` per device; the load generator draws a device for each request
and sends ``GET http://SPLIT-DOMAIN/`` through that device's client. The SDK does the
rest exactly as in an app: the split map from the control plane, the rewrite to the
zone's domain (reached through a ``hosts`` override, since the demo's LBs listen on
127.0.0.1 and a port per zone rather than on the VIPs the GSLB hands out), the
refresh on a newer ``X-Zonegate-Version``, the per-zone breakers and the retry of an
idempotent GET on the other zone after a network error.

What the report needs from each request is read from the outside: the device's zone
is `AsyncTransport.route(domain).zone` when it is sent; the zone that answered is the
one whose address the SDK sent it to (an inner transport notes the URL; the caller's
`zone_at` names the zone: the demo by listener port, the lab by VIP). The client
"follows" a control version once every device's transport does (`version_events`),
checked every 20 ms.

Cost: an `AsyncTransport` takes about 70 ms of CPU to build (its control and HTTPDNS
clients each load the CA bundle) and about 1 ms per request, so the demo runs 40
SDK devices rather than thousands.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Mapping, Sequence

import httpx

import zonegate.client as zc
from zonegate.balance.shard import zone_for
from zonegate.lab.load import Outcome
from zonegate.topology.schema import SplitMap

__all__ = ["SdkRouter"]

VERSION_POLL = 0.02
DEFAULT_TIMEOUT = httpx.Timeout(3.0)
SENT_TO = "zonegate_sent_to"  # response extension: the URL the SDK sent the request to


def _error_kind(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, zc.ResolveError):
        return "resolve"
    if isinstance(exc, httpx.ConnectError):
        return "refused"
    if isinstance(exc, (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)):
        return "reset"
    return type(exc).__name__


class _Tagging(httpx.AsyncBaseTransport):
    """The SDK's inner transport: notes on each response the URL the SDK sent it to
    (the client hands back its own request, not the one the SDK rewrote)."""

    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        self.inner = httpx.AsyncHTTPTransport(verify=ssl_context)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        response.extensions[SENT_TO] = request.url
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class SdkRouter:
    """`groups` SDK devices (see the module doc); implements `zonegate.lab.load.Router`.

    Args:
        control: control plane base URLs.
        domain: the split domain requested.
        zone_at: the zone whose address a request went to (its URL after the SDK's
            rewrite and resolution), or None if no zone has that address.
        clock: seconds since the demo started.
        groups: devices (transports).
        hosts: the SDK's `hosts` override (zone domain -> "host:port").
        resolver: the SDK's resolver hook (None: HTTPDNS or the system's DNS).
        timeout: each request's timeout.
        name: what the report calls this router.
    """

    def __init__(
        self,
        control: Sequence[str],
        domain: str,
        zone_at: Callable[[httpx.URL], str | None],
        clock: Callable[[], float],
        groups: int = 40,
        *,
        hosts: Mapping[str, str] | None = None,
        resolver: Callable[[str], list[str]] | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        name: str = "one AsyncTransport each",
    ) -> None:
        self.name = f"zonegate.client SDK ({groups} devices, {name})"
        self.domain = domain
        self.clock = clock
        self.version = 0
        self.version_events: list[tuple[float, int]] = []
        self.devices = [f"sdk-dev-{i:04d}" for i in range(groups)]
        self._zone_at = zone_at
        # One TLS context for every device: each would load the CA bundle (~30 ms).
        tls = ssl.create_default_context()
        self._transports = {
            dev: zc.AsyncTransport(
                control=list(control),
                device_id=dev,
                cache_path=False,
                hosts=hosts,
                resolver=resolver,
                refresh_interval=None,
                transport=_Tagging(tls),
            )
            for dev in self.devices
        }
        self._clients = {
            dev: httpx.AsyncClient(transport=t, timeout=timeout)
            for dev, t in self._transports.items()
        }
        self._url = f"http://{domain}/"
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Every device gets its first config from the control plane."""
        try:
            await asyncio.gather(*(t.start() for t in self._transports.values()))
        except zc.ClientError as exc:
            raise httpx.ConnectError(f"the SDK has no config: {exc}") from exc
        self._note_version()
        self._watch = asyncio.get_running_loop().create_task(self._watch_versions())

    def _note_version(self) -> None:
        v = min(t.version for t in self._transports.values())
        if v > self.version:
            self.version = v
            self.version_events.append((self.clock(), v))

    async def _watch_versions(self) -> None:
        while True:
            await asyncio.sleep(VERSION_POLL)
            self._note_version()

    def home_of(self, device_id: str) -> str:
        t = self._transports.get(device_id) or next(iter(self._transports.values()))
        config = t.config
        if config is None:
            return ""
        if device_id in self._transports:
            r = t.route(self.domain)
            return r.zone if r is not None else ""
        split: SplitMap | None = config.split.get(self.domain)
        found = zone_for(device_id, split) if split is not None else None
        return found[0] if found is not None else ""

    async def request(self, device_id: str) -> Outcome:
        transport = self._transports[device_id]
        r = transport.route(self.domain)
        home = r.zone if r is not None else ""
        try:
            resp = await self._clients[device_id].get(self._url)
        except httpx.HTTPError as exc:
            return Outcome(home, "", 0, _error_kind(exc), home, 0, False)
        sent_to = resp.extensions.get(SENT_TO)
        zone = (self._zone_at(sent_to) if sent_to is not None else None) or "?"
        value = resp.headers.get("x-zonegate-version", "0")
        version = int(value) if value.isdigit() else 0
        backend = resp.headers.get("x-backend", "")
        served = resp.headers.get("x-zone", "")
        return Outcome(zone, backend, resp.status_code, "", home, version, zone != home, served)

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                await client.aclose()
