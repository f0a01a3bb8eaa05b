"""Leases in the control plane: at-most-one holder per name, for VRRP quorum mode.

Theory of operation
-------------------
`LeaseTable` is pure (time is passed in). A lease is `(name, holder, expires)`.
`acquire(name, holder, ttl, now)` grants it when it is free, expired, or already held
by `holder` (a renewal), and then it lasts until `now + ttl`; otherwise it answers who
holds it. `release` frees it early (a master that steps down, so the next one does
not wait for the ttl).

Restarts. The table lives in memory: after a control-plane restart it is empty, yet
a holder granted a lease just before may still (rightly) believe it holds it for up
to `max_ttl`. So for `max_ttl` after start, the table grants a free name only to a
request that says `renew=True`, i.e. comes from a holder that believes its lease is
still valid; everyone else is refused as if the lease were held. At most one node
can believe so at any time (each counts its lease from the *send* time of its last
granted request, which is no later than the grant), so at-most-one survives restarts
without a durable store. The cost: for `max_ttl` after a restart, no *new* holder
can take over.

The HTTP routes (`install`) are a thin shell: `POST /v1/leases/{name}` with
`{"holder": str, "ttl": float, "renew": bool}` answers 200 `{"holder", "ttl"}` or 409
`{"holder": other}` (`null` while the restart guard refuses), `DELETE
/v1/leases/{name}?holder=X` releases. Both need an operator token like every write.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at run
# time, and they name classes local to `install` (as in control.api).

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_TTL = 10.0
"""The longest lease, in seconds; also how long a restarted table refuses new holders.
topology.validate.MAX_LEASE_TTL mirrors it."""
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True, slots=True)
class Lease:
    """A granted lease."""

    name: str
    holder: str
    ttl: float
    expires: float


@dataclass(frozen=True, slots=True)
class Granted:
    lease: Lease


@dataclass(frozen=True, slots=True)
class HeldByOther:
    """Refused: `holder` holds it until `expires`; holder None: the restart guard."""

    holder: str | None
    expires: float


class LeaseTable:
    """Leases by name. Pure: every method takes `now` (monotonic seconds).

    Args:
        started: When the control plane started (the restart guard runs from it).
        max_ttl: The longest ttl a request may ask for, and the guard's length.
    """

    def __init__(self, started: float, max_ttl: float = MAX_TTL) -> None:
        if max_ttl <= 0:
            raise ValueError("max_ttl must be positive")
        self.started = started
        self.max_ttl = max_ttl
        self._leases: dict[str, Lease] = {}

    def get(self, name: str, now: float) -> Lease | None:
        """The live lease of `name`, if any."""
        lease = self._leases.get(name)
        if lease is not None and now >= lease.expires:
            del self._leases[name]
            return None
        return lease

    def acquire(
        self, name: str, holder: str, ttl: float, now: float, *, renew: bool = False
    ) -> Granted | HeldByOther:
        """Grant or renew `name` to `holder` for `ttl` seconds from `now`.

        Args:
            name: The lease name.
            holder: Who asks (a VRRP instance name).
            ttl: Seconds, 0 < ttl <= max_ttl.
            now: Monotonic seconds.
            renew: The holder believes it holds the lease (only matters in the restart
                guard window).

        Raises:
            ValueError: A bad name, holder or ttl.
        """
        if not NAME.match(name):
            raise ValueError(f"invalid lease name {name!r}")
        if not holder or len(holder) > 128:
            raise ValueError("holder must be 1-128 characters")
        if not 0 < ttl <= self.max_ttl:
            raise ValueError(f"ttl must be > 0 and at most {self.max_ttl:g} s, got {ttl:g}")
        lease = self.get(name, now)
        if lease is not None and lease.holder != holder:
            return HeldByOther(lease.holder, lease.expires)
        if lease is None and not renew and now < self.started + self.max_ttl:
            # A previous incarnation may have granted it moments before it stopped.
            return HeldByOther(None, self.started + self.max_ttl)
        granted = Lease(name, holder, ttl, now + ttl)
        self._leases[name] = granted
        return Granted(granted)

    def release(self, name: str, holder: str, now: float) -> bool | None:
        """Free `name` if `holder` holds it.

        Returns:
            True if released, False if nobody held it, None if another holder does.
        """
        lease = self.get(name, now)
        if lease is None:
            return False
        if lease.holder != holder:
            return None
        del self._leases[name]
        return True


def install(app: Any, operator: Any, clock: Callable[[], float]) -> LeaseTable:
    """Add the lease routes to a FastAPI app; the table is also `app.state.leases`.

    Args:
        app: The control plane's FastAPI app.
        operator: The operator-token dependency (an `Annotated[..., Depends(...)]`).
        clock: Monotonic seconds (time.monotonic); the guard starts at its first value.
    """
    from fastapi import APIRouter, HTTPException
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field

    class LeaseRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        holder: str = Field(min_length=1, max_length=128)
        ttl: float = Field(gt=0)
        renew: bool = False

    table = LeaseTable(clock())
    app.state.leases = table
    app.state.lease_clock = clock
    router = APIRouter(prefix="/v1/leases", tags=["leases"])

    @router.post("/{name}", summary="Acquire or renew a lease (VRRP quorum mode)")
    async def acquire(name: str, body: LeaseRequest, who: operator) -> Any:  # type: ignore[valid-type]
        now = app.state.lease_clock()
        try:
            result = table.acquire(name, body.holder, body.ttl, now, renew=body.renew)
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        if isinstance(result, Granted):
            return {"name": name, "holder": result.lease.holder, "ttl": result.lease.ttl}
        detail = (
            "held by another holder"
            if result.holder is not None
            else "the control plane restarted: new holders wait for the longest lease"
        )
        return JSONResponse(
            {
                "holder": result.holder,
                "expires_in": max(0.0, result.expires - now),
                "detail": detail,
            },
            status_code=409,
        )

    @router.delete("/{name}", summary="Release a lease")
    async def release(name: str, holder: str, who: operator) -> Any:  # type: ignore[valid-type]
        released = table.release(name, holder, app.state.lease_clock())
        if released is None:
            lease = table.get(name, app.state.lease_clock())
            return JSONResponse(
                {"holder": lease.holder if lease else None, "detail": "held by another holder"},
                status_code=409,
            )
        return {"name": name, "released": released}

    app.include_router(router)
    return table


__all__ = ["MAX_TTL", "Granted", "HeldByOther", "Lease", "LeaseTable", "install"]
