"""`zonegate check FILE`: the config-test mode, like `haproxy -c` or `keepalived -t`."""

from __future__ import annotations

import sys
from typing import TextIO

from zonegate.errors import ConfigErrors
from zonegate.topology.load import load_topology
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


def run_check(path: str, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Validate a topology file and report, for `zonegate check FILE`.

    Args:
        path: The topology file.
        out: Where the success summary goes; default: sys.stdout at call time.
        err: Where problems go, one per line as `file:line:col: path: message`;
            default: sys.stderr at call time.

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
        return 1
    print(f"{path}: OK — {summary(topo)}", file=out)
    return 0


__all__ = ["run_check", "summary"]
