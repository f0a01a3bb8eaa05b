"""What HAProxy's servers should be, and what HAProxy's stats say back (pure).

Theory of operation. HAProxy runs the active checks; zonegate's health hub reads the
verdicts (`verdicts`), runs the same spill plan as the built-in engine
(lb/router.py plan_pool) and publishes one `PoolState` per pool. `desired_servers`
turns those states into server states and weights for HAProxy::

    be_<pool>:  local servers        weights share  local_share
                spill:<backup>:<id>  weights share  1 - local_share
                (HAProxy splits a backend's traffic by weight over its UP servers)

    admin state   enabled -> ready     drain -> drain     disabled -> maint
    panic         the panic twins (panic:<id>, unchecked) of the enabled backends
                  are put in service and the checked servers get weight 0, so
                  every enabled backend takes requests whatever its health, as in
                  the built-in engine; HAProxy's checks keep running on the checked
                  servers, so the hub sees the pool recover and leaves panic.
                  Out of panic the twins are in maintenance.

Weights are integers 0..256 on render.py's `base_weight` scale (the pool's largest
configured weight is 256; round_robin gives every backend 256, as its built-in picker
ignores weights). Without spill those are the weights, so what render.py writes needs
no runtime fix (a drained backend aside: the file has weight 0 for it, the runtime
keeps its weight so that enabling it again is one state change).
With spill the two groups' totals are rounded first and then shared out inside each
group (largest remainder), so the spilled share of the weights is within 1/256 of
``1 - local_share``. A server the hub counts as unavailable (down, drained, disabled)
keeps the weight it would have if it were up: HAProxy already sends it nothing, and
when it comes back (or is enabled again) it takes its share at once.

`engine_stats` turns `show stat` rows into the stats document the built-in workers
produce (lb/stats.py merge_snapshots, lb/server.py merge_worker_stats), so the hub's
/status and the admin's /metrics keep their shape under both engines.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from zonegate.lb.haproxy.model import (
    PANIC_PREFIX,
    SPILL_PREFIX,
    WEIGHT_MAX,
    DesiredState,
    ServerAdmin,
    ServerDesired,
    ServerKey,
    backend_name,
    panic_server_name,
    spill_server_name,
)
from zonegate.lb.haproxy.render import base_weight
from zonegate.lb.stats import ERROR_KINDS, LATENCY_BUCKETS, STATUS_CLASSES

if TYPE_CHECKING:
    from zonegate.lb.pools import PoolState
    from zonegate.topology.schema import Pool, Topology

Row = Mapping[str, Any]
"""One `show stat` row by column name (pxname, svname, status, scur, hrsp_2xx...);
values may be the CSV's strings or already typed ints."""

ADMIN_TO_SERVER = {
    "enabled": ServerAdmin.READY,
    "drain": ServerAdmin.DRAIN,
    "disabled": ServerAdmin.MAINT,
}
"""Backend admin state (topology, control plane, admin API) -> HAProxy server state."""


def zone_pools(topology: Topology, zone: str) -> list[str]:
    """Pools a zone's LB serves: those its listeners route to, and their backups.

    The same set as lb/worker.py's (that module is a shell; this one stays pure).
    """
    names: set[str] = set()
    for lst in topology.listeners.values():
        if lst.zone == zone:
            names.update(r.pool for r in lst.routes)
    for name in list(names):
        pool = topology.pools.get(name)
        if pool is not None and pool.backup:
            names.add(pool.backup)
    return sorted(n for n in names if n in topology.pools)


# desired server states


def desired_servers(
    topology: Topology,
    zone: str,
    states: Mapping[str, PoolState],
    admin: Mapping[tuple[str, str], str],
) -> DesiredState:
    """The state and weight every HAProxy server of the zone's LB should have.

    Args:
        topology: the topology in force.
        zone: the LB's zone.
        states: the hub's `PoolState` by pool name; a pool missing here is taken as
            "every enabled backend up, no spill" (the hub has not published yet).
        admin: admin state ("enabled", "drain", "disabled") by (pool, backend id);
            backends not listed keep their topology `state`.

    Returns:
        One `ServerDesired` per server: the local servers of each pool's backend,
        their panic twins when the pool has active checks, and, when the pool has a
        backup, one spill server per backend of the backup.

    Raises:
        ValueError: an admin state other than enabled, drain, disabled.
    """
    out: DesiredState = {}
    routed = _routed_pools(topology, zone)
    for name in zone_pools(topology, zone):
        pool = topology.pools[name]
        st = states.get(name)
        local = _available(pool, st)
        share = st.local_share if st is not None else 1.0
        backup = topology.pools.get(pool.backup) if pool.backup and name in routed else None
        spill = _available(backup, states.get(pool.backup or "")) if backup else []
        local_w, spill_w = split_weights(
            local,
            spill,
            share,
            local_configured=[float(base_weight(pool, b)) for b in pool.backends],
            spill_configured=[float(base_weight(backup, b)) for b in backup.backends]
            if backup
            else [],
        )
        be = backend_name(name)
        panic = st is not None and st.panic
        twins = pool.health.active is not None
        for i, b in enumerate(pool.backends):
            state = _admin(name, b.id, b.state, admin)
            weight = base_weight(pool, b)
            if panic and twins:
                out[ServerKey(be, b.id)] = ServerDesired(state, 0)
                twin = state if state is ServerAdmin.READY else ServerAdmin.MAINT
                out[ServerKey(be, panic_server_name(b.id))] = ServerDesired(twin, weight)
            else:
                out[ServerKey(be, b.id)] = ServerDesired(state, local_w[i])
                if twins:
                    out[ServerKey(be, panic_server_name(b.id))] = ServerDesired(
                        ServerAdmin.MAINT, weight
                    )
        if backup is not None and pool.backup:
            for j, b in enumerate(backup.backends):
                state = _admin(pool.backup, b.id, b.state, admin)
                out[ServerKey(be, spill_server_name(pool.backup, b.id))] = ServerDesired(
                    state, spill_w[j]
                )
    return out


