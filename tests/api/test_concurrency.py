"""Versions stay exact under concurrent writers, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import insert

from tests.api.conftest import Api
from toolbridge_api.db.models import EntityRow
from toolbridge_api.db.store import Store, utcnow
from toolbridge_api.security import Principal

pytestmark = pytest.mark.usefixtures("backend")

WRITERS = 8


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
    assert final["payload"] == {f"k{n}": n for n in range(WRITERS)}


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_users_inserts_commit_in_list_order(api: Api) -> None:
    """PostgreSQL assigns ``seq`` at insert, not at commit: an insert must wait for the same
    user's insert in flight, or a client paging by ``seq`` could pass a row that commits
    later with a lower number."""
    alice = await api.user()
    store: Store = api.app.state.store
    principal = Principal(alice.tenant_id, alice.user_id)
    async with store.engine.connect() as in_flight:
        transaction = await in_flight.begin()
        await Store._serialise_inserts(in_flight, principal)  # an insert of alice's in flight
        late = asyncio.create_task(alice.create("notes", {"title": "second"}))
        done, _ = await asyncio.wait({late}, timeout=0.3)
        assert not done, "alice's insert did not wait for her insert in flight"
        bob = await api.user("auth0|bob")
        await bob.create("notes", {"title": "another user is not held up"})
        await in_flight.execute(
            insert(EntityRow).values(
                tenant_id=principal.tenant_id,
                user_id=principal.user_id,
                entity="notes",
                uid=str(uuid.uuid4()),
                version=1,
                payload={"title": "first"},
                created_at=utcnow(),
                updated_at=utcnow(),
            )
        )
        await transaction.commit()
    await late
    listed = (await alice.request("GET", "/v1/notes")).json()["items"]
    assert [item["payload"]["title"] for item in listed] == ["first", "second"]
