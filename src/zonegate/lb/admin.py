"""The LB admin endpoint: /metrics, /status, /healthz, drain/enable, reload.

Served on its own port by the process that owns the health hub. Small on purpose:
asyncio streams and httptools, one request per connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httptools
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from zonegate import adminhttp
from zonegate.lb.hub import HealthHub
from zonegate.lb.stats import ERROR_KINDS, LATENCY_BUCKETS, STATUS_CLASSES

log = logging.getLogger("zonegate.admin")


class AdminApp:
    """Request handling of the admin endpoint, over a hub and a stats gatherer."""

    def __init__(
        self,
        hub: HealthHub,
        gather_stats: Callable[[], Awaitable[dict[str, Any]]],
        reload: Callable[[], Awaitable[tuple[bool, str]]],
    ) -> None:
        self.hub = hub
        self.gather_stats = gather_stats
        self.reload = reload
        self.draining = False

    async def handle(self, method: str, path: str) -> tuple[int, str, bytes]:
        """Answer one request: (status, content type, body)."""
        if path == "/healthz" and method in ("GET", "HEAD"):
            if self.draining:
                return 503, "text/plain", b"draining\n"
            return 200, "text/plain", b"ok\n"
        if path == "/status" and method == "GET":
            stats = await self.gather_stats()
            doc = self.hub.status(stats)
            doc["connections"] = stats.get("connections", 0)
            doc["workers"] = stats.get("workers", 1)
            return 200, "application/json", json.dumps(doc, indent=2).encode() + b"\n"
        if path == "/metrics" and method == "GET":
            stats = await self.gather_stats()
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_Collector(self.hub, stats))
            return 200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(registry)
        if path == "/reload" and method == "POST":
            ok, msg = await self.reload()
            return (200 if ok else 422), "text/plain", (msg + "\n").encode()
        parts = path.strip("/").split("/")
        if len(parts) == 5 and parts[0] == "pools" and parts[2] == "backends":
            if method != "POST":
                return 405, "text/plain", b"use POST\n"
            _, pool, _, backend, action = parts
            state = {"drain": "drain", "enable": "enabled", "disable": "disabled"}.get(action)
            if state is None:
                return 404, "text/plain", b"action must be drain, enable or disable\n"
            if not self.hub.set_admin(pool, backend, state):
                return 404, "text/plain", f"no backend {backend!r} in pool {pool!r}\n".encode()
            body = json.dumps({"pool": pool, "backend": backend, "admin": state}).encode() + b"\n"
            return 200, "application/json", body
        return 404, "text/plain", b"not found: try /status, /metrics, /healthz\n"

    async def handle_raw(self, method: str, target: bytes) -> tuple[int, str, bytes]:
        return await self.handle(method, httptools.parse_url(target).path.decode())


class _Collector:
    """Exports the hub's state and the gathered worker counters."""

    def __init__(self, hub: HealthHub, stats: dict[str, Any]) -> None:
        self.hub = hub
        self.stats = stats

    def collect(self) -> Any:
        hub = self.hub
        status = hub.status(self.stats)
        pools_stats = self.stats.get("pools", {})
        requests = CounterMetricFamily(
            "zonegate_requests",
            "Responses sent, by pool, backend and status class",
            labels=["pool", "backend", "class"],
        )
        errors = CounterMetricFamily(
            "zonegate_errors", "Proxy errors and events by pool and kind", labels=["pool", "kind"]
        )
        latency = HistogramMetricFamily(
            "zonegate_request_duration_seconds",
            "Time from request head to last response byte",
            labels=["pool"],
        )
        inflight = GaugeMetricFamily(
            "zonegate_inflight_requests", "Requests in flight", labels=["pool", "backend"]
        )
        up = GaugeMetricFamily(
            "zonegate_backend_up", "1 if the backend takes new requests", labels=["pool", "backend"]
        )
        health = GaugeMetricFamily(
            "zonegate_backend_healthy",
            "1 if the backend passes its health checks",
            labels=["pool", "backend"],
        )
        weight = GaugeMetricFamily(
            "zonegate_backend_weight",
            "Effective weight (slow start, panic, admin state applied)",
            labels=["pool", "backend"],
        )
        healthy = GaugeMetricFamily(
            "zonegate_pool_healthy_backends", "Backends taking requests", labels=["pool"]
        )
        share = GaugeMetricFamily(
            "zonegate_pool_local_share",
            "Share of requests served locally (rest spills to backup)",
            labels=["pool"],
        )
        panic = GaugeMetricFamily(
            "zonegate_pool_panic", "1 while the pool is in panic mode", labels=["pool"]
        )
        for name, pool in status["pools"].items():
            ps = pools_stats.get(name, {})
            for b in pool["backends"]:
                for cls in STATUS_CLASSES:
                    requests.add_metric([name, b["id"], cls], b["responses"][cls])
                inflight.add_metric([name, b["id"]], b["inflight"])
                up.add_metric([name, b["id"]], 1 if b["available"] else 0)
                health.add_metric([name, b["id"]], 1 if b["health"] == "up" else 0)
                weight.add_metric([name, b["id"]], b["effective_weight"])
            errs = ps.get("errors", {})
            for kind in ERROR_KINDS:
                errors.add_metric([name, kind], errs.get(kind, 0))
            buckets = ps.get("latency_buckets") or [0] * (len(LATENCY_BUCKETS) + 1)
            cum = 0
            bl = []
            for bound, n in zip([*LATENCY_BUCKETS, float("inf")], buckets, strict=True):
                cum += n
                bl.append(("+Inf" if bound == float("inf") else repr(bound), cum))
            latency.add_metric([name], bl, ps.get("latency_sum", 0.0))
            healthy.add_metric([name], pool["healthy"])
            share.add_metric([name], pool["local_share"])
            panic.add_metric([name], 1 if pool["panic"] else 0)
        client = CounterMetricFamily(
            "zonegate_client_errors", "Requests refused for client faults", labels=["kind"]
        )
        for kind, n in sorted(self.stats.get("client_errors", {}).items()):
            client.add_metric([kind], n)
        conns = GaugeMetricFamily("zonegate_client_connections", "Open client connections")
        conns.add_metric([], self.stats.get("connections", 0))
        version = GaugeMetricFamily("zonegate_config_version", "Version of the topology in force")
        version.add_metric([], hub.version)
        yield from (
            requests,
            errors,
            latency,
            inflight,
            up,
            health,
            weight,
            healthy,
            share,
            panic,
            client,
            conns,
            version,
        )


async def start_admin(app: AdminApp, host: str, port: int) -> asyncio.Server:
    server = await adminhttp.start_server(app.handle_raw, host, port)
    log.info("admin endpoint on %s:%d", host, port)
    return server
