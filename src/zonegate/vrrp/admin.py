"""The VRRP agent's admin endpoint: GET /status (JSON) and GET /metrics (Prometheus)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

import httptools
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from zonegate import adminhttp
from zonegate.vrrp.machine import State
from zonegate.vrrp.packet import DropReason

if TYPE_CHECKING:
    from zonegate.vrrp.agent import Agent

log = logging.getLogger("zonegate.vrrp")

_STATE_CODE = {State.INITIALIZE: 0, State.BACKUP: 1, State.MASTER: 2, State.FAULT: 3}


class AdminApp:
    """Answers admin requests from an agent's live state."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def handle(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"use GET\n"
        if path == "/status":
            doc = self.agent.status()
            return 200, "application/json", json.dumps(doc, indent=2).encode() + b"\n"
        if path == "/metrics":
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_Collector(self.agent))
            return 200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(registry)
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        return 404, "text/plain", b"not found: try /status, /metrics\n"

    async def handle_raw(self, method: str, target: bytes) -> tuple[int, str, bytes]:
        return await self.handle(method, httptools.parse_url(target).path.decode())


class _Collector:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Any:
        a = self.agent
        m = a.machine
        labels = ["instance", "vrid"]
        base = [a.name, str(m.cfg.vrid)]
        state = GaugeMetricFamily(
            "zonegate_vrrp_state",
            "Reported VRRP state: 0 Initialize, 1 Backup, 2 Master, 3 Fault",
            labels=labels,
        )
        state.add_metric(base, _STATE_CODE[m.state])
        is_master = GaugeMetricFamily(
            "zonegate_vrrp_master", "1 while this node holds the VIPs", labels=labels
        )
        is_master.add_metric(base, 1 if a.vips_held else 0)
        priority = GaugeMetricFamily("zonegate_vrrp_priority", "Configured priority", labels=labels)
        priority.add_metric(base, m.cfg.priority)
        effective = GaugeMetricFamily(
            "zonegate_vrrp_effective_priority",
            "Priority after tracking (what is advertised unless stopping or without quorum)",
            labels=labels,
        )
        effective.add_metric(base, m.priority)
        transitions = CounterMetricFamily(
            "zonegate_vrrp_transitions", "State changes, by new state", labels=[*labels, "to"]
        )
        for s in State:
            transitions.add_metric([*base, s.value], a.stats.transitions.get(s.value, 0))
        sent = CounterMetricFamily("zonegate_vrrp_adverts_sent", "Adverts sent", labels=labels)
        sent.add_metric(base, a.stats.adverts_sent)
        received = CounterMetricFamily(
            "zonegate_vrrp_adverts_received", "Valid adverts received", labels=labels
        )
        received.add_metric(base, a.stats.adverts_received)
        drops = CounterMetricFamily(
            "zonegate_vrrp_drops", "Received packets dropped, by reason", labels=[*labels, "reason"]
        )
        for r in DropReason:
            drops.add_metric([*base, r.value], a.stats.drops.get(r.value, 0))
        events = CounterMetricFamily(
            "zonegate_vrrp_events",
            "split_brain (a lower master seen while master), yield, reannounce, handoff, quorum",
            labels=[*labels, "kind"],
        )
        for kind in ("split_brain", "yield", "reannounce", "handoff", "quorum"):
            events.add_metric([*base, kind], a.stats.events.get(kind, 0))
        garp = CounterMetricFamily(
            "zonegate_vrrp_garp_sent", "Gratuitous ARP frames sent", labels=labels
        )
        garp.add_metric(base, a.garp.sent if a.garp is not None else 0)
        garp_failed = CounterMetricFamily(
            "zonegate_vrrp_garp_failed",
            "Gratuitous ARP frames the kernel refused (the link was down)",
            labels=labels,
        )
        garp_failed.add_metric(base, a.garp.failed if a.garp is not None else 0)
        track = GaugeMetricFamily(
            "zonegate_vrrp_track_up",
            "1 while a tracked check passes (unknown counts as up)",
            labels=[*labels, "check"],
        )
        for c in a.tracker.status():
            track.add_metric([*base, str(c["name"])], 0 if c["state"] == "down" else 1)
        yield from (state, is_master, priority, effective, transitions, sent, received, drops)
        yield from (events, garp, garp_failed, track)
        if a.inst.quorum is not None:
            lease = GaugeMetricFamily(
                "zonegate_vrrp_lease_held", "1 while the control-plane lease is held", labels=labels
            )
            lease.add_metric(base, 1 if a.lease_held else 0)
            yield lease


async def start_admin(agent: Agent, host: str, port: int) -> asyncio.Server:
    app = AdminApp(agent)
    server = await adminhttp.start_server(app.handle_raw, host, port)
    log.info("vrrp admin endpoint on %s:%d", host, port)
    return server


__all__ = ["AdminApp", "start_admin"]