def _admin(
    pool: str, backend: str, default: str, admin: Mapping[tuple[str, str], str]
) -> ServerAdmin:
    value = admin.get((pool, backend), default)
    try:
        return ADMIN_TO_SERVER[value]
    except KeyError:
        raise ValueError(
            f"admin state {value!r} of {pool}/{backend}: expected enabled, drain or disabled"
        ) from None


def _routed_pools(topology: Topology, zone: str) -> set[str]:
    """Pools a listener of the zone routes to: only their HAProxy backends hold spill
    servers (a pool reached only as a backup never spills a second hop)."""
    return {r.pool for lst in topology.listeners.values() if lst.zone == zone for r in lst.routes}


def _available(pool: Pool | None, st: PoolState | None) -> list[float]:
    """Each backend's weight as a candidate, on render.py's `base_weight` scale (so
    round_robin ignores configured weights, as its built-in picker does); 0: not
    taking requests. A slow-start ramp in the hub's weight scales it down."""
    if pool is None:
        return []
    if st is None or len(st.weights) != len(pool.backends):
        return [float(base_weight(pool, b)) if b.state == "enabled" else 0.0 for b in pool.backends]
    out = []
    for b, w in zip(pool.backends, st.weights, strict=True):
        ramp = min(1.0, w / b.weight) if w > 0 and b.weight > 0 else 0.0
        out.append(base_weight(pool, b) * ramp)
    return out


def split_weights(
    local: list[float],
    spill: list[float],
    local_share: float,
    *,
    local_configured: list[float] | None = None,
    spill_configured: list[float] | None = None,
) -> tuple[list[int], list[int]]:
    """HAProxy weights (0..256) for a pool's local and spill servers.

    Args:
        local: candidate weight of each local server (0: unavailable).
        spill: candidate weight of each server of the backup pool (0: unavailable).
        local_share: the share of requests the local servers should take, in [0, 1].
        local_configured, spill_configured: configured weights, used for the servers
            with candidate weight 0 (the weight each would have if it were available).
            Default: the candidate weights.

    Returns:
        (local weights, spill weights). Over the available servers, the spill
        weights' share of the total is within 1/256 of the effective spill share:
        ``1 - local_share``, or 0 when no spill server is available, or 1 when no
        local server is.

    Raises:
        ValueError: local_share outside [0, 1], or a configured list of the wrong length.
    """
    if not 0.0 <= local_share <= 1.0:
        raise ValueError(f"local_share {local_share} not in [0, 1]")
    local_cfg = local if local_configured is None else local_configured
    spill_cfg = spill if spill_configured is None else spill_configured
    if len(local_cfg) != len(local) or len(spill_cfg) != len(spill):
        raise ValueError("configured weights must list every server")
    total_local, total_spill = sum(local), sum(spill)
    if total_spill <= 0 or (total_local > 0 and local_share >= 1.0):
        # No spill: keep the configured proportions; spill servers take nothing.
        unit = _fit_unit([*local, *local_cfg])
        return _fill(local, local_cfg, unit, at_least_one=True), [0] * len(spill)
    share = local_share if total_local > 0 else 0.0
    # Ideal share of each available server; the largest gets WEIGHT_MAX.
    biggest = max(
        [share * w / total_local for w in local if total_local > 0]
        + [(1.0 - share) * w / total_spill for w in spill]
    )
    scale = WEIGHT_MAX / biggest
    group_local = round(share * scale)
    group_spill = round((1.0 - share) * scale)
    local_w = _hamilton(local, group_local)
    spill_w = _hamilton(spill, group_spill)
    # Servers that are not available: what they would weigh at the same unit.
    local_unit = group_local / total_local if total_local > 0 and group_local else None
    spill_unit = group_spill / total_spill if group_spill else None
    local_w = _fill_missing(local, local_cfg, local_w, local_unit)
    spill_w = _fill_missing(spill, spill_cfg, spill_w, spill_unit)
    return local_w, spill_w


