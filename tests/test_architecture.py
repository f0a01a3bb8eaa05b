"""The pure modules stay pure: no sockets, no clock, no event loop, no logging."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "zonegate"

PURE_MODULES = [
    "topology/types.py",
    "topology/schema.py",
    "topology/validate.py",
    "topology/snapshot.py",
    "balance/__init__.py",
    "balance/base.py",
    "balance/_common.py",
    "balance/rand.py",
    "balance/rr.py",
    "balance/swrr.py",
    "balance/chash.py",
    "balance/leastconn.py",
    "balance/p2c.py",
    "balance/shard.py",
    "httpdns/sign.py",
    "dns/model.py",
    "dns/policy.py",
    "dns/codec.py",
    "dns/zonedata.py",
    "dns/zoneadmin.py",
    "control/model.py",
    "control/service.py",
    "control/fleet.py",
    "health/machine.py",
    "lb/http1.py",
    "lb/router.py",
    "lb/haproxy/capabilities.py",
    "lb/haproxy/render.py",
    "lb/haproxy/desired.py",
    "lb/haproxy/parse.py",
    "lb/haproxy/reconcile.py",
    "lb/haproxy/model.py",
    "vrrp/packet.py",
    "vrrp/machine.py",
    "vrrp/track.py",
    "control/lease.py",
    "client/_shard.py",
    "client/_failover.py",
    "client/_addresses.py",
    "lab/drills.py",
    "lab/report.py",
    "lab/outage.py",
    "lab/labplan.py",
]

FORBIDDEN = {
    "asyncio",
    "socket",
    "time",
    "threading",
    "logging",
    "uvloop",
    "pyroute2",
    "prometheus_client",
    "subprocess",
    "selectors",
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_no_io(module):
    path = SRC / module
    assert path.exists(), f"{module} listed as pure but missing"
    bad = imported_roots(path) & FORBIDDEN
    assert not bad, f"{module} is pure code but imports {sorted(bad)}"


def test_every_balance_module_is_listed():
    listed = {m for m in PURE_MODULES if m.startswith("balance/")}
    present = {f"balance/{p.name}" for p in (SRC / "balance").glob("*.py")}
    assert present <= listed, f"add new balance modules to PURE_MODULES: {sorted(present - listed)}"
