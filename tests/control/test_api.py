"""The control API in process: create_app + MemoryStore behind httpx's ASGITransport."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.control.topo import API, IMG, TOPO, split
from zonegate.control import service
from zonegate.control.api import (
    VERSION_HEADER,
    TokenEntry,
    TokenTable,
    create_app,
    hash_token,
    load_tokens,
)
from zonegate.control.fleet import LbReport, ZoneReport
from zonegate.control.model import AuditEntry, DesiredState, SetSplit
from zonegate.control.store import MemoryStore

pytestmark = pytest.mark.timeout(30)

TOKENS = TokenTable(
    tokens=[
        TokenEntry(name="reader", role="read", sha256=hash_token("r-secret")),
        TokenEntry(name="alice", role="operator", sha256=hash_token("op-secret")),
    ]
)
READ = {"Authorization": "Bearer r-secret"}
OP = {"Authorization": "Bearer op-secret"}
WHY = {"reason": "test"}


async def _store() -> MemoryStore:
    store = MemoryStore()
    state, audit = service.initial(TOPO, who="test", why="first", now=0.0)
    await store.append(state, audit, expected_version=0)
    return store


def _client(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://control")


@pytest.fixture
async def store() -> MemoryStore:
    return await _store()


@pytest.fixture
async def client(store: MemoryStore) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(create_app(TOPO, store, TOKENS, clock=lambda: 1234.5)) as c:
        yield c


# --- reads and auth -----------------------------------------------------------------


async def test_healthz_needs_no_token(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "version": 1}


async def test_openapi_documents_every_endpoint(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert set(doc["paths"]) == {
        "/healthz",
        "/v1/state",
        "/v1/history",
        "/v1/versions/{version}",
        "/v1/split/{domain}",
        "/v1/cutover/{domain}",
        "/v1/restore/{domain}",
        "/v1/zones",
        "/v1/zones/{zone}/{action}",
        "/v1/pools/{pool}/backends/{backend}/{action}",
        "/v1/rollback",
        "/v1/leases/{name}",
    }
    assert {"DesiredState", "DryRun", "WriteResult", "AuditEntry", "SplitMap"} <= set(
        doc["components"]["schemas"]
    )
    assert (await client.get("/docs")).status_code == 200


async def test_state_with_read_token(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/state", headers=READ)
    assert r.status_code == 200
    assert r.headers[VERSION_HEADER] == "1"
    assert DesiredState.model_validate_json(r.content) == DesiredState.initial(TOPO)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}])
async def test_reads_need_a_valid_token_when_read_tokens_exist(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    for path in ("/v1/state", "/v1/history", "/v1/versions/1"):
        r = await client.get(path, headers=headers)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"


async def test_reads_are_anonymous_without_read_tokens(store: MemoryStore) -> None:
    ops_only = TokenTable(tokens=[t for t in TOKENS.tokens if t.role == "operator"])
    async with _client(create_app(TOPO, store, ops_only)) as c:
        assert (await c.get("/v1/state")).status_code == 200
        assert (await c.get("/v1/state", headers=READ)).status_code == 401  # unknown token


async def test_no_token_table_refuses_every_write(store: MemoryStore) -> None:
    async with _client(create_app(TOPO, store, None)) as c:
        assert (await c.get("/v1/state")).status_code == 200
        r = await c.post(f"/v1/restore/{API}", params=WHY, headers=OP)
        assert r.status_code == 401


async def test_versions_and_history(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/zones/shanghai/drain", params=WHY, headers=OP)
    assert r.status_code == 200
    v1 = await client.get("/v1/versions/1", headers=READ)
    assert v1.json()["zones"]["shanghai"] == "enabled"
    v2 = await client.get("/v1/versions/2", headers=READ)
    assert v2.json()["zones"]["shanghai"] == "drain"
    assert v2.headers[VERSION_HEADER] == "2"
    assert (await client.get("/v1/versions/3", headers=READ)).status_code == 404
    assert (await client.get("/v1/versions/0", headers=READ)).status_code == 422

    hist = (await client.get("/v1/history", headers=READ)).json()
    assert [e["version"] for e in hist] == [1, 2]
    entry = AuditEntry.model_validate(hist[1])
    assert (entry.who, entry.why, entry.at) == ("alice", "test", 1234.5)
    assert entry.diff == ["zone shanghai: enabled -> drain"]
    since = (await client.get("/v1/history", params={"since": 1}, headers=READ)).json()
    assert [e["version"] for e in since] == [2]
    one = (await client.get("/v1/history", params={"limit": 1}, headers=READ)).json()
    assert [e["version"] for e in one] == [1]
    for bad in ({"limit": 0}, {"limit": 100_000}, {"since": -1}):
        assert (await client.get("/v1/history", params=bad, headers=READ)).status_code == 422


# --- writes -------------------------------------------------------------------------


async def test_cutover_and_restore(client: httpx.AsyncClient, store: MemoryStore) -> None:
    r = await client.post(f"/v1/cutover/{API}", json={"to": "yanqing"}, params=WHY, headers=OP)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == 2
    assert "api.example.test: yanqing [50,100) -> [0,100)" in body["diff"]
    assert body["audit"]["who"] == "alice"
    assert body["audit"]["change"] == {"kind": "cutover", "domain": API, "to": "yanqing"}
    state = await store.latest()
    assert state is not None
    assert state.split[API].zones["yanqing"].upper - state.split[API].zones["yanqing"].lower == 100

    r = await client.post(f"/v1/restore/{API}", headers={**OP, "X-Reason": "back"})
    assert r.status_code == 200, r.text
    assert r.json()["audit"]["why"] == "back"
    state = await store.latest()
    assert state is not None
    assert state.split == TOPO.split


async def test_dry_run_writes_nothing(client: httpx.AsyncClient, store: MemoryStore) -> None:
    r = await client.post(
        f"/v1/cutover/{API}", json={"to": "yanqing"}, params={"dry_run": "true"}, headers=OP
    )
    assert r.status_code == 200, r.text
    dry = r.json()
    assert dry["version"] == 1
    assert dry["before"][API] == {"changping": 0.5, "yanqing": 0.5}
    assert dry["after"][API] == {"changping": 0.0, "yanqing": 1.0}
    assert dry["before"][IMG] == dry["after"][IMG]
    assert dry["diff"]
    latest = await store.latest()
    assert latest is not None
    assert latest.version == 1


async def test_dry_run_weighs_shares_by_reported_rates(store: MemoryStore) -> None:
    """With LB reports, a zone that carries 3x the requests per bucket weighs 3x."""
    reported = {
        "changping": ZoneReport("changping", lb=LbReport(reachable=True, at=1.0, rate=300.0)),
        "yanqing": ZoneReport("yanqing", lb=LbReport(reachable=True, at=1.0, rate=100.0)),
    }
    app = create_app(TOPO, store, TOKENS, reports=lambda: reported)
    async with _client(app) as c:
        r = await c.post(
            f"/v1/cutover/{API}", json={"to": "yanqing"}, params={"dry_run": "true"}, headers=OP
        )
        assert r.status_code == 200, r.text
        dry = r.json()
        assert dry["rates"] == {"changping": 300.0, "yanqing": 100.0}
        assert dry["before"][API] == {"changping": 0.75, "yanqing": 0.25}
        assert dry["after"][API] == {"changping": 0.0, "yanqing": 1.0}

        zones = (await c.get("/v1/zones", headers=READ)).json()
        assert zones["polled"] is True
        assert zones["zones"]["changping"]["lb"]["rate"] == 300.0
        assert zones["zones"]["yanqing"]["vip_owner"] is None


async def test_zones_without_a_poller(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/zones", headers=READ)
    assert r.json() == {"polled": False, "zones": {}}


async def test_dry_run_still_rejects(client: httpx.AsyncClient) -> None:
    r = await client.post(
        f"/v1/cutover/{API}", json={"to": "nowhere"}, params={"dry_run": "true"}, headers=OP
    )
    assert r.status_code == 404
    assert "nowhere" in r.json()["detail"]


async def test_writes_need_an_operator_token(client: httpx.AsyncClient) -> None:
    path = f"/v1/cutover/{API}"
    body = {"to": "yanqing"}
    r = await client.post(path, json=body, params=WHY)
    assert r.status_code == 401
    r = await client.post(path, json=body, params=WHY, headers={"Authorization": "Bearer x"})
    assert r.status_code == 401
    r = await client.post(path, json=body, params=WHY, headers=READ)
    assert r.status_code == 403
    assert "read-only" in r.json()["detail"]
    # a dry run is a write request too: it says what an operator could do
    r = await client.post(path, json=body, params={"dry_run": "true"}, headers=READ)
    assert r.status_code == 403


async def test_real_writes_need_a_reason(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/zones/shanghai/drain", headers=OP)
    assert r.status_code == 422
    assert "reason" in r.json()["detail"]
    r = await client.post("/v1/zones/shanghai/drain", params={"reason": "  "}, headers=OP)
    assert r.status_code == 422
    r = await client.post("/v1/zones/shanghai/drain", headers={**OP, "X-Reason": "maint"})
    assert r.status_code == 200


async def test_docs_write_table_names_the_reason(store: MemoryStore) -> None:
    """Issue 12 item 20: every write route of the API is in docs/control.md's endpoint
    table with its reason, and the text says both ways to give it."""
    doc = (Path(__file__).parents[2] / "docs" / "control.md").read_text()
    table = doc[doc.index("## Endpoints") : doc.index("### Long-poll")]
    assert "`?reason=WHY`" in table
    assert "`X-Reason: WHY`" in table
    rows = {line.split("`")[1] for line in table.splitlines() if line.startswith("| `")}
    app = create_app(TOPO, store, TOKENS)
    writes = [
        (method, route.path)  # type: ignore[attr-defined]
        for route in app.routes
        for method in getattr(route, "methods", set()) or set()
        if method in {"POST", "PUT", "DELETE", "PATCH"}
    ]
    assert writes
    for method, path in writes:
        wanted = f"{method} {path}"
        found = [r for r in rows if _same_route(r.partition("?")[0], wanted)]
        assert found, f"{wanted} is not in the docs/control.md endpoint table"
        assert all(r.endswith("?reason=WHY") for r in found), found


def _same_route(doc_row: str, route: str) -> bool:
    """`POST /v1/zones/{zone}/{enable,drain,disable}` covers `POST /v1/zones/{zone}/drain`
    and `POST /v1/zones/{zone}/{action}`."""
    a, b = doc_row.split("/"), route.split("/")
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x == y or (x.startswith("{") and y.startswith("{")):
            continue
        if x.startswith("{") and y in x.strip("{}").split(","):
            continue
        return False
    return True


async def test_split(client: httpx.AsyncClient) -> None:
    good = split(changping=(0, 30), yanqing=(30, 100)).model_dump()
    r = await client.put(f"/v1/split/{API}", json=good, params=WHY, headers=OP)
    assert r.status_code == 200, r.text
    assert r.json()["diff"] == [
        "api.example.test: changping [0,50) -> [0,30)",
        "api.example.test: yanqing [50,100) -> [30,100)",
    ]
    state = (await client.get("/v1/state", headers=READ)).json()
    assert state["split"][API] == good

    gap = split(changping=(0, 30), yanqing=(40, 100)).model_dump()
    r = await client.put(f"/v1/split/{API}", json=gap, params=WHY, headers=OP)
    assert r.status_code == 422
    assert isinstance(r.json()["detail"], str)
    r = await client.put(f"/v1/split/{API}", json={"zones": "x"}, params=WHY, headers=OP)
    assert r.status_code == 422  # body validation (FastAPI's list of errors)
    r = await client.put(f"/v1/split/{API}", json=good, params=WHY, headers=OP)
    assert r.status_code == 409  # no change
    assert r.json()["detail"].startswith("no change")


async def test_zone_admin(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/zones/yanqing/disable", params=WHY, headers=OP)
    assert r.json()["diff"] == ["zone yanqing: enabled -> disabled"]
    r = await client.post("/v1/zones/yanqing/disable", params=WHY, headers=OP)
    assert r.status_code == 409
    r = await client.post(f"/v1/cutover/{API}", json={"to": "yanqing"}, params=WHY, headers=OP)
    assert r.status_code == 409  # cut-over to a disabled zone
    assert (await client.post("/v1/zones/mars/drain", params=WHY, headers=OP)).status_code == 404
    r = await client.post("/v1/zones/yanqing/explode", params=WHY, headers=OP)
    assert r.status_code == 422
    r = await client.post("/v1/zones/yanqing/enable", params=WHY, headers=OP)
    assert r.json()["diff"] == ["zone yanqing: disabled -> enabled"]


async def test_backend_admin(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/pools/web-cp/backends/cp-1/drain", params=WHY, headers=OP)
    assert r.status_code == 200, r.text
    assert r.json()["diff"] == ["backend web-cp/cp-1: enabled -> drain"]
    r = await client.post("/v1/pools/web-cp/backends/nope/drain", params=WHY, headers=OP)
    assert r.status_code == 404
    r = await client.post("/v1/pools/nope/backends/cp-1/drain", params=WHY, headers=OP)
    assert r.status_code == 404


async def test_rollback(client: httpx.AsyncClient, store: MemoryStore) -> None:
    await client.post("/v1/zones/shanghai/drain", params=WHY, headers=OP)
    await client.post(f"/v1/cutover/{API}", json={"to": "yanqing"}, params=WHY, headers=OP)
    r = await client.post(
        "/v1/rollback", json={"to_version": 1}, params={"dry_run": "true"}, headers=OP
    )
    assert r.status_code == 200
    assert r.json()["after"][API] == {"changping": 0.5, "yanqing": 0.5}
    r = await client.post("/v1/rollback", json={"to_version": 1}, params=WHY, headers=OP)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 4
    latest = await store.latest()
    assert latest is not None
    assert latest.same_content(DesiredState.initial(TOPO))
    r = await client.post("/v1/rollback", json={"to_version": 4}, params=WHY, headers=OP)
    assert r.status_code == 409  # the current version
    r = await client.post("/v1/rollback", json={"to_version": 99}, params=WHY, headers=OP)
    assert r.status_code == 404
    r = await client.post("/v1/rollback", json={"to_version": 0}, params=WHY, headers=OP)
    assert r.status_code == 422


# --- long-poll ----------------------------------------------------------------------


async def test_long_poll_wakes_on_a_write(client: httpx.AsyncClient) -> None:
    poll = asyncio.create_task(
        client.get("/v1/state", params={"since": 1, "timeout": 10}, headers=READ)
    )
    await asyncio.sleep(0.05)
    assert not poll.done()
    w = await client.post("/v1/zones/shanghai/drain", params=WHY, headers=OP)
    assert w.status_code == 200
    r = await asyncio.wait_for(poll, 2)
    assert r.status_code == 200
    assert r.json()["version"] == 2
    assert r.headers[VERSION_HEADER] == "2"


async def test_long_poll_answers_at_once_when_newer(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/state", params={"since": 0, "timeout": 10}, headers=READ)
    assert r.status_code == 200
    assert r.json()["version"] == 1


async def test_long_poll_timeout_is_304(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/state", params={"since": 1, "timeout": 0.05}, headers=READ)
    assert r.status_code == 304
    assert r.headers[VERSION_HEADER] == "1"
    assert r.content == b""
    r = await client.get("/v1/state", params={"since": 1, "timeout": 61}, headers=READ)
    assert r.status_code == 422


# --- concurrency --------------------------------------------------------------------


class RacingStore(MemoryStore):
    """Another writer slips a version in before each of our first `races` appends."""

    def __init__(self, races: int) -> None:
        super().__init__()
        self.races = races

    async def append(
        self, state: DesiredState, audit: AuditEntry, *, expected_version: int
    ) -> None:
        if self.races > 0 and expected_version > 0:
            self.races -= 1
            latest = await self.latest()
            assert latest is not None
            k = 1 + latest.version
            other, other_audit = service.apply(
                latest,
                SetSplit(domain=API, split=split(changping=(0, k), yanqing=(k, 100))),
                topo=TOPO,
                who="other",
                why="race",
                now=0.0,
            )
            await super().append(other, other_audit, expected_version=latest.version)
        await super().append(state, audit, expected_version=expected_version)


async def _racing(races: int) -> RacingStore:
    store = RacingStore(races)
    state, audit = service.initial(TOPO, who="test", why="first", now=0.0)
    await store.append(state, audit, expected_version=0)
    return store


async def test_version_conflict_is_retried_once() -> None:
    store = await _racing(1)
    async with _client(create_app(TOPO, store, TOKENS)) as c:
        r = await c.post("/v1/zones/shanghai/drain", params=WHY, headers=OP)
        assert r.status_code == 200, r.text
        assert r.json()["version"] == 3  # the other writer got 2
        assert r.json()["audit"]["previous_version"] == 2


async def test_second_conflict_is_409() -> None:
    store = await _racing(2)
    async with _client(create_app(TOPO, store, TOKENS)) as c:
        r = await c.post("/v1/zones/shanghai/drain", params=WHY, headers=OP)
        assert r.status_code == 409
        assert "concurrent" in r.json()["detail"]


async def test_closed_store_is_503(store: MemoryStore) -> None:
    async with _client(create_app(TOPO, store, TOKENS)) as c:
        await store.close()
        r = await c.get("/v1/state", headers=READ)
        assert r.status_code == 503


# --- tokens -------------------------------------------------------------------------


def test_hash_token() -> None:
    assert hash_token("abc") == ("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


def test_load_tokens_yaml_and_json(tmp_path) -> None:
    y = tmp_path / "t.yaml"
    y.write_text(
        f"tokens:\n  - name: ops\n    role: operator\n    sha256: {hash_token('x').upper()}\n"
    )
    table = load_tokens(y)
    assert table.lookup("x") is not None
    assert table.lookup("x").name == "ops"
    assert table.lookup("y") is None
    j = tmp_path / "t.json"
    j.write_text(json.dumps({"tokens": [{"name": "r", "role": "read", "sha256": hash_token("z")}]}))
    assert load_tokens(j).tokens[0].role == "read"


@pytest.mark.parametrize(
    "text",
    [
        "tokens: [{name: a, role: admin, sha256: " + "0" * 64 + "}]",
        "tokens: [{name: a, role: read, sha256: abc}]",
        "tokens: [{name: a, role: read, sha256: " + "0" * 64 + ", token: plain}]",
        "tokens: [{name: a, role: read, sha256: " + "0" * 64 + "},"
        " {name: a, role: read, sha256: " + "1" * 64 + "}]",
        "tokens: [",
    ],
)
def test_load_tokens_rejects(tmp_path, text: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ValueError, match=r"bad\.yaml"):
        load_tokens(f)