def _fit_unit(weights: Iterable[float]) -> float:
    """The factor that brings configured weights into 0..256 (1 when they fit)."""
    top = max(weights, default=0.0)
    return 1.0 if top <= WEIGHT_MAX else WEIGHT_MAX / top


def _fill(avail: list[float], cfg: list[float], unit: float, *, at_least_one: bool) -> list[int]:
    out = []
    for a, c in zip(avail, cfg, strict=True):
        w = a if a > 0 else c
        n = min(WEIGHT_MAX, round(w * unit))
        if at_least_one and w > 0:
            n = max(1, n)
        out.append(n)
    return out


def _fill_missing(
    avail: list[float], cfg: list[float], weights: list[int], unit: float | None
) -> list[int]:
    if unit is None:
        unit = _fit_unit(cfg)
    return [
        w if a > 0 else min(WEIGHT_MAX, max(1 if c > 0 else 0, round(c * unit)))
        for a, c, w in zip(avail, cfg, weights, strict=True)
    ]


def _hamilton(weights: list[float], total: int) -> list[int]:
    """Integers proportional to `weights` summing to `total` (largest remainder),
    none above WEIGHT_MAX."""
    whole = sum(weights)
    if total <= 0 or whole <= 0:
        return [0] * len(weights)
    quotas = [total * w / whole for w in weights]
    out = [min(WEIGHT_MAX, math.floor(q)) for q in quotas]
    left = total - sum(out)
    order = sorted(range(len(weights)), key=lambda i: out[i] - quotas[i])
    for i in order:
        if left <= 0:
            break
        if out[i] < WEIGHT_MAX and weights[i] > 0:
            out[i] += 1
            left -= 1
    return out


# HAProxy's verdicts


def _status_up(status: str) -> bool | None:
    """A server's `show stat` status as a health verdict (None: no verdict).

    UP, NOLB and DRAIN (with their "x/y" transitions) mean the server is running;
    DOWN means stopped. MAINT says nothing about health, and "no check" (checks off,
    by config or by a `disable health`) neither.
    """
    word = status.split(" ", 1)[0]
    if word in ("UP", "NOLB", "DRAIN"):
        return True
    if word == "DOWN":
        return False
    return None


def verdicts(
    rows: Iterable[Row], *, unchecked: Collection[str] = ()
) -> dict[tuple[str, str], bool]:
    """HAProxy's health verdict of each local server, by (pool, backend id).

    Args:
        rows: `show stat` rows.
        unchecked: pools configured without active checks: their servers read
            "no check" and are up (the built-in engine's rule: up unless ejected).

    Returns:
        True (up) or False (down) for the servers HAProxy has a verdict on. Spill
        servers, panic twins, frontends, backend totals and servers in maintenance or with checks
        off are left out: the caller keeps its last verdict for them.
    """
    return {k: up for k, (up, _) in verdict_details(rows, unchecked=unchecked).items()}


def verdict_details(
    rows: Iterable[Row], *, unchecked: Collection[str] = ()
) -> dict[tuple[str, str], tuple[bool, str]]:
    """`verdicts` with HAProxy's words for each: (up, why).

    `why` is the last check's description and detail, as HAProxy logs them
    ("Layer4 connection problem: Connection refused", "Layer7 wrong status (503)"),
    or the status itself when the row has no check columns.
    """
    out: dict[tuple[str, str], tuple[bool, str]] = {}
    for row in rows:
        px, sv = str(row.get("pxname", "")), str(row.get("svname", ""))
        if (
            not px.startswith("be_")
            or sv in ("BACKEND", "FRONTEND")
            or sv.startswith((SPILL_PREFIX, PANIC_PREFIX))
        ):
            continue
        pool = px[3:]
        status = str(row.get("status", ""))
        up = _status_up(status)
        if up is None and status == "no check" and pool in unchecked:
            up = True
        if up is not None:
            out[(pool, sv)] = (up, _why(row, status))
    return out


def _why(row: Row, status: str) -> str:
    desc = str(row.get("check_desc") or row.get("check_status") or "")
    if not desc:
        return f"haproxy: {status}"
    code = str(row.get("check_code") or "")
    detail = str(row.get("last_chk") or "")
    why = f"haproxy: {desc}"
    if code:
        why += f" ({code})"
    if detail:
        why += f": {detail}"
    return why


