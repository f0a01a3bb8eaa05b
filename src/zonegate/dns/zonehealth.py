"""Zone health for the GSLB: is a zone able to take users, right now?

Theory of operation
-------------------
The GSLB (`zonegate dns`, `zonegate httpdns`) answers a zone's VIPs only while the
zone is up. Each zone is probed every `zones.NAME.health.interval` (default 1 s) by
one of three checks (`ZoneHealthCheck.type`):

- `lb_status` (default): GET the zone LB's admin `/status` (`zones.NAME.lb_admin`).
  Only the pools whose `zone` is the probed zone count (a zone's LB may list backup
  pools of other zones). The probe reports the available backends (`healthy`), the
  configured ones (`total`), the sessions (sum of the pools' in-flight requests) and
  the capacity (`zones.NAME.capacity`, else the sum of the pools' capacities when
  every pool has one, else unknown).
- `tcp` / `http`: for zones behind a load balancer other than zonegate, a connect
  (or an HTTP GET of `path` answering 200-399) to `health.address`, by default the
  zone's first VIP on port 80. One healthy "backend" out of one when it passes.

A zone with no health source (type lb_status without `lb_admin`, or tcp/http with
neither `address` nor a VIP) is a configuration problem: it is reported by
`health_source` and treated as always up, with the reason "no health check".

Pure part: each probe result (`ZoneProbe`) is judged (`judge`) as

- PASS: the probe answered, at least one backend is available and
  `healthy / total >= up_share` (gdnsd's up_thresh: one dying backend out of many
  does not flap the zone);
- FAIL: the probe got no usable answer (refused, timeout, bad document), or the
  share is below `up_share`;
- DEAD: the zone's LB answered that no backend of the zone is available (or that it
  has none). The LB already debounced each backend with its own rise/fall, so this
  is authoritative and takes the zone down at once, without waiting for `fall`
  failures: a zone whose backends all die is down one probe after the LB says so,
  within one interval.

and fed to `ZoneHealthMachine`, a rise/fall counter as haproxy's (and
`health.machine`'s)::

       first result PASS              `rise` PASS in a row
     UNKNOWN ──────────────────► UP ◄──────────────────────── DOWN
        │                         │  `fall` FAIL in a row, or ▲
        │                         └──── one DEAD ────────────►│
        └──────────────── first result FAIL or DEAD ──────────┘

A result that agrees with the state resets the run. There is no "healthy until
proven otherwise" window: the state is UNKNOWN (`ZoneState.known` False, `up` False)
until the first result, and the servers run `ZoneProber.first_round()` before they
answer anything.

`changing` (answers use the record's shorter `changing_ttl`) is true while a flip
happened less than `CHANGING_INTERVALS` intervals ago or a run toward a flip is under
way (an UP zone with failed probes, a DOWN zone with passing ones). The first
decision out of UNKNOWN is not a flip.

Shell part: `ZoneProber` runs one task per zone (probe, record, sleep the rest of the
interval), exposes `states()` for the policy, calls `on_change` when a zone's `up`
or `known` changes, follows reloads (`update`) and exports Prometheus metrics
(`ZoneHealthCollector`, `metrics_text`).

Everything above the "shell" marker below is pure: no clock, no sockets, no logging.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import math
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import httptools
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from zonegate.dns.model import ZoneState
from zonegate.errors import bug
from zonegate.health.probes import probe_http, probe_tcp
from zonegate.topology.schema import ActiveCheck
from zonegate.topology.types import HostPort, format_duration

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from zonegate.topology.schema import Topology, Zone, ZoneHealthCheck

__all__ = [
    "CHANGING_INTERVALS",
    "NO_HEALTH_CHECK",
    "Phase",
    "Verdict",
    "ZoneHealthCollector",
    "ZoneHealthMachine",
    "ZoneProbe",
    "ZoneProber",
    "health_source",
    "judge",
    "metrics_text",
    "probe_lb_status",
    "probe_zone",
    "summarize_status",
]

CHANGING_INTERVALS = 2.0
"""A flip keeps the zone `changing` for this many probe intervals."""
NO_HEALTH_CHECK = "no health check"
"""Reason of a zone that has no health source (a config problem): it is always up."""
STATUS_PATH = "/status"
STATUS_BODY_LIMIT = 8 * 1024 * 1024
"""Largest /status document read (about 20,000 backends)."""
DEFAULT_VIP_PORT = 80


# =====================================================================================
# Pure part
# =====================================================================================


@dataclass(frozen=True, slots=True)
class ZoneProbe:
    """One probe of a zone.

    ok: the probe got a usable answer (for tcp/http: the check passed).
    healthy / total: available / configured backends of the zone (tcp/http: 1/1 or 0/1).
    sessions: requests in flight in the zone. capacity: sessions it can hold (None:
    unknown). rtt: the probe's round trip in seconds. reason: a few words for logs.
    """

    ok: bool
    healthy: int = 0
    total: int = 0
    sessions: int = 0
    capacity: int | None = None
    rtt: float | None = None
    reason: str = ""


class Verdict(enum.Enum):
    """What one probe says about a zone (see the module docstring)."""

    PASS = "pass"
    FAIL = "fail"
    DEAD = "dead"


class Phase(enum.Enum):
    """The zone's state in the rise/fall machine."""

    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


