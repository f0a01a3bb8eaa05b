"""Names and state shapes shared by the haproxy engine's modules (pure).

Naming, so that every module finds the same objects in HAProxy:

- a frontend per listener: ``fe_<listener>``;
- a backend per pool: ``be_<pool>``;
- a server per backend of the pool, named by the backend's id (its `name`, else its
  address: HAProxy accepts letters, digits, ``- _ . :`` in names, which covers both);
- a spill server per backend of the pool's backup pool, inside the pool's own
  backend: ``spill:<backup pool>:<backend id>``. The spill plan moves traffic to the
  backup by weights, so both live in one HAProxy backend;
- a panic twin per backend of a pool with active checks: ``panic:<backend id>``, the
  same address without a check, in maintenance until the pool panics. Panic puts the
  twins of the enabled backends in service (and the checked servers at weight 0), so
  every enabled backend takes requests whatever its health while HAProxy's checks keep
  running on the checked servers and tell when the pool may leave panic;
- the version map: one key, ``version``, in ``<state dir>/version.map``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

WEIGHT_MAX = 256
"""HAProxy's largest server weight (`weight` keyword and `set weight`)."""

VERSION_MAP = "version.map"
VERSION_KEY = "version"
SPILL_PREFIX = "spill:"
PANIC_PREFIX = "panic:"


def frontend_name(listener: str) -> str:
    return f"fe_{listener}"


def backend_name(pool: str) -> str:
    return f"be_{pool}"


def spill_server_name(backup_pool: str, backend_id: str) -> str:
    return f"{SPILL_PREFIX}{backup_pool}:{backend_id}"


def panic_server_name(backend_id: str) -> str:
    return f"{PANIC_PREFIX}{backend_id}"


class ServerAdmin(enum.Enum):
    """A server's administrative state, as `set server ... state` takes it."""

    READY = "ready"
    DRAIN = "drain"
    MAINT = "maint"


@dataclass(frozen=True, slots=True)
class ServerKey:
    backend: str
    server: str


@dataclass(frozen=True, slots=True)
class ServerDesired:
    """What zonegate wants a server to be."""

    admin: ServerAdmin
    weight: int
    """0..WEIGHT_MAX; 0 takes no new requests (spill plan, slow start handled by HAProxy).
    Active checks always run: panic puts twin servers in service instead (see above)."""


@dataclass(frozen=True, slots=True)
class ServerReported:
    """What HAProxy says a server is (from `show servers state` / `show stat`)."""

    admin: ServerAdmin
    weight: int
    up: bool
    """Operational state: UP (or NOLB, or going down) is True; DOWN is False."""
    check_enabled: bool
    """Whether active checks run (False after `disable health`)."""
    check_configured: bool = True
    """Whether the server has an active check at all (`check` in haproxy.cfg); without
    one, `enable health` is refused."""


DesiredState = dict[ServerKey, ServerDesired]
ReportedState = dict[ServerKey, ServerReported]
