"""The control plane's HTTP API (FastAPI; OpenAPI at /docs and /openapi.json).

Theory of operation
-------------------

Every write is a `Change` decided by the pure `service` and persisted by the `Store`
with optimistic concurrency::

    request ──> auth (Bearer token -> name, role) ──> change model
        │                                                 │
        │   ?dry_run=true ──> service.dry_run ──> DryRun (nothing written)
        ▼
    store.latest() = V ──> service.apply(V, change, who=token name, why=reason)
        ──> store.append(V+1, expected_version=V)
              └─ VersionConflict: re-read the latest, apply again (once), else 409

Reads:

- `GET /v1/state` answers the latest `DesiredState`. With `since=V` it long-polls:
  it answers as soon as a version > V exists, or after `timeout` seconds (default
  30, at most 60) with **304 Not Modified** and no body. Every state answer (and the
  304) carries the header `X-Zonegate-Version` with the latest version.
- `GET /v1/history?since=&limit=` answers audit entries of versions > since.
- `GET /v1/versions/{v}` answers the state of one version (404 if unknown).

Auth (see `TokenTable`): `Authorization: Bearer TOKEN`; tokens are stored as the
sha256 of the token. A missing or unknown token is 401, a read-only token on a write
is 403. Reads accept any valid token; they are anonymous only when the token table
has no read token at all (so a table with operator tokens only leaves reads open, as
a follower needs no secret then). `/healthz` is always open.

Reasons: a real write needs a non-empty reason (`?reason=` or header `X-Reason`;
the query wins), recorded in the audit entry; 422 without one. A dry run needs none.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations at
# run time, and several name aliases local to `create_app`.

import asyncio
import enum
import hashlib
import hmac
import os
import pathlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from zonegate.control import fleet, lease, service
from zonegate.control.fleet import ZoneReport
from zonegate.control.model import (
    AdminState,
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
)
from zonegate.control.store import HISTORY_LIMIT_MAX, Store
from zonegate.errors import StoreUnavailable, VersionConflict
from zonegate.topology.schema import SplitMap, Topology

LONG_POLL_DEFAULT = 30.0
"""Seconds `GET /v1/state?since=V` waits by default."""
LONG_POLL_MAX = 60.0
"""The longest wait a client may ask for (bounded so proxies and clients do not cut
the request first)."""
VERSION_HEADER = "X-Zonegate-Version"
"""Header with the latest version on every state answer."""
WEB_DIR = pathlib.Path(__file__).parent / "web"
"""The dashboard (plain HTML/CSS/JS, package data), served at `/`."""


# --- tokens -------------------------------------------------------------------------


def hash_token(token: str) -> str:
    """The stored form of a token: the lowercase hex sha256 of its UTF-8 bytes."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenEntry(BaseModel):
    """One token of the token file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=100)]
    """Who uses it; recorded as `who` in the audit entry of every write it makes."""
    role: Literal["read", "operator"]
    """read: the GET endpoints; operator: also every write."""
    sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]
    """`hash_token(token)`: the token itself is never stored."""

    @field_validator("sha256")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()


class TokenTable(BaseModel):
    """The token file: `{tokens: [{name, role: read|operator, sha256: HEX}]}` (YAML or
    JSON). Names and hashes must be unique."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: list[TokenEntry] = []

    @field_validator("tokens")
    @classmethod
    def _unique(cls, tokens: list[TokenEntry]) -> list[TokenEntry]:
        for attr in ("name", "sha256"):
            seen: set[str] = set()
            for t in tokens:
                value = getattr(t, attr)
                if value in seen:
                    shown = t.name if attr == "sha256" else value
                    raise ValueError(f"duplicate token {attr} (token {shown!r})")
                seen.add(value)
        return tokens

    @property
    def anonymous_reads(self) -> bool:
        """Reads need no token when the table defines no read token."""
        return not any(t.role == "read" for t in self.tokens)

    def lookup(self, token: str) -> TokenEntry | None:
        """The entry of a presented token, or None (compared in constant time)."""
        digest = hash_token(token)
        found = None
        for entry in self.tokens:
            if hmac.compare_digest(entry.sha256, digest):
                found = entry
        return found