def _pct(share: float) -> str:
    return f"{share * 100:.4g}%"


def judge(probe: ZoneProbe, up_share: float) -> tuple[Verdict, str]:
    """Judge one probe against the zone's `up_share`.

    Args:
        probe: the probe result.
        up_share: the share of backends (0..1) that must be available.

    Returns:
        The verdict and its reason, e.g. (PASS, "3/3 backends healthy"),
        (FAIL, "1/4 backends healthy, below 50%"), (DEAD, "0/3 backends healthy"),
        (FAIL, "connect refused").
    """
    if not probe.ok:
        return Verdict.FAIL, probe.reason or "probe failed"
    counts = f"{probe.healthy}/{probe.total} backends healthy"
    if probe.total <= 0:
        return Verdict.DEAD, "no backends in the zone"
    if probe.healthy <= 0:
        return Verdict.DEAD, counts
    if probe.healthy / probe.total < up_share:
        return Verdict.FAIL, f"{counts}, below {_pct(up_share)}"
    return Verdict.PASS, counts


# Transitions as data: (phase, verdict) -> (next phase, run length needed: "rise",
# "fall", or None when one result decides). A pair not listed agrees with the phase.
_EDGES: dict[tuple[Phase, Verdict], tuple[Phase, str | None]] = {
    (Phase.UNKNOWN, Verdict.PASS): (Phase.UP, None),
    (Phase.UNKNOWN, Verdict.FAIL): (Phase.DOWN, None),
    (Phase.UNKNOWN, Verdict.DEAD): (Phase.DOWN, None),
    (Phase.UP, Verdict.FAIL): (Phase.DOWN, "fall"),
    (Phase.UP, Verdict.DEAD): (Phase.DOWN, None),
    (Phase.DOWN, Verdict.PASS): (Phase.UP, "rise"),
}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class ZoneHealthMachine:
    """One zone's health as pure state; see the module docstring for the rules.

    Args:
        check: the zone's `ZoneHealthCheck` (interval, up_share, rise, fall are used).

    Methods take `now` (monotonic seconds) and never read a clock.
    """

    __slots__ = ("_check", "_flipped_at", "_last", "_phase", "_reason", "_run", "_verdict")

    def __init__(self, check: ZoneHealthCheck) -> None:
        self._check = check
        self._phase = Phase.UNKNOWN
        self._run = 0
        self._flipped_at: float | None = None
        self._last = ZoneProbe(False, reason="not probed yet")
        self._verdict: Verdict | None = None
        self._reason = "not probed yet"

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def check(self) -> ZoneHealthCheck:
        return self._check

    @property
    def run(self) -> int:
        """Results in a row that disagree with the phase (toward a flip)."""
        return self._run

    def reconfigure(self, check: ZoneHealthCheck) -> None:
        """Follow a reloaded check: keep the phase; a run already long enough flips next."""
        self._check = check

    def record(self, probe: ZoneProbe, now: float) -> ZoneState:
        """Count one probe result and return the zone's state after it.

        Args:
            probe: the result.
            now: when it arrived (monotonic seconds).
        """
        verdict, why = judge(probe, self._check.up_share)
        self._verdict = verdict
        if probe.ok:
            self._last = probe
        else:
            # Keep the last numbers we could read (a capacity policy still wants them
            # while a zone rides out one failed probe); the reason tells what happened.
            self._last = replace(self._last, ok=False, reason=probe.reason)
        edge = _EDGES.get((self._phase, verdict))
        if edge is None:  # agrees with the phase
            self._run = 0
            self._reason = why
        else:
            target, need_field = edge
            self._run += 1
            need = 1 if need_field is None else int(getattr(self._check, need_field))
            if self._run >= need:
                if self._phase is not Phase.UNKNOWN:
                    self._flipped_at = now
                    if need > 1:
                        kind = "passed" if verdict is Verdict.PASS else "failed"
                        why = f"{why} ({need} {kind} probes in a row)"
                self._phase = target
                self._run = 0
                self._reason = why
            else:
                kind = "passed" if verdict is Verdict.PASS else "failed"
                self._reason = f"{why} ({self._run} of {need} {kind} probes to flip)"
        return self.state(now)

    def changing(self, now: float) -> bool:
        """A flip happened within CHANGING_INTERVALS intervals, or a run is under way."""
        if self._run > 0:
            return True
        if self._flipped_at is None:
            return False
        return now - self._flipped_at < CHANGING_INTERVALS * self._check.interval

    def deadline(self, now: float) -> float | None:
        """When `changing` turns false by itself (None: not changing by time alone)."""
        if self._flipped_at is None:
            return None
        end = self._flipped_at + CHANGING_INTERVALS * self._check.interval
        return end if end > now else None

    def state(self, now: float) -> ZoneState:
        """The zone as the GSLB sees it at `now`."""
        p = self._last
        if self._phase is Phase.UNKNOWN:
            return ZoneState(up=False, known=False, reason=self._reason)
        state = "up" if self._phase is Phase.UP else "down"
        return ZoneState(
            up=self._phase is Phase.UP,
            healthy=p.healthy,
            total=p.total,
            sessions=p.sessions,
            capacity=p.capacity,
            rtt=p.rtt,
            changing=self.changing(now),
            known=True,
            reason=f"{state}: {self._reason}",
        )


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} is not a non-negative integer: {value!r}")
    return value


