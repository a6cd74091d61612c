"""Versions stay exact under concurrent writers, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from tests.api.conftest import Api

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
