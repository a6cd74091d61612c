"""No route ever shows or changes another tenant's or another user's items: REST, push and
pull alike (a uid is only an item's name within its owner's data)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api, User
from tests.api.items import create, pull, push
from toolbridge_api.entities import ENTITIES

pytestmark = pytest.mark.usefixtures("backend")


async def _attack(owner: User, attacker: User, entity: str, action: str) -> None:
    item = await create(owner, entity, owner=owner.user_id, n=1)
    uid = item["uid"]
    attacks: list[tuple[str, str, Any]] = [
        ("GET", f"/v1/{entity}/{uid}", None),
        ("GET", f"/v1/{entity}/{uid}?includeDeleted=true", None),
        ("PUT", f"/v1/{entity}/{uid}", {"stolen": True}),
        ("PATCH", f"/v1/{entity}/{uid}", {"stolen": True}),
        ("POST", f"/v1/{entity}/{uid}/archive", None),
        ("POST", f"/v1/{entity}/{uid}/process", {"action": action}),
        ("DELETE", f"/v1/{entity}/{uid}", None),
    ]
    for method, path, body in attacks:
        response = await attacker.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.status_code)
    if_match = await attacker.request(
        "PUT", f"/v1/{entity}/{uid}", json={"x": 1}, headers={"If-Match": "1"}
    )
    assert if_match.status_code == 404

    listed = await attacker.request("GET", f"/v1/{entity}", params={"includeDeleted": "true"})
    assert listed.json() == {"items": []}
    assert await pull(attacker, entity) == {"upserts": [], "deletes": []}

    # Pushing the owner's uid (even newer, even a tombstone) makes an item of the attacker's.
    stolen = {**item["payload"], "stolen": True, "updatedTs": "2100-01-01T00:00:00Z"}
    if entity == "comments":
        stolen["parentUid"] = (await attacker.create("notes", {}))["uid"]
    elif entity == "chat_messages":
        stolen["chatUid"] = (await attacker.create("chats", {}))["uid"]
    tombstone = {**stolen, "updatedTs": "2100-01-01T00:00:01Z", "sync": {"isDeleted": True}}
    acks = await push(attacker, entity, stolen, tombstone)
    assert [(ack["uid"], ack["version"], ack.get("error")) for ack in acks] == [
        (uid, 1, None),
        (uid, 2, None),
    ]
    # Another user's live item is no parent (the attacker's own item of that uid is deleted).
    if entity in ("notes", "chats"):
        child_entity, key = (
            ("comments", "parentUid") if entity == "notes" else ("chat_messages", "chatUid")
        )
        child = {key: uid, "parentType": "note"}
        refused = await attacker.request("POST", f"/v1/{child_entity}", json=child)
        assert refused.status_code == 404

    wiped = await attacker.http.post(
        "/v1/sync/wipe", json={"confirm": "WIPE"}, headers={**attacker.headers, **attacker.sync}
    )
    assert wiped.status_code == 200, wiped.text

    unchanged = await owner.request("GET", f"/v1/{entity}/{uid}")
    assert unchanged.status_code == 200
    assert unchanged.json() == item
    assert [i["uid"] for i in (await pull(owner, entity))["upserts"]][-1] == uid


def _cases() -> list[Any]:
    return [pytest.param(e.name, next(iter(e.actions)), id=e.name) for e in ENTITIES]


@pytest.mark.parametrize(("entity", "action"), _cases())
async def test_other_users_items_are_invisible_and_untouchable(
    api: Api, entity: str, action: str
) -> None:
    owner = await api.user("auth0|alice")
    attacker = await api.user("auth0|mallory")
    await _attack(owner, attacker, entity, action)


@pytest.mark.parametrize(("entity", "action"), _cases())
async def test_same_user_in_another_tenant_sees_nothing(api: Api, entity: str, action: str) -> None:
    owner = await api.user("auth0|alice", tenant_id="tenant-a")
    attacker = await api.user("auth0|alice", tenant_id="tenant-b")
    await _attack(owner, attacker, entity, action)


async def test_epochs_are_per_user_and_tenant(api: Api) -> None:
    alice = await api.user("auth0|alice", tenant_id="tenant-a")
    alice_elsewhere = await api.user("auth0|alice", tenant_id="tenant-b")
    bob = await api.user("auth0|bob", tenant_id="tenant-a")
    await alice.http.post(
        "/v1/sync/wipe", json={"confirm": "WIPE"}, headers={**alice.headers, **alice.sync}
    )
    await alice.start_session()
    stale = await alice.request("GET", "/v1/notes", headers={"X-Sync-Epoch": "1"})
    assert stale.status_code == 409
    assert (await alice.request("GET", "/v1/notes")).status_code == 200
    assert (await alice_elsewhere.request("GET", "/v1/notes")).status_code == 200
    assert (await bob.request("GET", "/v1/notes")).status_code == 200