def summarize_status(
    doc: Any, zone: str, capacity: int | None = None, rtt: float | None = None
) -> ZoneProbe:
    """Turn an LB `/status` document into a probe of `zone`.

    Args:
        doc: the decoded JSON (see `lb.hub.HealthHub.status`).
        zone: the probed zone; only pools whose "zone" is this one count.
        capacity: `zones.NAME.capacity`; when None, the sum of the pools' capacities if
            every counted pool has one, else None.
        rtt: the probe's round trip.

    Returns:
        An ok probe with the zone's totals, or a failed one whose reason says what is
        wrong with the document ("bad /status: ...", "lb_admin serves zone 'x'").
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("pools"), dict):
        return ZoneProbe(False, rtt=rtt, reason="bad /status: no 'pools' object")
    served = doc.get("zone")
    if served is not None and served != zone:
        return ZoneProbe(False, rtt=rtt, reason=f"lb_admin serves zone {served!r}, not {zone!r}")
    healthy = total = sessions = 0
    capacities: list[int | None] = []
    try:
        for name, pool in doc["pools"].items():
            if not isinstance(pool, dict):
                raise ValueError(f"pool {name!r} is not an object")
            if pool.get("zone") != zone:
                continue
            healthy += _int(pool.get("healthy"), f"pools.{name}.healthy")
            total += _int(pool.get("total"), f"pools.{name}.total")
            sessions += _int(pool.get("inflight", 0), f"pools.{name}.inflight")
            cap = pool.get("capacity")
            capacities.append(None if cap is None else _int(cap, f"pools.{name}.capacity"))
    except ValueError as e:
        return ZoneProbe(False, rtt=rtt, reason=f"bad /status: {e}")
    if capacity is None and capacities and all(c is not None for c in capacities):
        capacity = sum(c for c in capacities if c is not None)
    return ZoneProbe(
        True,
        healthy=healthy,
        total=total,
        sessions=sessions,
        capacity=capacity,
        rtt=rtt,
        reason=f"{healthy}/{total} backends healthy",
    )


def health_source(zone: Zone) -> tuple[str, HostPort] | None:
    """What to probe for a zone: ("lb_status" | "tcp" | "http", address), or None.

    None means the zone has no health source, a config problem (lb_status without
    `lb_admin`; tcp/http without `address` and without VIPs): the zone is then
    treated as always up with reason NO_HEALTH_CHECK.
    """
    check = zone.health
    if check.type == "lb_status":
        return ("lb_status", zone.lb_admin) if zone.lb_admin is not None else None
    if check.address is not None:
        return check.type, check.address
    if zone.vips:
        return check.type, HostPort(zone.vips[0], DEFAULT_VIP_PORT)
    return None


# =====================================================================================
# Shell part: sockets, tasks, the clock, logs, metrics
# =====================================================================================

log = logging.getLogger("zonegate.zonehealth")


class _StatusResponse:
    """httptools callbacks collecting one response."""

    __slots__ = ("body", "complete", "headers_done", "too_big")

    def __init__(self) -> None:
        self.body = bytearray()
        self.headers_done = False
        self.complete = False
        self.too_big = False

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        if len(self.body) + len(body) > STATUS_BODY_LIMIT:
            self.too_big = True
            return
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


def _oserror_reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connect refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    return f"network error: {exc.strerror or exc or type(exc).__name__}"


async def probe_lb_status(
    address: HostPort,
    timeout: float,  # noqa: ASYNC109 - the timeout is part of the result's reason
    *,
    zone: str,
    capacity: int | None = None,
) -> ZoneProbe:
    """GET http://ADDRESS/status from a zone's LB and summarize it for `zone`.

    The whole exchange must finish within `timeout` seconds. Never raises for the
    network or the peer's bytes: every failure is a failed `ZoneProbe` with a reason
    ("connect refused", "timeout after 500ms", "status 503", "bad /status: ...").
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    writer: asyncio.StreamWriter | None = None
    host = f"[{address.host}]" if ":" in address.host else address.host
    request = (
        f"GET {STATUS_PATH} HTTP/1.1\r\nHost: {host}:{address.port}\r\n"
        "User-Agent: zonegate-gslb\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    ).encode("ascii", "replace")

    def failed(reason: str) -> ZoneProbe:
        return ZoneProbe(False, rtt=loop.time() - start, reason=reason)

    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address.host, address.port)
            writer.write(request)
            resp = _StatusResponse()
            parser = httptools.HttpResponseParser(resp)
            while not resp.complete:
                data = await reader.read(65536)
                if not data:
                    break  # read-to-close framing ends here (or the peer gave up)
                parser.feed_data(data)
                if resp.too_big:
                    return failed(f"bad /status: larger than {STATUS_BODY_LIMIT} bytes")
            status = parser.get_status_code() if resp.headers_done else 0
    except TimeoutError:
        return failed(f"timeout after {format_duration(timeout)}")
    except OSError as exc:
        return failed(_oserror_reason(exc))
    except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
        return failed(f"bad response: {exc}")
    finally:
        if writer is not None:
            writer.close()
    rtt = loop.time() - start
    if status == 0:
        return ZoneProbe(False, rtt=rtt, reason="connection closed before a response")
    if status != 200:
        return ZoneProbe(False, rtt=rtt, reason=f"/status answered {status}")
    try:
        doc = json.loads(resp.body)
    except ValueError as exc:
        return ZoneProbe(False, rtt=rtt, reason=f"bad /status: not JSON ({exc})")
    return summarize_status(doc, zone, capacity, rtt)


