"""What the runtimes report: per zone, its LB's health, load and version, and who holds
its VIP.

The control plane polls every zone's `zonegate lb` admin `/status` (the zone's
`lb_admin`) and every VRRP instance's admin `/status` of the zone, and keeps a
`ZoneReport` per zone. The dashboard shows them, and dry runs take the request rates
from them (`service.dry_run(rates=...)`), so an operator sees the predicted requests
per second a cut-over moves, not only range widths.

This module is pure: it turns the documents a poll got (or the error it hit) and the
time of the poll into reports; `control.fleet_poll` does the I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "LbReport",
    "VrrpReport",
    "ZoneReport",
    "lb_report",
    "rates",
    "vrrp_report",
    "zone_report",
]


@dataclass(frozen=True, slots=True)
class LbReport:
    """One poll of a zone's LB admin `/status`."""

    reachable: bool
    at: float
    """When the poll answered (the poller's clock, seconds)."""
    error: str = ""
    version: int | None = None
    """The config version the LB runs (the control plane's when it follows one)."""
    healthy: int = 0
    """Backends taking requests, over the zone's pools."""
    total: int = 0
    inflight: int = 0
    responses: int = 0
    """Responses sent since the LB started (a counter)."""
    rate: float | None = None
    """Responses per second since the previous poll (None: not known yet)."""
    backends: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Per pool of the zone, per backend id: `available`, or its health state when it
    takes no requests (`down`, `ejected`, ...) or its admin state (`drain`, ...)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "reachable": self.reachable,
            "error": self.error,
            "version": self.version,
            "healthy": self.healthy,
            "total": self.total,
            "inflight": self.inflight,
            "rate": None if self.rate is None else round(self.rate, 2),
            "backends": {pool: dict(bs) for pool, bs in self.backends.items()},
        }


@dataclass(frozen=True, slots=True)
class VrrpReport:
    """One poll of a VRRP instance's admin `/status`."""

    instance: str
    reachable: bool
    state: str = "unknown"
    """'Initialize', 'Backup', 'Master', or 'unknown' when it did not answer."""
    priority: int | None = None
    error: str = ""


@dataclass(frozen=True, slots=True)
class ZoneReport:
    """What the control plane knows of one zone's runtimes."""

    zone: str
    lb: LbReport | None = None
    """None: the zone has no `lb_admin` to poll."""
    vrrp: tuple[VrrpReport, ...] = field(default=())

    @property
    def vip_owner(self) -> str | None:
        """The instance that is Master, if exactly one is; None otherwise."""
        masters = [v.instance for v in self.vrrp if v.state == "Master"]
        return masters[0] if len(masters) == 1 else None

    def to_json(self) -> dict[str, Any]:
        masters = [v.instance for v in self.vrrp if v.state == "Master"]
        return {
            "lb": None if self.lb is None else self.lb.to_json(),
            "vip_owner": self.vip_owner,
            "split_brain": len(masters) > 1,
            "vrrp": [
                {"instance": v.instance, "state": v.state, "priority": v.priority, "error": v.error}
                for v in self.vrrp
            ],
        }


def lb_report(
    zone: str,
    status: Mapping[str, Any] | None,
    error: str,
    at: float,
    previous: LbReport | None,
) -> LbReport:
    """Turn one poll of an LB's `/status` into a report.

    Args:
        zone: The zone polled; only its pools count (a backup pool of another zone that
            the LB also serves is that zone's).
        status: The `/status` document, or None when the poll failed.
        error: Why the poll failed ("" when it answered).
        at: When the poll answered.
        previous: The zone's previous report, for the rate.
    """
    if status is None:
        return LbReport(reachable=False, at=at, error=error or "no answer")
    healthy = total = inflight = responses = 0
    backends: dict[str, dict[str, str]] = {}
    for name, pool in (status.get("pools") or {}).items():
        if pool.get("zone", zone) != zone:
            continue
        healthy += int(pool.get("healthy", 0))
        total += int(pool.get("total", 0))
        inflight += int(pool.get("inflight", 0))
        responses += int(pool.get("responses", 0))
        backends[name] = {str(b.get("id")): _backend_word(b) for b in pool.get("backends", [])}
    rate = None
    if previous is not None and previous.reachable and at > previous.at:
        delta = responses - previous.responses
        if delta >= 0:  # else the LB restarted: its counters began again
            rate = delta / (at - previous.at)
    version = status.get("version")
    return LbReport(
        reachable=True,
        at=at,
        version=version if isinstance(version, int) else None,
        healthy=healthy,
        total=total,
        inflight=inflight,
        responses=responses,
        rate=rate,
        backends=backends,
    )


def _backend_word(b: Mapping[str, Any]) -> str:
    if b.get("available"):
        return "available"
    admin = b.get("admin", "enabled")
    return str(admin) if admin != "enabled" else str(b.get("health", "unknown"))


def vrrp_report(instance: str, status: Mapping[str, Any] | None, error: str) -> VrrpReport:
    """Turn one poll of a VRRP instance's `/status` into a report."""
    if status is None:
        return VrrpReport(instance=instance, reachable=False, error=error or "no answer")
    state = status.get("state")
    priority = status.get("effective_priority", status.get("priority"))
    return VrrpReport(
        instance=instance,
        reachable=True,
        state=state if isinstance(state, str) else "unknown",
        priority=priority if isinstance(priority, int) else None,
    )


def zone_report(zone: str, lb: LbReport | None, vrrp: Iterable[VrrpReport]) -> ZoneReport:
    return ZoneReport(zone=zone, lb=lb, vrrp=tuple(vrrp))


def rates(reports: Mapping[str, ZoneReport]) -> dict[str, float] | None:
    """Request rates per zone for `service.dry_run`, from the zones whose LB reported
    one; None when no zone did (the dry run then predicts from range widths)."""
    out = {
        zone: r.lb.rate
        for zone, r in reports.items()
        if r.lb is not None and r.lb.reachable and r.lb.rate is not None
    }
    return out or None