def load_tokens(path: str | os.PathLike[str]) -> TokenTable:
    """Read a token file (YAML or JSON).

    Raises:
        ValueError: The file cannot be read or parsed, or does not match `TokenTable`
            (the message names the file).
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        with open(path, encoding="utf-8") as f:
            data = YAML(typ="safe").load(f)
    except (OSError, YAMLError) as exc:
        raise ValueError(f"{os.fspath(path)}: {exc}") from exc
    try:
        return TokenTable.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise ValueError(f"{os.fspath(path)}: {exc}") from exc


# --- API models ---------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CutoverBody(_Body):
    """`POST /v1/cutover/{domain}`."""

    to: Annotated[str, Field(min_length=1)]
    """The zone that takes the whole range of the domain."""


class RollbackBody(_Body):
    """`POST /v1/rollback`."""

    to_version: Annotated[int, Field(ge=1)]
    """Make a new version with this version's content."""


class WriteResult(_Body):
    """The answer to a real write."""

    version: int
    """The new version."""
    diff: list[str]
    """What changed."""
    audit: AuditEntry
    """The audit entry of the new version."""


class ErrorDetail(_Body):
    """An error answer."""

    detail: str


class Health(_Body):
    """`GET /healthz`."""

    status: Literal["ok"] = "ok"
    version: int | None
    """The latest version (None when the store is empty)."""


class AdminAction(enum.StrEnum):
    """The admin verbs of the zone and backend endpoints."""

    enable = "enable"
    drain = "drain"
    disable = "disable"


_ACTION_STATE: dict[AdminAction, AdminState] = {
    AdminAction.enable: "enabled",
    AdminAction.drain: "drain",
    AdminAction.disable: "disabled",
}

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorDetail, "description": "Missing or unknown token"},
    403: {"model": ErrorDetail, "description": "Read-only token on a write"},
}
_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    404: {"model": ErrorDetail, "description": "Unknown domain, zone, pool, backend, version"},
    409: {"model": ErrorDetail, "description": "No change, zone not enabled, concurrent write"},
    422: {"description": "Malformed change (split does not tile, no reason, bad body)"},
    503: {"model": ErrorDetail, "description": "Store unavailable"},
}


# --- the app ------------------------------------------------------------------------


