"""The control plane's decisions: a state and a change in, the next version out.

Theory of operation
-------------------

The control plane holds one `DesiredState` per version. A writer (the HTTP API, the
CLI) never edits it: it asks for a change, and this module decides::

    store.latest() ──> state (version V)
                          │
         change ──> apply(state, change, topo=, who=, why=, now=)
                          │  ├─ ChangeRejected(status 404 / 409 / 422)  -> answer it
                          │  └─ (state V+1, AuditEntry V+1)
                          ▼
         store.append(state, audit, expected_version=V)
                          ├─ VersionConflict: someone wrote V+1 first -> re-read, retry
                          └─ stored: followers waiting in store.wait_for(V) wake up

`apply` is pure: no clock (`now` is passed in, as unix seconds, because the audit
log is read by people), no I/O, no store. It checks every name against the topology
and the state, validates the resulting split maps, and returns the new state (always
`state.version + 1`) with its audit entry. The store's only job is to persist that
pair atomically and refuse it when `V` is no longer the latest version, which makes
concurrent writers safe without locks in this module (optimistic concurrency).

Changes and their rules:

- `SetSplit(domain, split)`: replace the split map of a domain of the state or the
  topology file. Every zone must be a topology zone with a DNS name as its domain and
  the ranges must tile `[0, sharding)` (`split_ranges_problems`); problems are all
  reported in one 422. A new split ends a cut-over (Restore then goes back to the
  topology file's split).
- `Cutover(domain, to)`: zone `to` gets `[0, sharding)`, every other zone of the
  map `[0, 0)`. `to` must be in the domain's split map (it needs its zone domain; 422)
  and enabled (409: cutting over to a draining or disabled zone sends every device
  to a zone that refuses them). The split from before the cut-over is kept in
  `saved_split`; a second cut-over while cut over keeps the first one, so Restore
  always returns to the split from before the domain was cut over.
- `Restore(domain)`: back to `saved_split[domain]` if the domain is cut over, else to
  the topology file's split of the domain (409 if the file has none).
- `SetZoneAdmin(zone, state)`, `SetBackendAdmin(pool, backend, state)`: names must
  exist in the topology (404).
- `Rollback(to_version)`: a new version whose content (everything but the version)
  equals that of version `to_version`, fetched by the caller through
  `history_lookup` (the API reads it from the store first:
  `history_lookup={old.version: old}.get`). The old content must still be valid for
  the current topology (`state_problems`; 422), e.g. not name a zone since removed.

A change that would leave the content as it is is rejected with 409 "no change: ...":
a version is a fan-out to every runtime and a line in the history, so it must mean
something, and a retrying client learns that the state is already what it asked for.

`dry_run` runs the same checks without making a version and predicts each zone's
share of every domain's traffic before and after (see `shares`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping

from zonegate.control.model import (
    AuditEntry,
    Change,
    ChangeRejected,
    Cutover,
    DesiredState,
    DryRun,
    Restore,
    Rollback,
    SetBackendAdmin,
    SetSplit,
    SetZoneAdmin,
    backend_key,
)
from zonegate.topology.schema import SplitMap, SplitZone, Topology
from zonegate.topology.validate import is_dns_name, split_ranges_problems

HistoryLookup = Callable[[int], DesiredState | None]
"""Version -> the stored state of that version, or None if there is none."""


# --- public API ---------------------------------------------------------------------


def initial(topo: Topology, *, who: str, why: str, now: float) -> tuple[DesiredState, AuditEntry]:
    """The first version (1) of a new store, from the topology file.

    Args:
        topo: The validated topology.
        who: Who started the control plane (e.g. "zonegate control").
        why: Why (e.g. "initial state from topo.yaml").
        now: Unix time in seconds.

    Returns:
        The state (`DesiredState.initial(topo)`) and its audit entry (no change,
        previous version 0).
    """
    state = DesiredState.initial(topo)
    audit = AuditEntry(
        version=1,
        at=now,
        who=who,
        why=why,
        change=None,
        diff=[
            f"initial state from the topology: {len(state.split)} split domains, "
            f"{len(state.zones)} zones, {len(state.backends)} backends"
        ],
        previous_version=0,
    )
    return state, audit


def apply(
    state: DesiredState,
    change: Change,
    *,
    topo: Topology,
    who: str,
    why: str,
    now: float,
    history_lookup: HistoryLookup | None = None,
) -> tuple[DesiredState, AuditEntry]:
    """Decide the next version for a change (see the module docstring for the rules).

    Args:
        state: The latest state (version V).
        change: The change asked for.
        topo: The topology the control plane runs with; names are checked against it.
        who: Who asks (required, non-empty).
        why: Why (may be empty).
        now: Unix time in seconds, recorded in the audit entry.
        history_lookup: Needed for `Rollback`: version -> stored state.

    Returns:
        The new state (version V + 1) and its audit entry.

    Raises:
        ChangeRejected: 404 for an unknown domain, zone, pool, backend or version; 422
            for a split that does not tile or names an unknown zone, an empty `who`,
            or a rollback to content the topology no longer accepts; 409 for no change,
            a cut-over to a zone that is not enabled, or nothing to restore.
        ValueError: A `Rollback` without `history_lookup`, or a lookup that answers
            a state of another version (misuse).
    """
    if not who:
        raise ChangeRejected("who is required: every change names its author", 422)
    new = _next(state, change, topo, history_lookup)
    audit = AuditEntry(
        version=new.version,
        at=now,
        who=who,
        why=why,
        change=change,
        diff=diff(state, new),
        previous_version=state.version,
    )
    return new, audit


def dry_run(
    state: DesiredState,
    change: Change,
    *,
    topo: Topology,
    rates: Mapping[str, float] | None = None,
    history_lookup: HistoryLookup | None = None,
) -> DryRun:
    """What `apply` would do, without making a version.

    Args:
        state: The latest state.
        change: The change to predict.
        topo: As for `apply`.
        rates: Current request rates (requests per second) as the LBs report them,
            keyed by zone, or by `"{domain}/{zone}"` for one domain (which wins over
            the zone's key); see `shares`. None: predict from range widths alone.
        history_lookup: As for `apply` (for `Rollback`).

    Returns:
        Per domain and zone the share of traffic before and after, and the diff.

    Raises:
        ChangeRejected: Exactly when `apply` would reject the change.
        ValueError: As for `apply`; or a negative or non-finite rate.
    """
    new = _next(state, change, topo, history_lookup)
    before: dict[str, dict[str, float]] = {}
    after: dict[str, dict[str, float]] = {}
    for domain, split in state.split.items():
        before[domain] = shares(split, split, _rates_for(domain, rates))
    for domain, split in new.split.items():
        old = state.split.get(domain)
        if old is None:  # a domain new to the state: no traffic measured for it yet
            after[domain] = shares(split, split)
        else:
            after[domain] = shares(old, split, _rates_for(domain, rates))
    return DryRun(
        version=state.version,
        before=before,
        after=after,
        diff=diff(state, new),
        rates=dict(rates or {}),
    )


def shares(
    current: SplitMap, target: SplitMap, rates: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Predicted share of a domain's traffic per zone of `target`, given `current`.

    Without rates every bucket (hash value) carries the same traffic, so a zone's
    share is its range width over the modulus: `(upper - lower) / sharding`.

    With rates, a bucket keeps the traffic density it has now, because the devices in
    it stay in it whatever zone serves it: the density of a bucket served now by zone
    y is `rate[y] / width_now(y)`. A zone y with a non-empty range and no rate gets
    the mean density of the zones that have one. Then::

        traffic_after(z) = sum over y of |target range(z) ∩ current range(y)| * density(y)
        share_after(z)   = traffic_after(z) / sum of all rates (as filled in)

    so `shares(current, current, rates)` is each zone's measured share. Rates are
    ignored (width only) when none of the zones with a non-empty range has a rate,
    when they all sum to 0, or when the modulus changes (the buckets no longer line
    up).

    Args:
        current: The split serving traffic now (whose zones the rates measure).
        target: The split to predict for (may be `current`).
        rates: Requests per second per zone of `current`.

    Returns:
        Zone of `target` -> share in [0, 1]; the shares sum to 1.

    Raises:
        ValueError: A negative or non-finite rate.
    """
    width = {z: max(0, s.upper - s.lower) for z, s in target.zones.items()}
    uniform = {z: w / target.sharding for z, w in width.items()}
    if not rates or current.sharding != target.sharding:
        return uniform
    for zone, rate in rates.items():
        if not math.isfinite(rate) or rate < 0:
            raise ValueError(f"rate of {zone} must be a finite number ≥ 0, got {rate}")
    live = {z: s for z, s in current.zones.items() if s.upper > s.lower}
    known = {z: rates[z] for z in live if z in rates}
    known_width = sum(live[z].upper - live[z].lower for z in known)
    if not known or sum(known.values()) == 0:
        return uniform
    mean = sum(known.values()) / known_width
    density = {z: known[z] / (s.upper - s.lower) if z in known else mean for z, s in live.items()}
    traffic = {
        z: sum(
            max(0, min(t.upper, c.upper) - max(t.lower, c.lower)) * density[y]
            for y, c in live.items()
        )
        for z, t in target.zones.items()
    }
    total = sum(traffic.values())
    if total == 0:  # a target that does not tile the measured ranges
        return uniform
    return {z: v / total for z, v in traffic.items()}


def diff(old: DesiredState, new: DesiredState) -> list[str]:
    """Human-readable lines for what changed between two states, ignoring the version.

    Split lines come first (domains sorted), then zones, then backends, e.g.
    "api.example.test: changping [0,50) -> [0,100)", "api.example.test: sharding
    100 -> 1000", "api.example.test: yanqing domain a.test -> b.test", "zone yanqing:
    enabled -> drain", "backend web-cp/cp-1: enabled -> disabled". A zone or domain on
    one side only is shown as "absent" on the other. The list is empty exactly when
    the two states have the same content.

    Args:
        old: The state before.
        new: The state after.

    Returns:
        One line per difference.
    """
    lines: list[str] = []
    for domain in sorted(old.split.keys() | new.split.keys()):
        a, b = old.split.get(domain), new.split.get(domain)
        if a is None or b is None:
            lines.append(f"{domain}: {_render_split(a)} -> {_render_split(b)}")
            continue
        if a.sharding != b.sharding:
            lines.append(f"{domain}: sharding {a.sharding} -> {b.sharding}")
        for zone in sorted(a.zones.keys() | b.zones.keys()):
            za, zb = a.zones.get(zone), b.zones.get(zone)
            if za is None or zb is None or (za.lower, za.upper) != (zb.lower, zb.upper):
                lines.append(f"{domain}: {zone} {_render_range(za)} -> {_render_range(zb)}")
            if za is not None and zb is not None and za.domain != zb.domain:
                lines.append(f"{domain}: {zone} domain {za.domain} -> {zb.domain}")
    for domain in sorted(old.saved_split.keys() | new.saved_split.keys()):
        a, b = old.saved_split.get(domain), new.saved_split.get(domain)
        if a == b:
            continue
        if a is None:
            lines.append(f"{domain}: split saved for restore")
        elif b is None:
            lines.append(f"{domain}: saved split dropped")
        else:
            lines.append(f"{domain}: saved split replaced")
    lines += _admin_lines("zone", old.zones, new.zones)
    lines += _admin_lines("backend", old.backends, new.backends)
    return lines


def state_problems(state: DesiredState, topo: Topology) -> list[str]:
    """What makes a state (e.g. an old version) unfit for a topology.

    Checks every split map (and saved split): zones exist in the topology, zone
    domains are DNS names, ranges tile `[0, sharding)`; and that admin entries name
    zones and backends of the topology.

    Args:
        state: Any state.
        topo: The topology to check it against.

    Returns:
        One message per problem; empty when the state fits.
    """
    problems: list[str] = []
    for label, maps in (("split", state.split), ("saved split", state.saved_split)):
        for domain, split in maps.items():
            problems += [f"{label} of {domain}: {p}" for p in _split_problems(split, topo)]
    for zone in state.zones:
        if zone not in topo.zones:
            problems.append(f"zone admin: {_unknown('zone', zone, topo.zones)}")
    known = {backend_key(p, b.id) for p, pool in topo.pools.items() for b in pool.backends}
    for key in state.backends:
        if key not in known:
            problems.append(f"backend admin: {_unknown('backend', key, known)}")
    return problems


# --- the changes --------------------------------------------------------------------


def _next(
    state: DesiredState, change: Change, topo: Topology, lookup: HistoryLookup | None
) -> DesiredState:
    """The next state for a change: version + 1, content changed (or ChangeRejected)."""
    match change:
        case SetSplit():
            new = _set_split(state, change, topo)
        case Cutover():
            new = _cutover(state, change, topo)
        case Restore():
            new = _restore(state, change, topo)
        case SetZoneAdmin():
            new = _zone_admin(state, change, topo)
        case SetBackendAdmin():
            new = _backend_admin(state, change, topo)
        case Rollback():
            new = _rollback(state, change, topo, lookup)
        case _:
            raise ValueError(f"not a change: {change!r}")
    if new.same_content(state):
        raise ChangeRejected(f"no change: {_describe(change)} leaves the state as it is", 409)
    return new.model_copy(update={"version": state.version + 1})


def _set_split(state: DesiredState, change: SetSplit, topo: Topology) -> DesiredState:
    domain = change.domain
    known = state.split.keys() | topo.split.keys()
    if domain not in known:
        raise ChangeRejected(_unknown("split domain", domain, known), 404)
    problems = _split_problems(change.split, topo)
    if problems:
        raise ChangeRejected(f"split of {domain}: " + "; ".join(problems), 422)
    if state.split.get(domain) == change.split:
        raise ChangeRejected(f"no change: {domain} already has this split", 409)
    saved = {d: s for d, s in state.saved_split.items() if d != domain}
    return state.model_copy(
        update={"split": {**state.split, domain: change.split}, "saved_split": saved}
    )


def _cutover(state: DesiredState, change: Cutover, topo: Topology) -> DesiredState:
    domain, to = change.domain, change.to
    current = _split_of(state, domain)
    if to not in topo.zones:
        raise ChangeRejected(_unknown("zone", to, topo.zones), 404)
    if to not in current.zones:
        raise ChangeRejected(
            f"zone {to} has no share in the split of {domain} (its zone domain is unknown;"
            f" zones: {_names(current.zones)}): add it with a split first",
            422,
        )
    admin = state.zones.get(to, "enabled")
    if admin != "enabled":
        raise ChangeRejected(f"zone {to} is {admin}: enable it before cutting over to it", 409)
    mine = current.zones[to]
    if mine.upper - mine.lower == current.sharding:
        raise ChangeRejected(f"no change: {domain} is already all on {to}", 409)
    zones = {
        z: SplitZone(lower=0, upper=current.sharding if z == to else 0, domain=s.domain)
        for z, s in current.zones.items()
    }
    cut = SplitMap(sharding=current.sharding, zones=zones)
    saved = {**state.saved_split}
    saved.setdefault(domain, current)
    return state.model_copy(update={"split": {**state.split, domain: cut}, "saved_split": saved})


def _restore(state: DesiredState, change: Restore, topo: Topology) -> DesiredState:
    domain = change.domain
    _split_of(state, domain)
    target = state.saved_split.get(domain) or topo.split.get(domain)
    if target is None:
        raise ChangeRejected(
            f"nothing to restore: {domain} is not cut over and has no split in the topology",
            409,
        )
    problems = _split_problems(target, topo)
    if problems:
        raise ChangeRejected(f"cannot restore {domain}: " + "; ".join(problems), 422)
    saved = {d: s for d, s in state.saved_split.items() if d != domain}
    return state.model_copy(update={"split": {**state.split, domain: target}, "saved_split": saved})


def _zone_admin(state: DesiredState, change: SetZoneAdmin, topo: Topology) -> DesiredState:
    if change.zone not in topo.zones:
        raise ChangeRejected(_unknown("zone", change.zone, topo.zones), 404)
    if state.zones.get(change.zone, "enabled") == change.state:
        raise ChangeRejected(f"no change: zone {change.zone} is already {change.state}", 409)
    return state.model_copy(update={"zones": {**state.zones, change.zone: change.state}})


def _backend_admin(state: DesiredState, change: SetBackendAdmin, topo: Topology) -> DesiredState:
    pool = topo.pools.get(change.pool)
    if pool is None:
        raise ChangeRejected(_unknown("pool", change.pool, topo.pools), 404)
    by_id = {b.id: b for b in pool.backends}
    backend = by_id.get(change.backend)
    if backend is None:
        raise ChangeRejected(
            f"unknown backend '{change.backend}' in pool '{change.pool}' "
            f"(backends: {_names(by_id)})",
            404,
        )
    key = backend_key(change.pool, change.backend)
    if state.backends.get(key, backend.state) == change.state:
        raise ChangeRejected(f"no change: backend {key} is already {change.state}", 409)
    return state.model_copy(update={"backends": {**state.backends, key: change.state}})


def _rollback(
    state: DesiredState, change: Rollback, topo: Topology, lookup: HistoryLookup | None
) -> DesiredState:
    to = change.to_version
    if to == state.version:
        raise ChangeRejected(f"no change: version {to} is the current version", 409)
    if to > state.version:
        raise ChangeRejected(f"unknown version {to} (latest is {state.version})", 404)
    if lookup is None:
        raise ValueError("a Rollback needs history_lookup")
    old = lookup(to)
    if old is None:
        raise ChangeRejected(f"unknown version {to}: not in the history", 404)
    if old.version != to:
        raise ValueError(f"history_lookup({to}) answered version {old.version}")
    problems = state_problems(old, topo)
    if problems:
        raise ChangeRejected(f"cannot roll back to version {to}: " + "; ".join(problems), 422)
    if old.same_content(state):
        raise ChangeRejected(
            f"no change: version {to} has the same content as version {state.version}", 409
        )
    return old


# --- helpers ------------------------------------------------------------------------


def _split_of(state: DesiredState, domain: str) -> SplitMap:
    split = state.split.get(domain)
    if split is None:
        raise ChangeRejected(_unknown("split domain", domain, state.split), 404)
    return split


def _split_problems(split: SplitMap, topo: Topology) -> list[str]:
    problems = [
        _unknown("zone", zone, topo.zones) for zone in split.zones if zone not in topo.zones
    ]
    problems += [
        f"zone '{zone}': invalid domain '{s.domain}': expected a DNS name"
        for zone, s in split.zones.items()
        if not is_dns_name(s.domain)
    ]
    ranges = {zone: (s.lower, s.upper) for zone, s in split.zones.items()}
    return problems + split_ranges_problems(split.sharding, ranges)


def _rates_for(domain: str, rates: Mapping[str, float] | None) -> dict[str, float] | None:
    if rates is None:
        return None
    out = {k: v for k, v in rates.items() if "/" not in k}
    prefix = f"{domain}/"
    out.update({k[len(prefix) :]: v for k, v in rates.items() if k.startswith(prefix)})
    return out


def _admin_lines(kind: str, old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    return [
        f"{kind} {name}: {old.get(name, 'absent')} -> {new.get(name, 'absent')}"
        for name in sorted(old.keys() | new.keys())
        if old.get(name) != new.get(name)
    ]


def _render_range(zone: SplitZone | None) -> str:
    return "absent" if zone is None else f"[{zone.lower},{zone.upper})"


def _render_split(split: SplitMap | None) -> str:
    if split is None:
        return "absent"
    ranges = ", ".join(
        f"{z} {_render_range(s)}" for z, s in sorted(split.zones.items(), key=lambda i: i[1].lower)
    )
    return f"sharding {split.sharding}: {ranges}"


def _describe(change: Change) -> str:
    fields = change.model_dump(exclude={"kind"}, exclude_none=True)
    shown = ", ".join(f"{k}={v!r}" for k, v in fields.items() if k != "split")
    return f"{change.kind}({shown})"


def _names(names: Collection[str]) -> str:
    return ", ".join(sorted(names)) or "none defined"


def _unknown(kind: str, name: str, names: Collection[str]) -> str:
    return f"unknown {kind} '{name}' ({kind.split()[-1]}s: {_names(names)})"


__all__ = ["HistoryLookup", "apply", "diff", "dry_run", "initial", "shares", "state_problems"]