def unchecked_pools(topology: Topology, zone: str) -> frozenset[str]:
    """The zone's pools that have no active check (for `verdicts`)."""
    return frozenset(
        n for n in zone_pools(topology, zone) if topology.pools[n].health.active is None
    )


# stats in the built-in engine's shape


def _num(row: Row, key: str) -> int:
    value = row.get(key)
    if value is None or value == "":
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def engine_stats(
    topology: Topology, zone: str, rows: Iterable[Row], *, workers: int = 1
) -> dict[str, Any]:
    """The stats document of lb/server.py's merge_worker_stats, from `show stat` rows.

    Per backend: responses by class (hrsp_1xx..5xx) and requests in flight (scur).
    HAProxy counts the 502/504 it answers itself for a server (reset, timeout, bad
    response) in that server's `eresp`, not in its `hrsp_5xx`; the built-in engine
    counts them as the backend's 5xx, so `eresp` is added to the server's 5xx here.
    A request spilled to the backup is served by a spill server inside the home
    pool's HAProxy backend; it counts for the backup pool's backend, as in the
    built-in engine, and as `spilled` for the home pool. The 503s HAProxy answers
    when no server is left show only in the backend's totals (its `econ` beyond its
    servers'): they count as `no_backend`, not as responses, as in the built-in
    engine. Errors: econ -> connect_failed, eresp -> bad_response, wretr + wredis ->
    retried, srv_abrt -> aborted_midway. Client side: frontends' ereq ->
    client_bad_request, scur -> connections. HAProxy keeps no latency histogram, so
    the buckets stay 0 while latency_count still counts the responses.

    Args:
        topology: the topology in force.
        zone: the LB's zone.
        rows: `show stat` rows (typed or the CSV's strings).
        workers: what /status reports as `workers` (HAProxy's thread count).
    """
    names = zone_pools(topology, zone)
    by_backend = {backend_name(n): n for n in names}
    pools: dict[str, dict[str, Any]] = {}
    for n in names:
        ids = [b.id for b in topology.pools[n].backends]
        pools[n] = {
            "ids": ids,
            "inflight": [0] * len(ids),
            "responses": [[0] * len(STATUS_CLASSES) for _ in ids],
            "latency_buckets": [0] * (len(LATENCY_BUCKETS) + 1),
            "latency_sum": 0.0,
            "latency_count": 0,
            "errors": dict.fromkeys(ERROR_KINDS, 0),
        }
    where = {n: {bid: i for i, bid in enumerate(p["ids"])} for n, p in pools.items()}
    # Per HAProxy backend: [responses, econ] of the BACKEND row and of its servers.
    totals = {n: [0, 0] for n in names}
    by_servers = {n: [0, 0] for n in names}
    client_errors: dict[str, int] = {}
    connections = 0
    for row in rows:
        px, sv = str(row.get("pxname", "")), str(row.get("svname", ""))
        if sv == "FRONTEND":
            connections += _num(row, "scur")
            bad = _num(row, "ereq")
            if bad:
                client_errors["client_bad_request"] = (
                    client_errors.get("client_bad_request", 0) + bad
                )
            continue
        home = by_backend.get(px)
        if home is None:
            continue
        counts = [_num(row, f"hrsp_{c}") for c in STATUS_CLASSES]
        if sv == "BACKEND":
            totals[home] = [sum(counts), _num(row, "econ")]
            continue
        eresp = _num(row, "eresp")
        counts[4] += eresp
        by_servers[home][0] += sum(counts)
        by_servers[home][1] += _num(row, "econ")
        pool, bid = home, sv
        if sv.startswith(PANIC_PREFIX):
            bid = sv[len(PANIC_PREFIX) :]
        elif sv.startswith(SPILL_PREFIX):
            pool, _, bid = sv[len(SPILL_PREFIX) :].partition(":")
            pools[home]["errors"]["spilled"] += _num(row, "stot")
        doc = pools.get(pool)
        i = where.get(pool, {}).get(bid)
        if doc is None or i is None:
            continue
        row_counts = doc["responses"][i]
        for c, v in enumerate(counts):
            row_counts[c] += v
        doc["latency_count"] += sum(counts)
        doc["inflight"][i] += _num(row, "scur")
        errs = doc["errors"]
        errs["connect_failed"] += _num(row, "econ")
        errs["bad_response"] += eresp
        errs["retried"] += _num(row, "wretr") + _num(row, "wredis")
        errs["aborted_midway"] += _num(row, "srv_abrt")
    for n in names:
        no_server = max(0, totals[n][1] - by_servers[n][1])
        unattributed = max(0, totals[n][0] - by_servers[n][0] - no_server)
        pools[n]["errors"]["no_backend"] += no_server
        pools[n]["latency_count"] += unattributed
    return {
        "pools": pools,
        "client_errors": client_errors,
        "connections": connections,
        "workers": workers,
    }
