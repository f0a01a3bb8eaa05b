"""Leases (VRRP quorum mode): the pure table, then the routes through the FastAPI app."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.control.topo import TOPO
from zonegate.control import service
from zonegate.control.api import TokenEntry, TokenTable, create_app, hash_token
from zonegate.control.lease import MAX_TTL, Granted, HeldByOther, LeaseTable
from zonegate.control.store import MemoryStore

pytestmark = pytest.mark.timeout(30)

T0 = 500.0
AFTER_GUARD = T0 + MAX_TTL


def table() -> LeaseTable:
    return LeaseTable(started=T0)


# --- the table ------------------------------------------------------------------------


def test_grant_renew_expire():
    t = table()
    got = t.acquire("vip", "n1", 3.0, AFTER_GUARD)
    assert isinstance(got, Granted)
    assert got.lease.expires == AFTER_GUARD + 3
    assert t.acquire("vip", "n2", 3.0, AFTER_GUARD + 1) == HeldByOther("n1", AFTER_GUARD + 3)
    renewed = t.acquire("vip", "n1", 3.0, AFTER_GUARD + 2)
    assert renewed.lease.expires == AFTER_GUARD + 5
    assert isinstance(t.acquire("vip", "n2", 3.0, AFTER_GUARD + 5), Granted)  # expired


def test_release():
    t = table()
    t.acquire("vip", "n1", 3.0, AFTER_GUARD)
    assert t.release("vip", "n2", AFTER_GUARD) is None
    assert t.release("vip", "n1", AFTER_GUARD) is True
    assert t.release("vip", "n1", AFTER_GUARD) is False
    assert isinstance(t.acquire("vip", "n2", 3.0, AFTER_GUARD), Granted)


def test_names_are_independent():
    t = table()
    t.acquire("a", "n1", 3.0, AFTER_GUARD)
    assert isinstance(t.acquire("b", "n2", 3.0, AFTER_GUARD), Granted)


def test_restart_guard_refuses_new_holders_for_max_ttl():
    t = table()
    refused = t.acquire("vip", "n1", 3.0, T0 + 1)
    assert refused == HeldByOther(None, T0 + MAX_TTL)
    assert isinstance(t.acquire("vip", "n1", 3.0, T0 + MAX_TTL), Granted)


def test_restart_guard_lets_the_believed_holder_renew():
    t = table()
    got = t.acquire("vip", "n1", 3.0, T0 + 1, renew=True)
    assert isinstance(got, Granted)
    # Once granted, it is a normal lease: the others wait for it.
    assert t.acquire("vip", "n2", 3.0, T0 + 2, renew=True) == HeldByOther("n1", T0 + 4)


@pytest.mark.parametrize(
    ("name", "holder", "ttl"),
    [
        ("", "n1", 1.0),
        ("a/b", "n1", 1.0),
        ("vip", "", 1.0),
        ("vip", "n1", 0.0),
        ("vip", "n1", MAX_TTL + 1),
    ],
)
def test_bad_requests(name, holder, ttl):
    with pytest.raises(ValueError):  # noqa: PT011 - message varies
        table().acquire(name, holder, ttl, AFTER_GUARD)


@given(
    st.lists(
        st.tuples(st.sampled_from(["n1", "n2", "n3"]), st.floats(0, 3), st.booleans()),
        max_size=40,
    )
)
def test_property_at_most_one_holder_believes(requests):
    """Each node believes its lease lasts ttl from its request: beliefs never overlap."""
    t = table()
    now = T0
    believed: dict[str, float] = {}
    for holder, wait, release in requests:
        now += wait
        if release:
            t.release("vip", holder, now)
            believed.pop(holder, None)
            continue
        valid = believed.get(holder, 0) > now
        got = t.acquire("vip", holder, 2.0, now, renew=valid)
        if isinstance(got, Granted):
            believed[holder] = now + 2.0
        live = [h for h, until in believed.items() if until > now]
        assert len(live) <= 1, (live, now)


# --- the routes -----------------------------------------------------------------------

TOKENS = TokenTable(
    tokens=[
        TokenEntry(name="reader", role="read", sha256=hash_token("r-secret")),
        TokenEntry(name="vrrp", role="operator", sha256=hash_token("op-secret")),
    ]
)
OP = {"Authorization": "Bearer op-secret"}
READ = {"Authorization": "Bearer r-secret"}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def app_clock() -> AsyncIterator[tuple[httpx.AsyncClient, Clock, object]]:
    store = MemoryStore()
    state, audit = service.initial(TOPO, who="test", why="first", now=0.0)
    await store.append(state, audit, expected_version=0)
    app = create_app(TOPO, store, TOKENS, clock=lambda: 1234.5)
    clock = Clock()
    clock.now = app.state.leases.started + MAX_TTL  # past the restart guard
    app.state.lease_clock = clock
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://control") as c:
        yield c, clock, app


async def test_post_grants_then_409(app_clock):
    client, clock, _ = app_clock
    r = await client.post("/v1/leases/vrrp-lab-51", json={"holder": "n1", "ttl": 3}, headers=OP)
    assert r.status_code == 200
    assert r.json() == {"name": "vrrp-lab-51", "holder": "n1", "ttl": 3.0}
    r = await client.post("/v1/leases/vrrp-lab-51", json={"holder": "n2", "ttl": 3}, headers=OP)
    assert r.status_code == 409
    assert r.json()["holder"] == "n1"
    clock.now += 3.0
    r = await client.post("/v1/leases/vrrp-lab-51", json={"holder": "n2", "ttl": 3}, headers=OP)
    assert r.status_code == 200


async def test_delete_releases(app_clock):
    client, _, _ = app_clock
    await client.post("/v1/leases/v", json={"holder": "n1", "ttl": 3}, headers=OP)
    r = await client.delete("/v1/leases/v", params={"holder": "n2"}, headers=OP)
    assert r.status_code == 409
    r = await client.delete("/v1/leases/v", params={"holder": "n1"}, headers=OP)
    assert r.status_code == 200
    assert r.json()["released"] is True
    r = await client.post("/v1/leases/v", json={"holder": "n2", "ttl": 3}, headers=OP)
    assert r.status_code == 200


async def test_writes_need_an_operator_token(app_clock):
    client, _, _ = app_clock
    body = {"holder": "n1", "ttl": 3}
    assert (await client.post("/v1/leases/v", json=body)).status_code == 401
    assert (await client.post("/v1/leases/v", json=body, headers=READ)).status_code == 403
    r = await client.delete("/v1/leases/v", params={"holder": "n1"}, headers=READ)
    assert r.status_code == 403


async def test_bad_bodies_are_422(app_clock):
    client, _, _ = app_clock
    for body in ({"holder": "n1"}, {"holder": "", "ttl": 1}, {"holder": "n1", "ttl": 60}):
        r = await client.post("/v1/leases/v", json=body, headers=OP)
        assert r.status_code == 422, body
    r = await client.post("/v1/leases/v", json={"holder": "n1", "ttl": 1, "x": 1}, headers=OP)
    assert r.status_code == 422


async def test_restart_guard_through_the_api(app_clock):
    client, clock, app = app_clock
    clock.now = app.state.leases.started + 1
    r = await client.post("/v1/leases/v", json={"holder": "n1", "ttl": 3}, headers=OP)
    assert r.status_code == 409
    assert r.json()["holder"] is None
    r = await client.post(
        "/v1/leases/v", json={"holder": "n1", "ttl": 3, "renew": True}, headers=OP
    )
    assert r.status_code == 200