_HTTP_CHECKS: dict[str, ActiveCheck] = {}


def _http_check(path: str) -> ActiveCheck:
    check = _HTTP_CHECKS.get(path)
    if check is None:
        check = _HTTP_CHECKS[path] = ActiveCheck(type="http", path=path)
    return check


async def probe_zone(name: str, zone: Zone) -> ZoneProbe:
    """Probe a zone with its configured check (the default probe of `ZoneProber`).

    Raises:
        ValueError: the zone has no health source (see `health_source`).
    """
    source = health_source(zone)
    if source is None:
        raise ValueError(f"zone {name!r} has no health source")
    kind, address = source
    check = zone.health
    if kind == "lb_status":
        return await probe_lb_status(address, check.timeout, zone=name, capacity=zone.capacity)
    if kind == "http":
        result = await probe_http(
            address.host, address.port, _http_check(check.path), check.timeout
        )
    else:
        result = await probe_tcp(address.host, address.port, check.timeout)
    return ZoneProbe(
        result.ok,
        healthy=1 if result.ok else 0,
        total=1,
        capacity=zone.capacity,
        rtt=result.latency,
        reason=f"{kind} {address}: {result.reason}",
    )


class _Entry:
    """One zone's config, machine, task and counters."""

    __slots__ = ("failures", "flips", "machine", "probes", "static", "task", "zone")

    def __init__(self, zone: Zone, machine: ZoneHealthMachine | None) -> None:
        self.zone = zone
        self.machine = machine
        self.static = machine is None
        self.task: asyncio.Task[None] | None = None
        self.probes = 0
        self.failures = 0
        self.flips = 0