def create_app(
    topo: Topology,
    store: Store,
    tokens: TokenTable | Sequence[TokenEntry] | None,
    *,
    clock: Callable[[], float] = time.time,
    reports: Callable[[], Mapping[str, ZoneReport]] | None = None,
) -> FastAPI:
    """The control plane's FastAPI app.

    Args:
        topo: The validated topology; changes are checked against it.
        store: Holds the versions; must already hold version 1 (`service.initial`).
        tokens: The token table (or its entries). None or empty: reads are
            anonymous and every write is refused with 401.
        clock: Unix time in seconds, recorded in audit entries.
        reports: The runtimes' latest reports per zone (`fleet_poll.FleetPoller`):
            served at `/v1/zones` and used as request rates by dry runs. None: no
            reports (dry runs predict from range widths).

    Returns:
        The app; serve it with uvicorn (`zonegate.control.server`).
    """
    if tokens is None:
        table = TokenTable()
    elif isinstance(tokens, TokenTable):
        table = tokens
    else:
        table = TokenTable(tokens=list(tokens))

    app = FastAPI(
        title="zonegate control",
        version="1",
        description=(
            "The traffic-split platform: split maps, zone and backend admin state, "
            "cut-over and restore, versions, history and rollback. "
            "Send `Authorization: Bearer TOKEN`; writes need an operator token and a "
            "reason (`?reason=` or `X-Reason`); add `?dry_run=true` to any write to get "
            "the predicted traffic share per zone before and after, writing nothing."
        ),
    )
    bearer = HTTPBearer(auto_error=False, description="A read or operator token")
    Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]

    def _unauthorized(message: str) -> HTTPException:
        return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})

    def _identify(creds: HTTPAuthorizationCredentials | None) -> TokenEntry | None:
        if creds is None:
            return None
        entry = table.lookup(creds.credentials)
        if entry is None:
            raise _unauthorized("unknown token")
        return entry

    def reader(creds: Credentials) -> TokenEntry | None:
        entry = _identify(creds)
        if entry is None and not table.anonymous_reads:
            raise _unauthorized("a token is required (Authorization: Bearer TOKEN)")
        return entry

    def operator(creds: Credentials) -> TokenEntry:
        entry = _identify(creds)
        if entry is None:
            raise _unauthorized("an operator token is required (Authorization: Bearer TOKEN)")
        if entry.role != "operator":
            raise HTTPException(403, f"token {entry.name!r} is read-only; writes need operator")
        return entry

    Reader = Annotated[TokenEntry | None, Depends(reader)]
    Operator = Annotated[TokenEntry, Depends(operator)]
    lease.install(app, Operator, time.monotonic)  # /v1/leases: VRRP quorum mode
    DryRunFlag = Annotated[
        bool, Query(description="Answer the predicted effect (DryRun); write nothing")
    ]
    ReasonQuery = Annotated[
        str | None, Query(description="Why (audit log); required for real writes")
    ]
    ReasonHeader = Annotated[str | None, Header(alias="X-Reason", description="Same as reason")]

    @app.exception_handler(ChangeRejected)
    async def _rejected(request: Request, exc: ChangeRejected) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(StoreUnavailable)
    async def _unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        return JSONResponse({"detail": f"store unavailable: {exc}"}, status_code=503)

    stopping = asyncio.Event()
    app.state.stopping = stopping
    """Set when the server stops: open long-polls answer 304 at once, so a stop does
    not wait for them and the runtimes move to another control plane."""

    async def _wait_newer(since: int, seconds: float) -> DesiredState | None:
        if stopping.is_set():
            return None
        waiting = asyncio.ensure_future(store.wait_for(since, seconds))
        stop = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait((waiting, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not waiting.done():  # stopping
            waiting.cancel()
            return None
        return waiting.result()

    def _rates() -> Mapping[str, float] | None:
        return None if reports is None else fleet.rates(reports())

    async def _latest() -> DesiredState:
        state = await store.latest()
        if state is None:
            raise StoreUnavailable("the store holds no version yet")
        return state

    async def _lookup(change: Change) -> service.HistoryLookup | None:
        if not isinstance(change, Rollback):
            return None
        old = await store.get(change.to_version)
        return {old.version: old}.get if old is not None else (lambda _v: None)

    @dataclass(frozen=True, slots=True)
    class WriteContext:
        """Who writes, and how: the parameters every write endpoint shares."""

        who: TokenEntry
        dry_run: bool
        reason_q: str | None
        reason_h: str | None

    def write_context(
        who: Operator,
        dry_run: DryRunFlag = False,
        reason: ReasonQuery = None,
        x_reason: ReasonHeader = None,
    ) -> WriteContext:
        return WriteContext(who, dry_run, reason, x_reason)

    Write = Annotated[WriteContext, Depends(write_context)]

    async def _write(change: Change, ctx: WriteContext) -> WriteResult | DryRun:
        who, dry_run = ctx.who, ctx.dry_run
        reason = (ctx.reason_q if ctx.reason_q is not None else ctx.reason_h) or ""
        reason = reason.strip()
        if not dry_run and not reason:
            raise HTTPException(422, "a reason is required: ?reason=... or header X-Reason")
        for attempt in (1, 2):
            state = await _latest()
            lookup = await _lookup(change)
            if dry_run:
                return service.dry_run(
                    state, change, topo=topo, rates=_rates(), history_lookup=lookup
                )
            new, audit = service.apply(
                state, change, topo=topo, who=who.name, why=reason, now=clock(),
                history_lookup=lookup,
            )  # fmt: skip
            try:
                await store.append(new, audit, expected_version=state.version)
            except VersionConflict as exc:
                if attempt == 2:
                    raise HTTPException(409, f"concurrent write, try again: {exc}") from exc
                continue
            return WriteResult(version=new.version, diff=audit.diff, audit=audit)
        raise AssertionError("unreachable")  # pragma: no cover

    def _state_response(state: DesiredState) -> Response:
        return Response(
            state.model_dump_json(),
            media_type="application/json",
            headers={VERSION_HEADER: str(state.version)},
        )

    # --- reads -----------------------------------------------------------------------

    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz() -> Health:
        """Liveness: the store answers; no token needed."""
        state = await store.latest()
        return Health(version=state.version if state is not None else None)

    @app.get("/v1/zones", tags=["read"], responses=_ERRORS)
    async def get_zones(_who: Reader) -> dict[str, Any]:
        """What the runtimes report per zone, polled every second: the LB's reachability,
        healthy and total backends, requests in flight and per second, the config
        version it runs; the VRRP instances' states and the VIP owner."""
        found = reports() if reports is not None else {}
        return {"polled": reports is not None, "zones": {z: r.to_json() for z, r in found.items()}}

    @app.get(
        "/v1/state",
        response_model=DesiredState,
        tags=["read"],
        responses={**_ERRORS, 304: {"description": "No version > since before the timeout"}},
    )
    async def get_state(
        _who: Reader,
        since: Annotated[
            int | None, Query(ge=0, description="Long-poll: wait for a version > since")
        ] = None,
        timeout: Annotated[  # noqa: ASYNC109 (the query parameter of the long-poll)
            float, Query(ge=0, le=LONG_POLL_MAX, description="Long-poll wait, seconds")
        ] = LONG_POLL_DEFAULT,
    ) -> Response:
        """The latest desired state. With `since`, wait until a newer version exists
        (304 with `X-Zonegate-Version` and no body after `timeout`)."""
        if since is None:
            return _state_response(await _latest())
        state = await _wait_newer(since, timeout)
        if state is None:
            latest = await _latest()
            return Response(status_code=304, headers={VERSION_HEADER: str(latest.version)})
        return _state_response(state)

    @app.get("/v1/history", response_model=list[AuditEntry], tags=["read"], responses=_ERRORS)
    async def get_history(
        _who: Reader,
        since: Annotated[int, Query(ge=0, description="Entries of versions > since")] = 0,
        limit: Annotated[int, Query(ge=1, le=HISTORY_LIMIT_MAX)] = 100,
    ) -> Response:
        """Audit entries, oldest first."""
        entries = await store.history(since, limit)
        body = "[" + ",".join(e.model_dump_json() for e in entries) + "]"
        return Response(body, media_type="application/json")

    @app.get(
        "/v1/versions/{version}",
        response_model=DesiredState,
        tags=["read"],
        responses={**_ERRORS, 404: {"model": ErrorDetail}},
    )
    async def get_version(_who: Reader, version: Annotated[int, Path(ge=1)]) -> Response:
        """The state of one version."""
        state = await store.get(version)
        if state is None:
            raise HTTPException(404, f"unknown version {version}")
        return _state_response(state)

    # --- writes ----------------------------------------------------------------------

    write_kw: dict[str, Any] = {
        "response_model": WriteResult | DryRun,
        "tags": ["write"],
        "responses": _WRITE_ERRORS,
    }

    @app.put("/v1/split/{domain}", **write_kw)
    async def put_split(
        domain: str,
        body: SplitMap,
        ctx: Write,
    ) -> WriteResult | DryRun:
        """Replace a domain's split map (its ranges must tile [0, sharding))."""
        return await _write(SetSplit(domain=domain, split=body), ctx)

    @app.post("/v1/cutover/{domain}", **write_kw)
    async def cutover(
        domain: str,
        body: CutoverBody,
        ctx: Write,
    ) -> WriteResult | DryRun:
        """Move the whole range of a domain to one enabled zone."""
        return await _write(Cutover(domain=domain, to=body.to), ctx)

    @app.post("/v1/restore/{domain}", **write_kw)
    async def restore(
        domain: str,
        ctx: Write,
    ) -> WriteResult | DryRun:
        """Undo a cut-over (or go back to the topology file's split)."""
        return await _write(Restore(domain=domain), ctx)

    @app.post("/v1/zones/{zone}/{action}", **write_kw)
    async def zone_admin(
        zone: str,
        action: AdminAction,
        ctx: Write,
    ) -> WriteResult | DryRun:
        """Set a zone's admin state: enable, drain or disable."""
        change = SetZoneAdmin(zone=zone, state=_ACTION_STATE[action])
        return await _write(change, ctx)

    @app.post("/v1/pools/{pool}/backends/{backend}/{action}", **write_kw)
    async def backend_admin(
        pool: str,
        backend: str,
        action: AdminAction,
        ctx: Write,
    ) -> WriteResult | DryRun:
        """Set a backend's admin state: enable, drain or disable."""
        change = SetBackendAdmin(pool=pool, backend=backend, state=_ACTION_STATE[action])
        return await _write(change, ctx)

    @app.post("/v1/rollback", **write_kw)
    async def rollback(
        body: RollbackBody,
        ctx: Write,
    ) -> WriteResult | DryRun:
        """Make a new version with the content of an earlier one."""
        change = Rollback(to_version=body.to_version)
        return await _write(change, ctx)

    # The dashboard: mounted last, so /v1, /healthz and /docs match first.
    app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app


__all__ = [
    "LONG_POLL_DEFAULT",
    "LONG_POLL_MAX",
    "VERSION_HEADER",
    "WEB_DIR",
    "AdminAction",
    "CutoverBody",
    "ErrorDetail",
    "Health",
    "RollbackBody",
    "TokenEntry",
    "TokenTable",
    "WriteResult",
    "create_app",
    "hash_token",
    "load_tokens",
]
