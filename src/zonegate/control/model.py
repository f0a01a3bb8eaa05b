"""The control plane's data: the desired state, the changes to it, the audit entries.

Every model is a frozen pydantic model that forbids unknown keys, so the same classes
serve the pure service, the stores (as JSON) and, next, the HTTP API bodies.

A `DesiredState` is what every runtime process follows: per split domain its ranges,
and the admin state of every zone and backend, under one monotonic `version`. A change
is one of the `Change` models, told apart by `kind`; `service.apply` turns a state and
a change into the next state and the `AuditEntry` that records it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from zonegate.errors import RemoteProtocolError
from zonegate.topology.schema import SplitMap, Topology

AdminState = Literal["enabled", "drain", "disabled"]
"""enabled: takes traffic; drain: takes no new traffic, finishes what it has;
disabled: takes nothing."""

Version = Annotated[int, Field(ge=1)]


class ChangeRejected(RemoteProtocolError):
    """The change is refused.

    `status` (also `hint`, as for every `ProtocolError`) is the HTTP status the API
    answers with: 404 when a name the change addresses does not exist, 422 when the
    change is malformed (a split that does not tile, a zone a split cannot use), 409
    when it conflicts with the current state (no change, cut-over to a zone that is
    not enabled, nothing to restore).
    """

    hint = 422

    def __init__(self, message: str, status: Literal[404, 409, 422] = 422) -> None:
        super().__init__(message, hint=status)

    @property
    def status(self) -> int:
        """The HTTP status to answer with (same as `hint`)."""
        return self.hint


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def backend_key(pool: str, backend: str) -> str:
    """The key of a backend in `DesiredState.backends`: `"{pool}/{backend_id}"`."""
    return f"{pool}/{backend}"


class DesiredState(_Model):
    """What every runtime process follows, as of one version.

    The content (everything but `version`) is what a rollback copies back.
    """

    version: Version
    """Monotonic, +1 per change; the first state is version 1."""
    split: dict[str, SplitMap]
    """Per split domain, its modulus and per-zone ranges; every map tiles
    `[0, sharding)`."""
    zones: dict[str, AdminState]
    """Admin state per zone of the topology."""
    backends: dict[str, AdminState]
    """Admin state per backend, keyed `"{pool}/{backend_id}"` (`backend_key`)."""
    saved_split: dict[str, SplitMap] = {}
    """Per domain currently cut over, the split it had before: what `Restore` goes
    back to. Bookkeeping, not read by the runtimes."""

    # A zone or backend of the topology missing from `zones` / `backends` (added to
    # the file after this state was made) is at its file state: enabled for a zone.

    @classmethod
    def initial(cls, topo: Topology) -> DesiredState:
        """Version 1: the topology file's splits, every zone enabled (the file has no
        zone admin state), every backend at its file `state`."""
        return cls(
            version=1,
            split=dict(topo.split),
            zones={name: "enabled" for name in topo.zones},
            backends={
                backend_key(pool_name, b.id): b.state
                for pool_name, pool in topo.pools.items()
                for b in pool.backends
            },
        )

    def same_content(self, other: DesiredState) -> bool:
        """Whether two states differ at most in their version."""
        return self.model_dump(exclude={"version"}) == other.model_dump(exclude={"version"})


# --- changes ------------------------------------------------------------------------


class SetSplit(_Model):
    """Replace a domain's split map (modulus, ranges, zone domains)."""

    kind: Literal["set_split"] = "set_split"
    domain: str
    split: SplitMap


class Cutover(_Model):
    """Move a domain's whole range to one zone; every other zone gets an empty range."""

    kind: Literal["cutover"] = "cutover"
    domain: str
    to: str
    """The zone that takes the whole range; it must be in the domain's split map."""


class Restore(_Model):
    """Undo a cut-over: back to the split the domain had before it was cut over, or,
    if it is not cut over, to the topology file's split."""

    kind: Literal["restore"] = "restore"
    domain: str


class SetZoneAdmin(_Model):
    """Set a zone's admin state."""

    kind: Literal["zone_admin"] = "zone_admin"
    zone: str
    state: AdminState


class SetBackendAdmin(_Model):
    """Set a backend's admin state."""

    kind: Literal["backend_admin"] = "backend_admin"
    pool: str
    backend: str
    """The backend's id: its `name`, else its address."""
    state: AdminState


class Rollback(_Model):
    """Make a new version whose content equals an earlier version's."""

    kind: Literal["rollback"] = "rollback"
    to_version: Version


Change = Annotated[
    SetSplit | Cutover | Restore | SetZoneAdmin | SetBackendAdmin | Rollback,
    Field(discriminator="kind"),
]
"""Any change, told apart by `kind`."""

CHANGE: TypeAdapter[Change] = TypeAdapter(Change)
"""Validates a change from a dict or JSON: `CHANGE.validate_json(body)`."""


class AuditEntry(_Model):
    """Who made a version, when, why, and what it changed."""

    version: Version
    at: float
    """Unix time (seconds) of the change, as passed to `service.apply`."""
    who: Annotated[str, Field(min_length=1)]
    """Who asked for the change (required)."""
    why: str
    """Why (free text, may be empty)."""
    change: Change | None
    """The change that made this version; None for the initial state (version 1),
    which comes from the topology file."""
    diff: list[str]
    """Human-readable lines, e.g. "api.example.test: changping [0,50) -> [0,100)"."""
    previous_version: Annotated[int, Field(ge=0)]
    """The version this one was made from; 0 for the initial state."""


class DryRun(_Model):
    """What a change would do, without doing it (`service.dry_run`)."""

    version: Version
    """The version the prediction starts from; apply the change against it."""
    before: dict[str, dict[str, float]]
    """Per split domain, per zone, its predicted share of the domain's traffic now."""
    after: dict[str, dict[str, float]]
    """The same, once the change is applied."""
    diff: list[str]
    """What would change, as in `AuditEntry.diff`."""
    rates: dict[str, float] = {}
    """Requests per second per zone, as the LBs reported them, that the shares are
    weighted by; empty: the shares are range widths alone."""


__all__ = [
    "CHANGE",
    "AdminState",
    "AuditEntry",
    "Change",
    "ChangeRejected",
    "Cutover",
    "DesiredState",
    "DryRun",
    "Restore",
    "Rollback",
    "SetBackendAdmin",
    "SetSplit",
    "SetZoneAdmin",
    "backend_key",
]
