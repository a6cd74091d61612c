"""``Idempotency-Key``: a retried write gets the first result instead of writing again.

The MCP server sends a key with each write; a create whose answer was lost (a timeout) and
that is retried must not store a second item. Tests run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from tests.api.conftest import SQLITE_ONLY, Api, User
from toolbridge_api.db import store as store_module

KEY = "Idempotency-Key"


@pytest.fixture
async def alice(api: Api) -> User:
    return await api.user("auth0|alice")


def keyed(key: str) -> dict[str, str]:
    return {KEY: key}


async def items(user: User, entity: str = "notes") -> list[dict[str, Any]]:
    response = await user.request("GET", f"/v1/{entity}", params={"includeDeleted": "true"})
    assert response.status_code == 200, response.text
    listed: list[dict[str, Any]] = response.json()["items"]
    return listed


async def test_a_retried_create_returns_the_first_result_and_stores_one_item(
    alice: User,
) -> None:
    key = str(uuid.uuid4())
    first = await alice.request("POST", "/v1/notes", json={"title": "once"}, headers=keyed(key))
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    again = await alice.request("POST", "/v1/notes", json={"title": "once"}, headers=keyed(key))
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["ETag"] == first.headers["ETag"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert [item["uid"] for item in await items(alice)] == [first.json()["uid"]]


async def test_without_a_key_a_retried_create_makes_a_second_item(alice: User) -> None:
    """Why the key exists: the server chooses the uid, so a plain retry duplicates."""
    for _ in range(2):
        response = await alice.request("POST", "/v1/notes", json={"title": "twice"})
        assert response.status_code == 201
    assert len(await items(alice)) == 2


async def test_the_key_with_another_body_or_route_is_a_422(alice: User) -> None:
    key = "reused-key"
    first = await alice.request("POST", "/v1/notes", json={"title": "a"}, headers=keyed(key))
    assert first.status_code == 201
    for method, path, body in (
        ("POST", "/v1/notes", {"title": "b"}),
        ("POST", "/v1/tasks", {"title": "a"}),
        ("PATCH", f"/v1/notes/{first.json()['uid']}", {"title": "a"}),
    ):
        response = await alice.request(method, path, json=body, headers=keyed(key))
        assert response.status_code == 422, (method, path)
        error = response.json()["error"]
        assert error.startswith(f"Idempotency-Key {key} was already used for a different request")
    # The same JSON with its keys in another order and other spacing is the same request.
    same = await alice.request(
        "POST",
        "/v1/notes",
        content=b'{ "title" : "a" }',
        headers={**keyed(key), "Content-Type": "application/json"},
    )
    assert same.status_code == 201
    assert same.json() == first.json()
    assert len(await items(alice)) == 1
    assert len(await items(alice, "tasks")) == 0


async def test_keys_are_per_user_and_tenant(api: Api, alice: User) -> None:
    bob = await api.user("auth0|bob")
    alice_elsewhere = await api.user("auth0|alice", tenant_id="other")
    key = "shared-key"
    for user in (alice, bob, alice_elsewhere):
        response = await user.request("POST", "/v1/notes", json={"t": 1}, headers=keyed(key))
        assert response.status_code == 201
        assert "Idempotent-Replayed" not in response.headers
        assert len(await items(user)) == 1


async def test_every_rest_write_honours_the_key(alice: User) -> None:
    """A retried PATCH, process or archive does not add a version; a retried DELETE gets the
    first delete's 200 instead of a 410."""
    note = await alice.create("notes", {"title": "n"})
    uid = note["uid"]
    for method, path, body in (
        ("PUT", f"/v1/notes/{uid}", {"title": "put"}),
        ("PATCH", f"/v1/notes/{uid}", {"title": "patched"}),
        ("POST", f"/v1/notes/{uid}/process", {"action": "pin"}),
        ("POST", f"/v1/notes/{uid}/archive", None),
        ("DELETE", f"/v1/notes/{uid}", None),
    ):
        key = str(uuid.uuid4())
        first = await alice.request(method, path, json=body, headers=keyed(key))
        assert first.status_code == 200, (method, first.text)
        again = await alice.request(method, path, json=body, headers=keyed(key))
        assert (again.status_code, again.json()) == (200, first.json()), method
        assert again.headers["Idempotent-Replayed"] == "true"
    (stored,) = await items(alice)
    assert stored["version"] == 6, "one version per write, none for the retries"
    assert "deletedAt" in stored
    unkeyed = await alice.request("DELETE", f"/v1/notes/{uid}")
    assert unkeyed.status_code == 410, "without the key a second delete is still a 410"


