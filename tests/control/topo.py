"""The topology the control tests run on: three zones, two pools, two split domains."""

from __future__ import annotations

from typing import Any

from zonegate.control import service
from zonegate.control.model import AuditEntry, DesiredState, SetSplit
from zonegate.topology.schema import SplitMap, Topology

API = "api.example.test"
IMG = "img.example.test"

TOPO_DATA: dict[str, Any] = {
    "zones": {"changping": {}, "yanqing": {}, "shanghai": {}},
    "pools": {
        "web-cp": {
            "zone": "changping",
            "backends": [
                {"address": "127.0.0.1:8101", "name": "cp-1"},
                {"address": "127.0.0.1:8102", "name": "cp-2"},
                {"address": "127.0.0.1:8103"},
            ],
        },
        "web-yq": {
            "zone": "yanqing",
            "backends": [{"address": "127.0.0.1:8201", "name": "yq-1", "state": "drain"}],
        },
    },
    "split": {
        API: {
            "sharding": 100,
            "zones": {
                "changping": {"lower": 0, "upper": 50, "domain": "api-cp.example.test"},
                "yanqing": {"lower": 50, "upper": 100, "domain": "api-yq.example.test"},
            },
        },
        IMG: {
            "sharding": 7,
            "zones": {
                "changping": {"lower": 0, "upper": 3, "domain": "img-cp.example.test"},
                "yanqing": {"lower": 3, "upper": 7, "domain": "img-yq.example.test"},
                "shanghai": {"lower": 7, "upper": 7, "domain": "img-sh.example.test"},
            },
        },
    },
}

TOPO = Topology.model_validate(TOPO_DATA)


def split(sharding: int = 100, **ranges: tuple[int, int]) -> SplitMap:
    """A split map of the api domain: `split(changping=(0, 30), yanqing=(30, 100))`."""
    short = {"changping": "cp", "yanqing": "yq", "shanghai": "sh"}
    return SplitMap(
        sharding=sharding,
        zones={
            zone: {"lower": lo, "upper": hi, "domain": f"api-{short.get(zone, zone)}.example.test"}
            for zone, (lo, hi) in ranges.items()
        },
    )


def initial() -> DesiredState:
    return DesiredState.initial(TOPO)


def step(state: DesiredState, who: str = "writer") -> tuple[DesiredState, AuditEntry]:
    """The next version of a stream of writes: moves the api split's boundary."""
    k = 1 + state.version % 99  # differs from the previous version's boundary
    change = SetSplit(domain=API, split=split(changping=(0, k), yanqing=(k, 100)))
    return service.apply(state, change, topo=TOPO, who=who, why="step", now=float(state.version))


def first(who: str = "test") -> tuple[DesiredState, AuditEntry]:
    """Version 1 and its audit entry."""
    return service.initial(TOPO, who=who, why="first", now=0.0)
