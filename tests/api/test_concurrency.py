"""Versions stay exact under concurrent writers (REST and delta-sync push), on SQLite and
PostgreSQL: every change adds exactly one, whoever wins a race."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.api.conftest import Api
from tests.api.items import pull, push
from toolbridge_api.db.store import Store
from toolbridge_api.security import Principal
from toolbridge_common.contract import format_ms, parse_timestamp

pytestmark = pytest.mark.usefixtures("backend")

WRITERS = 8
T0_MS = 1_762_164_000_000


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_concurrent_if_match_writers_exactly_one_wins(api: Api, method: str) -> None:
    alice = await api.user()
    item = await alice.create("notes", {"winner": None})
    uid = item["uid"]
    responses = await asyncio.gather(
        *(
            alice.request(method, f"/v1/notes/{uid}", json={"winner": n}, headers={"If-Match": "1"})
            for n in range(WRITERS)
        )
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] + [412] * (WRITERS - 1)
    winner = next(r.json() for r in responses if r.status_code == 200)
    final = (await alice.request("GET", f"/v1/notes/{uid}")).json()
    assert final["version"] == 2
    assert final["payload"]["winner"] == winner["payload"]["winner"]


async def test_concurrent_unconditional_writers_each_add_exactly_one(api: Api) -> None:
    alice = await api.user()
    item = await alice.create("tasks", {})
    uid = item["uid"]
    responses = await asyncio.gather(
        *(alice.request("PATCH", f"/v1/tasks/{uid}", json={f"k{n}": n}) for n in range(WRITERS))
    )
    assert all(response.status_code == 200 for response in responses)
    versions = sorted(response.json()["version"] for response in responses)
    assert versions == list(range(2, WRITERS + 2))
    final = (await alice.request("GET", f"/v1/tasks/{uid}")).json()
    assert final["version"] == WRITERS + 1
    assert {k: final["payload"][k] for k in final["payload"] if k.startswith("k")} == {
        f"k{n}": n for n in range(WRITERS)
    }
    times = sorted(response.json()["updatedAt"] for response in responses)
    assert len(set(times)) == WRITERS, "every change has its own, later time"


async def test_concurrent_creates_with_one_client_uid(api: Api) -> None:
    """Offline clients retrying a create: one insert, then updates, versions 1..N."""
    alice = await api.user()
    uid = str(uuid.uuid4())
    responses = await asyncio.gather(
        *(alice.request("POST", "/v1/notes", json={"uid": uid, "n": n}) for n in range(WRITERS))
    )
    assert [response.status_code for response in responses] == [201] * WRITERS
    assert sorted(r.json()["version"] for r in responses) == list(range(1, WRITERS + 1))
    listed = (await alice.request("GET", "/v1/notes")).json()["items"]
    assert [(item["uid"], item["version"]) for item in listed] == [(uid, WRITERS)]


async def test_concurrent_pushes_of_one_uid(api: Api) -> None:
    """Each push carries its own time; whatever order they run in, an applied push adds
    exactly one to the version, a push older than the stored time changes nothing, and the
    newest one is what stays."""
    alice = await api.user()
    uid = str(uuid.uuid4())
    items = [{"uid": uid, "n": n, "updatedTs": str(T0_MS + n)} for n in range(WRITERS * 2)]
    order = items[1::2] + items[::2]
    acks = await asyncio.gather(*(push(alice, "notes", item) for item in order))
    applied = sorted(
        ack["version"]
        for (ack,), item in zip(acks, order, strict=True)
        if ack["updatedAt"] == _time(int(item["updatedTs"]))  # type: ignore[call-overload]
    )
    assert applied == list(range(1, len(applied) + 1)), "exactly +1 per applied push"
    page = await pull(alice, "notes")
    assert page["upserts"] == [items[-1]]
    got = (await alice.request("GET", f"/v1/notes/{uid}")).json()
    assert got["version"] == len(applied)
    for (ack,), item in zip(acks, order, strict=True):
        assert "error" not in ack
        assert ack["version"] <= got["version"]
        assert _ms(ack["updatedAt"]) >= int(item["updatedTs"])  # type: ignore[call-overload]


async def test_concurrent_pushes_of_the_same_new_item(api: Api) -> None:
    """The same item pushed by several requests at once (a client retrying): one insert,
    the others are duplicates (same time) and change nothing."""
    alice = await api.user()
    uid = str(uuid.uuid4())
    item = {"uid": uid, "updatedTs": str(T0_MS), "sync": {"version": 3}}
    acks = await asyncio.gather(*(push(alice, "tasks", item) for _ in range(WRITERS)))
    assert [ack for (ack,) in acks] == [{"uid": uid, "version": 3, "updatedAt": _time(T0_MS)}] * (
        WRITERS
    )


async def test_concurrent_pushes_and_rest_writes(api: Api) -> None:
    """REST writes take the server's time (monotonic), pushes their own: mixed, every
    applied change is exactly +1 and the versions seen are all distinct."""
    alice = await api.user()
    item = await alice.create("notes", {"n": -1})
    uid = item["uid"]
    # 2100-01-01: newer than any REST write of this test; pushes 1 s apart, so a REST write
    # after a push (one millisecond later) never lands on another push's time.
    future = 4_102_444_800_000
    work: list[Any] = []
    for n in range(WRITERS):
        work.append(alice.request("PATCH", f"/v1/notes/{uid}", json={"n": n}))
        work.append(
            alice.request(
                "POST",
                "/v1/sync/notes/push",
                json={"items": [{"uid": uid, "n": 100 + n, "updatedTs": str(future + 1000 * n)}]},
            )
        )
    responses = await asyncio.gather(*work)
    assert all(response.status_code == 200 for response in responses)
    rest = [r.json()["version"] for r in responses[::2]]
    pushed = [
        (r.json()[0]["version"], r.json()[0]["updatedAt"] == _time(future + 1000 * n))
        for n, r in enumerate(responses[1::2])
    ]
    applied = rest + [version for version, was_applied in pushed if was_applied]
    assert sorted(applied) == list(range(2, len(applied) + 2))
    final = (await alice.request("GET", f"/v1/notes/{uid}")).json()
    assert final["version"] == len(applied) + 1


def _time(ms: int) -> str:
    return format_ms(ms)


def _ms(text: str) -> int:
    ms = parse_timestamp(text)
    assert ms is not None
    return ms


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_users_writes_wait_for_her_write_in_flight(api: Api) -> None:
    """PostgreSQL: every write of a user holds that user's lock until it commits, so her
    writes run one after another (exact versions, parents checked still there at commit,
    server times committed in order); another user is not held up."""
    alice = await api.user()
    store: Store = api.app.state.store
    principal = Principal(alice.tenant_id, alice.user_id)
    async with store.engine.connect() as in_flight:
        transaction = await in_flight.begin()
        await Store.serialise_user(in_flight, principal)  # a write of alice's in flight
        late = asyncio.create_task(alice.create("notes", {"title": "second"}))
        pushed = asyncio.create_task(push(alice, "notes", {"uid": str(uuid.uuid4())}))
        done, _ = await asyncio.wait({late, pushed}, timeout=0.3)
        assert not done, "alice's writes did not wait for her write in flight"
        bob = await api.user("auth0|bob")
        await bob.create("notes", {"title": "another user is not held up"})
        await transaction.commit()
    await late
    await pushed
    listed = (await alice.request("GET", "/v1/notes")).json()["items"]
    assert len(listed) == 2
