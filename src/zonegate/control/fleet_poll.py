"""The control plane's poller of the runtimes' admin endpoints (see `control.fleet`).

Every `interval` (1 s) it GETs, concurrently, each zone's LB admin `/status` and each
of the zone's VRRP instances' admin `/status`, with a short timeout, and keeps the
latest `ZoneReport` per zone. A runtime that does not answer is reported unreachable
with the reason; nothing here ever fails the control plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from zonegate.control.fleet import LbReport, ZoneReport, lb_report, vrrp_report, zone_report
from zonegate.topology.schema import Topology
from zonegate.topology.types import HostPort

log = logging.getLogger("zonegate.control")

INTERVAL = 1.0
TIMEOUT = 0.5


def _url(address: HostPort) -> str:
    host = f"[{address.host}]" if ":" in address.host else address.host
    return f"http://{host}:{address.port}/status"


def vrrp_admins(topo: Topology) -> dict[str, list[tuple[str, HostPort]]]:
    """Per zone, its VRRP instances with an admin endpoint: (instance, address)."""
    out: dict[str, list[tuple[str, HostPort]]] = {}
    for name, inst in topo.vrrp.instances.items():
        if inst.admin is not None:
            out.setdefault(inst.zone, []).append((name, inst.admin))
    return out


class FleetPoller:
    """Polls the runtimes of every zone of a topology; `reports` is the latest view.

    Args:
        topo: zones (`lb_admin`) and VRRP instances (`admin`) to poll.
        interval: seconds between polls.
        clock: monotonic seconds, for rates.
    """

    def __init__(
        self,
        topo: Topology,
        *,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lbs = {name: z.lb_admin for name, z in topo.zones.items()}
        self.vrrp = vrrp_admins(topo)
        self.interval = interval
        self.clock = clock
        self.reports: dict[str, ZoneReport] = {name: ZoneReport(zone=name) for name in self.lbs}
        self._client = httpx.AsyncClient(timeout=TIMEOUT)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._client.aclose()

    async def _run(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self.interval)

    async def poll_once(self) -> Mapping[str, ZoneReport]:
        """Poll every runtime once and update `reports`."""
        zones = list(self.lbs)
        lb_polls = [self._get(self.lbs[z]) for z in zones]
        vrrp_keys = [(z, name) for z in zones for name, _ in self.vrrp.get(z, [])]
        vrrp_polls = [self._get(a) for z in zones for _, a in self.vrrp.get(z, [])]
        answers = await asyncio.gather(*lb_polls, *vrrp_polls)
        at = self.clock()
        lbs: dict[str, LbReport | None] = {}
        for zone, (doc, error) in zip(zones, answers[: len(zones)], strict=True):
            if self.lbs[zone] is None:
                lbs[zone] = None
            else:
                lbs[zone] = lb_report(zone, doc, error, at, self.reports[zone].lb)
        vrrps: dict[str, list[Any]] = {z: [] for z in zones}
        for (zone, name), (doc, error) in zip(vrrp_keys, answers[len(zones) :], strict=True):
            vrrps[zone].append(vrrp_report(name, doc, error))
        self.reports = {z: zone_report(z, lbs[z], vrrps[z]) for z in zones}
        return self.reports

    async def _get(self, address: HostPort | None) -> tuple[dict[str, Any] | None, str]:
        if address is None:
            return None, ""
        try:
            r = await self._client.get(_url(address))
        except httpx.HTTPError as e:
            return None, f"{e.__class__.__name__}: {e}" if str(e) else e.__class__.__name__
        if r.status_code != 200:
            return None, f"HTTP {r.status_code}"
        try:
            doc = r.json()
        except ValueError:
            return None, "not JSON"
        return (doc, "") if isinstance(doc, dict) else (None, "not a JSON object")
