"""The runtime view of the topology: an immutable snapshot with a version.

Every runtime process (dns, httpdns, lb) runs on one `Snapshot` at a time and swaps
it for a newer one atomically (a single reference assignment), as Envoy's workers
consume shared immutable state. Pure code receives a snapshot, never the loader.
"""

from __future__ import annotations

from dataclasses import dataclass

from zonegate.topology.schema import Topology


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A validated topology as of one config version."""

    version: int
    """Monotonic config version; the control plane bumps it on every change."""
    topology: Topology
    source: str
    """Where it came from: a file path, or the control plane URL."""


__all__ = ["Snapshot"]
