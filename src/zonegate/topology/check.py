"""`zonegate check FILE`: the config-test mode, like `haproxy -c` or `keepalived -t`."""

from __future__ import annotations

import contextlib
import sys
from typing import Any, TextIO

from zonegate.errors import ConfigErrors, ConfigProblem
from zonegate.topology.load import load_topology, render_path
from zonegate.topology.schema import Topology


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def summary(topo: Topology) -> str:
    """One line describing a topology: "2 zones, 2 pools (6 backends), 2 listeners, 1 split map".

    Args:
        topo: A validated topology.

    Returns:
        The counts of zones, pools, backends, listeners and split maps.
    """
    backends = sum(len(pool.backends) for pool in topo.pools.values())
    return ", ".join(
        [
            _count(len(topo.zones), "zone"),
            f"{_count(len(topo.pools), 'pool')} ({_count(backends, 'backend')})",
            _count(len(topo.listeners), "listener"),
            _count(len(topo.split), "split map"),
        ]
    )


def config_warnings(path: str, topo: Topology) -> list[ConfigProblem]:
    """What is valid but probably not meant, each at its file:line:col.

    Two cases. A setting the zone's LB engine honours differently from the built-in
    engine (`zonegate.lb.haproxy.capabilities.engine_warnings`). And a zone the GSLB
    may answer (a candidate of a `dns.domains` GSLB name) whose health check cannot
    run, i.e. `health.type: lb_status` (the default) without `lb_admin`, or tcp/http
    with neither `health.address` nor a VIP. `zonegate dns` and `zonegate httpdns`
    answer such a zone as always up (reason "no health check", logged at start), so
    its users are sent to it even when it is dead.

    Args:
        path: The file `topo` was loaded from (for the positions).
        topo: The validated topology.

    Returns:
        The warnings, in file order; empty when there is nothing to say.
    """
    out = _engine_warnings(path, topo)
    if not any(domain.gslb for domain in topo.dns.domains.values()):
        return out
    from zonegate.dns.policy import compile_gslb
    from zonegate.dns.zonehealth import health_source

    used: set[str] = set()
    for entry in compile_gslb(topo).names.values():
        if entry.cname is None:
            used.update(entry.candidates)
    tree = _tree(path)
    for name, zone in topo.zones.items():
        if name not in used or health_source(zone) is not None:
            continue
        if zone.health.type == "lb_status":
            what = (
                f"health check lb_status (the default) but no lb_admin: the GSLB cannot "
                f"probe zone {name!r} and answers it as always up; set zones.{name}.lb_admin "
                f"to its LB's admin address, or use a tcp/http health check"
            )
        else:
            what = (
                f"health check {zone.health.type} with neither health.address nor a VIP: "
                f"the GSLB cannot probe zone {name!r} and answers it as always up"
            )
        line, col = _position(tree, ["zones", name, "health", "type"])
        out.append(ConfigProblem(path, line, col, f"zones.{name}", f"warning: {what}"))
    return sorted(out, key=lambda p: (p.line or 0, p.col or 0))


def _engine_warnings(path: str, topo: Topology) -> list[ConfigProblem]:
    from zonegate.lb.haproxy.capabilities import engine_warnings

    found = engine_warnings(topo)
    if not found:
        return []
    tree = _tree(path)
    out = []
    for keys, msg in found:
        line, col = _position(tree, [str(k) for k in keys])
        out.append(ConfigProblem(path, line, col, render_path(keys), f"warning: {msg}"))
    return out


def _tree(path: str) -> Any:
    """The file's YAML tree with line marks (None if it cannot be read again)."""
    from ruamel.yaml import YAML

    try:
        with open(path, encoding="utf-8-sig") as f:
            return YAML(typ="rt").load(f)
    except Exception:  # read once already; a race with an editor only loses the line
        return None


def _position(tree: Any, keys: list[str]) -> tuple[int | None, int | None]:
    """1-based line and column of the deepest of `keys` present in `tree`."""
    best: tuple[int | None, int | None] = (None, None)
    node = tree
    for key in keys:
        lc = getattr(node, "lc", None)
        if lc is None or not isinstance(node, dict) or key not in node:
            break
        with contextlib.suppress(KeyError, TypeError, AttributeError):
            line, col = lc.key(key)
            best = (line + 1, col + 1)
        node = node[key]
    return best


def run_check(path: str, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Validate a topology file and report, for `zonegate check FILE`.

    Args:
        path: The topology file.
        out: Where the success summary goes; default: sys.stdout at call time.
        err: Where problems go, one per line as `file:line:col: path: message`,
            then a count line (`file: 16 errors`); default: sys.stderr at call time.

    Returns:
        0 if the file is valid, 1 if it has problems or cannot be read.
    """
    # Resolved per call, not at import, so redirected or captured streams are honoured.
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        topo = load_topology(path)
        if topo.dns.domains:
            # What `zonegate dns` builds at start (answers too large for one message,
            # data below a delegation): the same refusal, found before deployment.
            from zonegate.dns.zonedata import compile_zones

            compile_zones(topo, source=path)
    except ConfigErrors as e:
        for problem in e.problems:
            print(problem, file=err)
        # The last line says how many, like a compiler's: the list may scroll away.
        print(f"{path}: {_count(len(e.problems), 'error')}", file=err)
        return 1
    found = config_warnings(path, topo)
    for warning in found:
        print(warning, file=err)
    note = f" ({len(found)} warning{'s' if len(found) != 1 else ''})" if found else ""
    print(f"{path}: OK{note} — {summary(topo)}", file=out)
    return 0


__all__ = ["config_warnings", "run_check", "summary"]
