"""No route ever shows or changes another tenant's or another user's items."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api, User
from toolbridge_api.entities import ENTITIES

pytestmark = pytest.mark.usefixtures("backend")


async def _attack(owner: User, attacker: User, entity: str, action: str) -> None:
    item = await owner.create(entity, {"owner": owner.user_id, "n": 1})
    uid = item["uid"]
    attacks: list[tuple[str, str, Any]] = [
        ("GET", f"/v1/{entity}/{uid}", None),
        ("GET", f"/v1/{entity}/{uid}?includeDeleted=true", None),
        ("PUT", f"/v1/{entity}/{uid}", {"stolen": True}),
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
    assert listed.json() == {"items": [], "nextCursor": None}
    state = (await attacker.http.get("/v1/sync/state", headers=attacker.headers)).json()
    assert state["entities"][entity]["count"] == 0
    wiped = await attacker.http.post("/v1/sync/wipe", headers=attacker.headers)
    assert wiped.json()["deleted"] == 0

    unchanged = await owner.request("GET", f"/v1/{entity}/{uid}")
    assert unchanged.status_code == 200
    assert unchanged.json() == item


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
    await alice.http.post("/v1/sync/wipe", headers=alice.headers)
    assert (await alice.request("GET", "/v1/notes")).status_code == 409
    assert (await alice_elsewhere.request("GET", "/v1/notes")).status_code == 200
    assert (await bob.request("GET", "/v1/notes")).status_code == 200