class ZoneProber:
    """Probes every zone of a topology and keeps its `ZoneState`.

    Args:
        topo: the topology (its `zones`).
        on_change: called as `on_change(zone, old, new)` when a zone's `up` or `known`
            changes (after the first round too: UNKNOWN -> known).
        now: the monotonic clock given to the machines.
        probe: the prober, `probe(zone_name, zone) -> ZoneProbe`; default `probe_zone`
            (real sockets). Tests pass fakes. Each call is bounded by the zone's timeout
            (plus a small margin) whatever the prober does.
    """

    TIMEOUT_MARGIN = 0.05
    """Extra seconds allowed over a check's timeout before a probe is cancelled."""

    def __init__(
        self,
        topo: Topology,
        on_change: Callable[[str, ZoneState, ZoneState], None] | None = None,
        *,
        now: Callable[[], float] = time.monotonic,
        probe: Callable[[str, Zone], Awaitable[ZoneProbe]] = probe_zone,
    ) -> None:
        self._on_change = on_change
        self._now = now
        self._probe = probe
        self._entries: dict[str, _Entry] = {}
        self._retired: set[asyncio.Task[None]] = set()
        self._started = False
        self.update(topo)

    # -- read side

    def states(self) -> dict[str, ZoneState]:
        """Every zone's state now."""
        now = self._now()
        return {name: self._state(e, now) for name, e in self._entries.items()}

    def state(self, zone: str) -> ZoneState | None:
        e = self._entries.get(zone)
        return None if e is None else self._state(e, self._now())

    @property
    def unchecked(self) -> list[str]:
        """Zones with no health source (config problems), always reported up."""
        return [n for n, e in self._entries.items() if e.static]

    @property
    def known(self) -> bool:
        """Whether every zone's state is known (the first round finished)."""
        return all(
            e.machine is None or e.machine.phase is not Phase.UNKNOWN
            for e in self._entries.values()
        )

    def counters(self) -> dict[str, tuple[int, int, int]]:
        """zone -> (probes, failed probes, flips) since start."""
        return {n: (e.probes, e.failures, e.flips) for n, e in self._entries.items()}

    @staticmethod
    def _state(e: _Entry, now: float) -> ZoneState:
        if e.machine is None:
            return ZoneState(up=True, known=True, reason=NO_HEALTH_CHECK, capacity=e.zone.capacity)
        return e.machine.state(now)

    # -- lifecycle

    async def first_round(self) -> None:
        """Probe every zone once, concurrently; each probe is bounded by its timeout."""
        await self.refresh()

    async def refresh(self, zones: list[str] | None = None) -> None:
        """Probe the given zones (default: all) now, concurrently, and record the results."""
        names = [
            n for n in (zones if zones is not None else list(self._entries)) if n in self._entries
        ]
        async with asyncio.TaskGroup() as tg:
            for name in names:
                if not self._entries[name].static:
                    tg.create_task(self._probe_guarded(name), name=f"zone-probe-first:{name}")

    def start(self) -> None:
        """Start one probe task per zone (idempotent). Needs a running loop."""
        if self._started:
            return
        self._started = True
        for name in self._entries:
            self._spawn(name)

    async def stop(self) -> None:
        """Cancel the probe tasks and wait for them.

        Raises:
            Exception: the first error a task died of (a bug), so tests see it.
        """
        self._started = False
        tasks = [e.task for e in self._entries.values() if e.task is not None]
        tasks += list(self._retired)
        for e in self._entries.values():
            e.task = None
        self._retired.clear()
        for t in tasks:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for r in results:
            if isinstance(r, Exception):
                raise r

    async def __aenter__(self) -> ZoneProber:
        await self.first_round()
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def update(self, topo: Topology) -> list[str]:
        """Follow a reloaded topology.

        Zones that left stop being probed. New zones start UNKNOWN and are probed at
        once. A zone whose config changed keeps its health (the machine follows the
        new check) and is probed at once with the new config. Unchanged zones go on.

        Returns:
            The zones that are new or changed (`refresh` them to know them at once).
        """
        fresh: list[str] = []
        entries: dict[str, _Entry] = {}
        for name, zone in topo.zones.items():
            old = self._entries.get(name)
            if old is not None and old.zone == zone:
                entries[name] = old
                continue
            has_source = health_source(zone) is not None
            if not has_source:
                log.warning(
                    "zone %s has no health check (type %s without %s): treated as up",
                    name,
                    zone.health.type,
                    "lb_admin" if zone.health.type == "lb_status" else "address or VIPs",
                )
            machine: ZoneHealthMachine | None = None
            if has_source:
                if old is not None and old.machine is not None:
                    machine = old.machine
                    machine.reconfigure(zone.health)
                else:
                    machine = ZoneHealthMachine(zone.health)
            entry = _Entry(zone, machine)
            if old is not None:
                entry.probes, entry.failures, entry.flips = old.probes, old.failures, old.flips
                self._retire(old)
            entries[name] = entry
            fresh.append(name)
        for name, old in self._entries.items():
            if name not in entries:
                self._retire(old)
        self._entries = entries
        if self._started:
            for name in fresh:
                self._spawn(name)
        return fresh

    def _retire(self, entry: _Entry) -> None:
        task, entry.task = entry.task, None
        if task is not None:
            task.cancel()
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)

    def _spawn(self, name: str) -> None:
        e = self._entries[name]
        if e.machine is None or e.task is not None:
            return
        delay = 0.0 if e.machine.phase is Phase.UNKNOWN else e.zone.health.interval
        e.task = asyncio.create_task(self._loop(name, e, delay), name=f"zone-probe:{name}")

    async def _loop(self, name: str, entry: _Entry, delay: float) -> None:
        loop = asyncio.get_running_loop()
        while self._entries.get(name) is entry:
            if delay > 0:
                await asyncio.sleep(delay)
            started = loop.time()
            await self._probe_guarded(name)
            delay = max(0.0, entry.zone.health.interval - (loop.time() - started))

    async def _probe_guarded(self, name: str) -> None:
        # One broken probe or callback must not stop the probing; CancelledError is a
        # BaseException and passes through.
        try:
            await self._probe_once(name)
        except Exception as exc:
            bug(f"zone health probe of {name} failed", exc)

    async def _probe_once(self, name: str) -> None:
        entry = self._entries.get(name)
        if entry is None or entry.machine is None:
            return
        timeout = entry.zone.health.timeout
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            async with asyncio.timeout(timeout + self.TIMEOUT_MARGIN):
                result = await self._probe(name, entry.zone)
        except TimeoutError:
            result = ZoneProbe(
                False, rtt=loop.time() - start, reason=f"timeout after {format_duration(timeout)}"
            )
        if self._entries.get(name) is not entry:
            return  # the config changed while the probe ran
        machine = entry.machine
        now = self._now()
        old = machine.state(now)
        new = machine.record(result, now)
        entry.probes += 1
        if not result.ok:
            entry.failures += 1
        if old.known and old.up != new.up:
            entry.flips += 1
        if old.up != new.up or old.known != new.known:
            level = logging.INFO if not old.known else logging.WARNING
            log.log(level, "zone %s %s", name, new.reason)
            if self._on_change is not None:
                self._on_change(name, old, new)