async def test_a_refused_write_is_not_remembered(alice: User) -> None:
    """Only an applied write is remembered: after a 404 for a missing parent, the same
    request with the same key is tried again and succeeds once the parent exists."""
    chat_uid = str(uuid.uuid4())
    body = {"chatUid": chat_uid, "content": "hi"}
    refused = await alice.request("POST", "/v1/chat_messages", json=body, headers=keyed("m-1"))
    assert refused.status_code == 404
    await alice.create("chats", {"uid": chat_uid})
    created = await alice.request("POST", "/v1/chat_messages", json=body, headers=keyed("m-1"))
    assert created.status_code == 201, created.text
    assert "Idempotent-Replayed" not in created.headers


async def test_concurrent_requests_with_one_key_write_once(alice: User) -> None:
    """A retry that arrives while the first request still runs waits for it and gets its
    result (writes of one user take turns)."""
    responses = await asyncio.gather(
        *(
            alice.request("POST", "/v1/notes", json={"title": "race"}, headers=keyed("race"))
            for _ in range(8)
        )
    )
    assert {response.status_code for response in responses} == {201}
    assert len({response.json()["uid"] for response in responses}) == 1
    assert sum("Idempotent-Replayed" in response.headers for response in responses) == 7
    assert len(await items(alice)) == 1


async def test_a_key_expires(api: Api, alice: User, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the key's lifetime (24 h by default) the same request is a new write."""
    first = await alice.request("POST", "/v1/notes", json={"t": 1}, headers=keyed("k"))
    later = store_module.utcnow() + timedelta(hours=24, seconds=1)
    monkeypatch.setattr(store_module, "utcnow", lambda: later)
    second = await alice.request("POST", "/v1/notes", json={"t": 1}, headers=keyed("k"))
    assert second.status_code == 201
    assert "Idempotent-Replayed" not in second.headers
    assert second.json()["uid"] != first.json()["uid"]


async def test_expired_keys_are_purged(api: Api, alice: User) -> None:
    store = api.app.state.store
    await alice.request("POST", "/v1/notes", json={}, headers=keyed("old"))
    assert await store.purge_idempotency_keys() == 0, "a fresh key is kept"
    original: Callable[[], Any] = store_module.utcnow
    try:
        store_module.utcnow = lambda: original() + timedelta(days=2)
        assert await store.purge_idempotency_keys() == 1
    finally:
        store_module.utcnow = original


async def test_a_wipe_forgets_the_users_keys(alice: User) -> None:
    first = await alice.request("POST", "/v1/notes", json={}, headers=keyed("before-wipe"))
    wiped = await alice.http.post(
        "/v1/sync/wipe", json={"confirm": "WIPE"}, headers={**alice.headers, **alice.sync}
    )
    assert wiped.status_code == 200, wiped.text
    await alice.start_session()
    again = await alice.request("POST", "/v1/notes", json={}, headers=keyed("before-wipe"))
    assert again.status_code == 201
    assert "Idempotent-Replayed" not in again.headers, "not an item that no longer exists"
    assert again.json()["uid"] != first.json()["uid"]


@SQLITE_ONLY
@pytest.mark.parametrize("key", ["", " ", "x" * 256, "naïve", "tab\there"])
async def test_a_malformed_key_is_a_400(alice: User, key: str) -> None:
    headers = {KEY: key.encode()}
    response = await alice.request("POST", "/v1/notes", json={}, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"].startswith("Idempotency-Key must be 1-255 visible ASCII")
    assert await items(alice) == []


@SQLITE_ONLY
async def test_a_quoted_key_is_the_same_key(alice: User) -> None:
    """The IETF draft sends the key as a quoted string; its content is the key."""
    first = await alice.request("POST", "/v1/notes", json={}, headers=keyed('"abc"'))
    again = await alice.request("POST", "/v1/notes", json={}, headers=keyed("abc"))
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"


@SQLITE_ONLY
async def test_the_openapi_document_names_the_header_and_the_422(api: Api) -> None:
    schema = (await api.http.get("/openapi.json")).json()
    operation = schema["paths"]["/v1/notes"]["post"]
    assert "Idempotency-Key" in [p["name"] for p in operation["parameters"]]
    assert "422" in operation["responses"]
    assert "Validation Error" not in str(operation["responses"])