# -- metrics


def _gauge(name: str, doc: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=["zone"])


class ZoneHealthCollector:
    """A prometheus_client collector of a prober's zone states and probe counters.

    Register it on the server's registry: `registry.register(ZoneHealthCollector(p))`.
    """

    def __init__(self, prober: ZoneProber) -> None:
        self.prober = prober

    def collect(self) -> Iterator[Any]:
        states = self.prober.states()
        counters = self.prober.counters()
        up = _gauge("zonegate_zone_up", "1 if the GSLB answers the zone (health check passes)")
        known = _gauge("zonegate_zone_known", "1 once the zone has been probed")
        changing = _gauge("zonegate_zone_changing", "1 while the zone's state is changing")
        healthy = _gauge("zonegate_zone_healthy_backends", "Available backends of the zone")
        total = _gauge("zonegate_zone_backends", "Configured backends of the zone")
        sessions = _gauge("zonegate_zone_sessions", "Requests in flight in the zone")
        capacity = _gauge("zonegate_zone_capacity", "Sessions the zone can hold (when known)")
        rtt = _gauge("zonegate_zone_probe_rtt_seconds", "Round trip of the last answered probe")
        probes = CounterMetricFamily("zonegate_zone_probes", "Zone probes", labels=["zone"])
        failures = CounterMetricFamily(
            "zonegate_zone_probe_failures", "Zone probes that got no usable answer", labels=["zone"]
        )
        flips = CounterMetricFamily("zonegate_zone_flips", "Up/down flips", labels=["zone"])
        for name, st in states.items():
            labels = [name]
            up.add_metric(labels, 1 if st.up else 0)
            known.add_metric(labels, 1 if st.known else 0)
            changing.add_metric(labels, 1 if st.changing else 0)
            healthy.add_metric(labels, st.healthy)
            total.add_metric(labels, st.total)
            sessions.add_metric(labels, st.sessions)
            if st.capacity is not None:
                capacity.add_metric(labels, st.capacity)
            if st.rtt is not None and math.isfinite(st.rtt):
                rtt.add_metric(labels, st.rtt)
            n, f, k = counters.get(name, (0, 0, 0))
            probes.add_metric(labels, n)
            failures.add_metric(labels, f)
            flips.add_metric(labels, k)
        yield from (up, known, changing, healthy, total, sessions, capacity, rtt)
        yield from (probes, failures, flips)


def metrics_text(prober: ZoneProber) -> bytes:
    """The prober's metrics in the Prometheus text format (a registry of its own)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ZoneHealthCollector(prober))
    return generate_latest(registry)
