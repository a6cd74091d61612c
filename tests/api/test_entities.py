"""The entity REST routes on SQLite and PostgreSQL: every route and status, with the original
Go API's semantics (docs/adr/0004-original-contract.md lists where we differ on purpose)."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.api.conftest import SQLITE_ONLY, Api, User
from tests.api.items import create, go_cursor, new_uid, push, valid_payload
from toolbridge_api.db import store as store_module
from toolbridge_api.entities import ENTITIES, ENTITY_NAMES
from toolbridge_api.errors import ApiError
from toolbridge_api.routes.entities import parse_if_match

pytestmark = pytest.mark.usefixtures("backend")

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,3})?Z$")


@pytest.fixture
async def alice(api: Api) -> User:
    return await api.user("auth0|alice")


def _stamp(item: dict[str, Any], *, deleted: bool = False) -> None:
    """The sync metadata a REST write puts into the payload, as the original does."""
    payload = item["payload"]
    assert payload["uid"] == item["uid"]
    assert payload["updatedTs"] == item["updatedAt"]
    expected: dict[str, Any] = {"version": item["version"], "isDeleted": deleted}
    if deleted:
        expected["deletedAt"] = item["deletedAt"]
    assert payload["sync"] == expected


async def test_create_get_list_roundtrip(alice: User) -> None:
    created = await alice.create("notes", {"title": "first", "tags": ["a"]})
    assert list(created) == ["uid", "version", "updatedAt", "payload"], "no deletedAt key"
    assert created["version"] == 1
    assert TIME.match(created["updatedAt"])
    uuid.UUID(created["uid"])
    assert {k: created["payload"][k] for k in ("title", "tags")} == {
        "title": "first",
        "tags": ["a"],
    }
    _stamp(created)

    got = await alice.request("GET", f"/v1/notes/{created['uid']}")
    assert got.status_code == 200
    assert got.json() == created
    assert got.headers["etag"] == '"1"'

    listed = (await alice.request("GET", "/v1/notes")).json()
    assert listed["items"] == [created]
    assert listed["nextCursor"] == go_cursor(_ms(created["updatedAt"]), created["uid"])


def _ms(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


@pytest.mark.parametrize("entity", ENTITY_NAMES)
async def test_every_entity_has_the_full_route_set(alice: User, entity: str) -> None:
    item = await create(alice, entity, n=1)
    uid = item["uid"]
    body = {**item["payload"], "n": 2, "x": True}
    put = await alice.request("PUT", f"/v1/{entity}/{uid}", json=body)
    assert (put.status_code, put.json()["version"]) == (200, 2), put.text
    patch = await alice.request("PATCH", f"/v1/{entity}/{uid}", json={"x": None, "y": 3})
    assert (patch.json()["payload"]["x"], patch.json()["payload"]["y"]) == (None, 3)
    archived = await alice.request("POST", f"/v1/{entity}/{uid}/archive")
    assert archived.json()["version"] == 4
    _stamp(archived.json())
    deleted = await alice.request("DELETE", f"/v1/{entity}/{uid}")
    assert deleted.status_code == 200
    assert deleted.json()["version"] == 5
    assert TIME.match(deleted.json()["deletedAt"])
    assert deleted.json()["deletedAt"] == deleted.json()["updatedAt"]
    _stamp(deleted.json(), deleted=True)
    gone = await alice.request("GET", f"/v1/{entity}/{uid}")
    assert gone.status_code == 410
    assert gone.json()["deletedAt"] == deleted.json()["deletedAt"]


ARCHIVE_EFFECTS: dict[str, dict[str, Any]] = {
    "notes": {"status": "archived"},
    "tasks": {"status": "archived"},
    "comments": {"status": "archived"},
    "chats": {"archived": True},
    "chat_messages": {"archived": True},
    "task_lists": {"archived": True},
    "task_list_categories": {"archived": True},
}

PROCESS_EFFECTS: dict[tuple[str, str], dict[str, Any]] = {
    ("notes", "pin"): {"pinned": True},
    ("notes", "unpin"): {"pinned": False},
    ("notes", "archive"): {"status": "archived"},
    ("notes", "unarchive"): {"status": "active"},
    ("tasks", "start"): {"status": "in_progress"},
    ("tasks", "complete"): {"status": "completed"},
    ("tasks", "reopen"): {"status": "open"},
    ("comments", "resolve"): {"status": "resolved"},
    ("comments", "reopen"): {"status": "open"},
    ("chats", "resolve"): {"status": "resolved"},
    ("chats", "reopen"): {"status": "active"},
    ("chat_messages", "mark_read"): {"read": True},
    ("chat_messages", "mark_delivered"): {"delivered": True},
    ("task_lists", "unarchive"): {"archived": False},
    ("task_list_categories", "unarchive"): {"archived": False},
}
"""The original's effects (Go handlers at 48d7d10, task lists at its newest commit), written
out here rather than read from the contract, so a wrong contract fails this test."""


@pytest.mark.parametrize("entity", ENTITY_NAMES)
async def test_archive_writes_the_originals_value(alice: User, entity: str) -> None:
    item = await create(alice, entity, title="t", status="whatever", archived=False)
    response = await alice.request("POST", f"/v1/{entity}/{item['uid']}/archive")
    assert response.status_code == 200, response.text
    payload = response.json()["payload"]
    for key, value in ARCHIVE_EFFECTS[entity].items():
        assert payload[key] == value
    untouched = {"status", "archived"} - set(ARCHIVE_EFFECTS[entity])
    for key in untouched:
        assert payload[key] == item["payload"][key]
    assert payload["title"] == "t"


def _action_cases() -> list[Any]:
    return [
        pytest.param(entity.name, action, id=f"{entity.name}-{action}")
        for entity in ENTITIES
        for action in entity.actions
    ]


@SQLITE_ONLY
@pytest.mark.parametrize(("entity", "action"), _action_cases())
async def test_process_applies_each_action(alice: User, entity: str, action: str) -> None:
    item = await create(alice, entity, title="t", completedAt="kept")
    response = await alice.request(
        "POST",
        f"/v1/{entity}/{item['uid']}/process",
        json={"action": action, "metadata": {"by": "test"}},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == 2
    payload = body["payload"]
    assert payload["title"] == "t"
    assert payload["completedAt"] == "kept", "no timestamps are written or removed"
    assert payload["lastAction"] == action
    assert payload["lastActionMetadata"] == {"by": "test"}
    for key, expected in PROCESS_EFFECTS[(entity, action)].items():
        assert payload[key] == expected
    _stamp(body)


def test_expected_effects_cover_every_declared_action() -> None:
    declared = {(entity.name, action) for entity in ENTITIES for action in entity.actions}
    assert declared == set(PROCESS_EFFECTS)
    assert set(ARCHIVE_EFFECTS) == set(ENTITY_NAMES)


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("entity", "action", "message"),
    [
        ("tasks", "pin", "invalid action: pin (valid actions for tasks: start, complete, reopen)"),
        ("notes", "", "invalid action:  (valid actions for notes: pin, unpin, archive, unarchive)"),
        ("task_lists", "archive", "unknown action: archive (valid actions for task_lists:"),
        ("task_list_categories", "x", "unknown action: x (valid actions for task_list_categories"),
    ],
)
async def test_unknown_action_is_400_listing_valid_ones(
    alice: User, entity: str, action: str, message: str
) -> None:
    item = await create(alice, entity, title="t")
    response = await alice.request(
        "POST", f"/v1/{entity}/{item['uid']}/process", json={"action": action}
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)
    unchanged = await alice.request("GET", f"/v1/{entity}/{item['uid']}")
    assert unchanged.json()["version"] == 1


@SQLITE_ONLY
async def test_process_checks_body_and_item_in_the_originals_order(alice: User) -> None:
    """The five original entities read the body first; task lists and categories look the
    item up first (as the Go handlers do)."""
    missing = uuid.uuid4()
    bad = {"content": b"{", "headers": {"Content-Type": "application/json"}}
    note = await alice.request("POST", f"/v1/notes/{missing}/process", **bad)
    assert note.status_code == 400
    for entity in ("task_lists", "task_list_categories"):
        listed = await alice.request("POST", f"/v1/{entity}/{missing}/process", **bad)
        assert listed.status_code == 404, listed.text
        item = await alice.create(entity, {"title": "t"})
        await alice.request("DELETE", f"/v1/{entity}/{item['uid']}")
        gone = await alice.request("POST", f"/v1/{entity}/{item['uid']}/process", **bad)
        assert gone.status_code == 410


@SQLITE_ONLY
async def test_process_without_metadata_drops_previous_metadata(alice: User) -> None:
    item = await alice.create("notes", {})
    uid = item["uid"]
    await alice.request("POST", f"/v1/notes/{uid}/process", json={"action": "pin", "metadata": {}})
    response = await alice.request("POST", f"/v1/notes/{uid}/process", json={"action": "unpin"})
    assert "lastActionMetadata" not in response.json()["payload"]


async def test_pagination_walks_every_item_once_until_an_empty_page(alice: User) -> None:
    created = [(await alice.create("tasks", {"i": i}))["uid"] for i in range(7)]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        response = await alice.request("GET", "/v1/tasks", params=params)
        assert response.status_code == 200
        body = response.json()
        pages += 1
        if not body["items"]:
            assert "nextCursor" not in body, "an empty page has no nextCursor (the end)"
            break
        assert len(body["items"]) <= 3
        seen += [item["uid"] for item in body["items"]]
        last = body["items"][-1]
        assert body["nextCursor"] == go_cursor(_ms(last["updatedAt"]), last["uid"])
        cursor = body["nextCursor"]
    assert seen == created
    assert pages == 4


async def test_list_is_in_updated_time_order(alice: User) -> None:
    """An item changed later moves to the end; equal times order by uid."""
    first = await alice.create("notes", {"n": 1})
    second = await alice.create("notes", {"n": 2})
    await alice.request("PATCH", f"/v1/notes/{first['uid']}", json={"n": 10})
    listed = (await alice.request("GET", "/v1/notes")).json()["items"]
    assert [item["uid"] for item in listed] == [second["uid"], first["uid"]]

    same = "2025-11-03T10:00:00Z"
    uids = sorted(new_uid() for _ in range(3))
    await push(alice, "tasks", *({"uid": uid, "updatedTs": same} for uid in reversed(uids)))
    tasks = (await alice.request("GET", "/v1/tasks")).json()["items"]
    assert [item["uid"] for item in tasks] == uids


async def test_a_cursor_of_the_go_api_resumes_here(alice: User) -> None:
    uids = sorted(new_uid() for _ in range(4))
    times = ["2025-11-03T10:00:00Z", "2025-11-03T10:00:00Z", "2025-11-03T10:00:01Z"]
    await push(
        alice,
        "notes",
        {"uid": uids[0], "updatedTs": times[0]},
        {"uid": uids[1], "updatedTs": times[1]},
        {"uid": uids[2], "updatedTs": times[2]},
        {"uid": uids[3], "updatedTs": times[2]},
    )
    cursor = go_cursor(1762164000000, uids[0])
    listed = await alice.request("GET", "/v1/notes", params={"cursor": cursor})
    assert [item["uid"] for item in listed.json()["items"]] == uids[1:]
    pulled = await alice.request("GET", "/v1/sync/notes/pull", params={"cursor": cursor})
    assert [item["uid"] for item in pulled.json()["upserts"]] == uids[1:]
    # A position between rows: after (10:00:00.500, any uid) come the 10:00:01 rows.
    between = go_cursor(1762164000500, "00000000-0000-0000-0000-000000000000")
    rest = await alice.request("GET", "/v1/notes", params={"cursor": between})
    assert [item["uid"] for item in rest.json()["items"]] == uids[2:]


async def test_pagination_survives_deletes_between_pages(alice: User) -> None:
    uids = [(await alice.create("notes", {"i": i}))["uid"] for i in range(4)]
    first = (await alice.request("GET", "/v1/notes", params={"limit": 2})).json()
    await alice.request("DELETE", f"/v1/notes/{uids[3]}")
    rest = await alice.request("GET", "/v1/notes", params={"cursor": first["nextCursor"]})
    assert [item["uid"] for item in rest.json()["items"]] == [uids[2]]


async def test_limit_defaults_to_500_and_is_clamped_to_1000(alice: User) -> None:
    items = [{"uid": new_uid(), "updatedTs": str(1_700_000_000_000 + i)} for i in range(1001)]
    acks = await push(alice, "notes", *items)
    assert all("error" not in ack for ack in acks)
    assert len((await alice.request("GET", "/v1/notes")).json()["items"]) == 500
    for big in (1000, 1001, 10**30):
        page = await alice.request("GET", "/v1/notes", params={"limit": big})
        assert page.status_code == 200
        assert len(page.json()["items"]) == 1000
    pulled = await alice.request("GET", "/v1/sync/notes/pull", params={"limit": 5000})
    assert len(pulled.json()["upserts"]) == 1000
    assert len((await alice.request("GET", "/v1/sync/notes/pull")).json()["upserts"]) == 500


@SQLITE_ONLY
@pytest.mark.parametrize("path", ["/v1/notes", "/v1/sync/notes/pull"])
async def test_limit_that_is_not_positive_is_400(alice: User, path: str) -> None:
    for bad in ("0", "-1", "ten", ""):
        response = await alice.request("GET", path, params={"limit": bad})
        assert response.status_code == 400, bad
        assert "limit" in response.json()["error"]


@SQLITE_ONLY
@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "czo=",
        "czotMQ",
        "!!!",
        go_cursor(5, new_uid()) + "=",  # padded: the Go codec refuses padding too
        "MTIzfG5vdC1hLXV1aWQ",  # "123|not-a-uuid"
        "eHx" + "0" * 10,
        "MTIz",  # "123": no uid
    ],
)
async def test_bad_cursor_is_400(alice: User, cursor: str) -> None:
    for path in ("/v1/notes", "/v1/sync/notes/pull"):
        response = await alice.request("GET", path, params={"cursor": cursor})
        assert response.status_code == 400, (path, cursor)
        assert "cursor" in response.json()["error"]


async def test_include_deleted_shows_soft_deleted_items(alice: User) -> None:
    keep = await alice.create("chats", {"k": 1})
    gone = await alice.create("chats", {"k": 2})
    deleted = (await alice.request("DELETE", f"/v1/chats/{gone['uid']}")).json()
    live = (await alice.request("GET", "/v1/chats")).json()["items"]
    assert [item["uid"] for item in live] == [keep["uid"]]
    everything = (
        await alice.request("GET", "/v1/chats", params={"includeDeleted": "true"})
    ).json()["items"]
    assert [item["uid"] for item in everything] == [keep["uid"], gone["uid"]]
    assert everything[1] == deleted
    assert "deletedAt" not in everything[0]
    single = await alice.request(
        "GET", f"/v1/chats/{gone['uid']}", params={"includeDeleted": "true"}
    )
    assert single.status_code == 200
    assert single.json() == deleted
    explicit = await alice.request("GET", "/v1/chats", params={"includeDeleted": "false"})
    assert explicit.json()["items"] == live


@SQLITE_ONLY
@pytest.mark.parametrize("value", ["1", "True", "yes", ""])
async def test_include_deleted_must_be_true_or_false(alice: User, value: str) -> None:
    response = await alice.request("GET", "/v1/chats", params={"includeDeleted": value})
    assert response.status_code == 400
    assert "includeDeleted" in response.json()["error"]


async def test_changes_to_a_deleted_item_are_410(alice: User) -> None:
    item = await create(alice, "comments", a=1)
    uid = item["uid"]
    deleted = (await alice.request("DELETE", f"/v1/comments/{uid}")).json()
    for method, path, body in (
        ("GET", f"/v1/comments/{uid}", None),
        ("PUT", f"/v1/comments/{uid}", item["payload"]),
        ("PATCH", f"/v1/comments/{uid}", {"a": 2}),
        ("DELETE", f"/v1/comments/{uid}", None),
        ("POST", f"/v1/comments/{uid}/archive", None),
        ("POST", f"/v1/comments/{uid}/process", {"action": "resolve"}),
    ):
        response = await alice.request(method, path, json=body)
        assert response.status_code == 410, (method, path)
        assert response.json()["deletedAt"] == deleted["deletedAt"]
        wording = "already deleted" if method == "DELETE" else "deleted"
        assert response.json()["error"].startswith(f"comment {wording}: {uid}")
    final = await alice.request("GET", f"/v1/comments/{uid}", params={"includeDeleted": "true"})
    assert final.json() == deleted


async def test_unknown_uid_is_404_on_every_route(alice: User) -> None:
    uid = uuid.uuid4()
    for method, path, body in (
        ("GET", f"/v1/notes/{uid}", None),
        ("PUT", f"/v1/notes/{uid}", {}),
        ("PATCH", f"/v1/notes/{uid}", {}),
        ("DELETE", f"/v1/notes/{uid}", None),
        ("POST", f"/v1/notes/{uid}/archive", None),
        ("POST", f"/v1/notes/{uid}/process", {"action": "pin"}),
    ):
        response = await alice.request(method, path, json=body)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"] == f"note not found: {uid}"
    messages = await alice.request("GET", f"/v1/chat_messages/{uid}")
    assert messages.json()["error"] == f"chat message not found: {uid}"


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
async def test_if_match_mismatch_is_412_and_changes_nothing(alice: User, method: str) -> None:
    item = await alice.create("notes", {"v": 1})
    uid = item["uid"]
    body = None if method == "DELETE" else {"v": 2}
    stale = await alice.request(method, f"/v1/notes/{uid}", json=body, headers={"If-Match": "7"})
    assert stale.status_code == 412
    assert stale.json()["version"] == 1
    assert "If-Match is 7" in stale.json()["error"]
    current = await alice.request("GET", f"/v1/notes/{uid}")
    assert current.json() == item
    for n, value in enumerate(("1", '"2"', 'W/"3"'), start=1):
        matching = await alice.request(
            method, f"/v1/notes/{uid}", json=body, headers={"If-Match": value}
        )
        assert matching.status_code == 200
        assert matching.json()["version"] == n + 1
        if method == "DELETE":
            break


@SQLITE_ONLY
async def test_if_match_must_be_a_version(alice: User) -> None:
    item = await alice.create("notes", {})
    response = await alice.request(
        "PUT", f"/v1/notes/{item['uid']}", json={}, headers={"If-Match": "abc"}
    )
    assert response.status_code == 400
    assert "if-match" in response.json()["error"].lower()


@SQLITE_ONLY
async def test_if_match_star_matches_any_version_of_a_live_item(alice: User) -> None:
    item = await alice.create("notes", {"v": 1})
    uid = item["uid"]
    await alice.request("PATCH", f"/v1/notes/{uid}", json={"v": 2})
    star = {"If-Match": "*"}
    replaced = await alice.request("PUT", f"/v1/notes/{uid}", json={"v": 3}, headers=star)
    assert (replaced.status_code, replaced.json()["version"]) == (200, 3)
    deleted = await alice.request("DELETE", f"/v1/notes/{uid}", headers=star)
    assert (deleted.status_code, deleted.json()["version"]) == (200, 4)
    again = await alice.request("PATCH", f"/v1/notes/{uid}", json={}, headers=star)
    assert again.status_code == 410
    missing = await alice.request("PUT", f"/v1/notes/{uuid.uuid4()}", json={}, headers=star)
    assert missing.status_code == 404


async def test_patch_is_a_shallow_merge(alice: User) -> None:
    item = await alice.create("notes", {"a": {"b": 1, "c": 2}, "d": [1, 2], "e": "keep"})
    response = await alice.request(
        "PATCH",
        f"/v1/notes/{item['uid']}",
        json={
            "a": {"x": 9},
            "d": None,
            "uid": str(uuid.uuid4()),
            "sync": {"version": 99, "isDeleted": True},
        },
    )
    body = response.json()
    assert body["version"] == 2
    payload = body["payload"]
    assert payload["a"] == {"x": 9}, "nested objects are replaced, not merged"
    assert payload["d"] is None, "null is stored as null"
    assert payload["e"] == "keep"
    _stamp(body)


async def test_empty_patch_changes_nothing(alice: User) -> None:
    item = await alice.create("notes", {"a": 1})
    patches: tuple[dict[str, Any], ...] = ({}, {"uid": str(uuid.uuid4())}, {"sync": {}})
    for patch in patches:
        response = await alice.request("PATCH", f"/v1/notes/{item['uid']}", json=patch)
        assert response.status_code == 200
        assert response.json() == item
    stale = await alice.request(
        "PATCH", f"/v1/notes/{item['uid']}", json={}, headers={"If-Match": "5"}
    )
    assert stale.status_code == 412


async def test_put_replaces_the_payload_and_keeps_the_url_uid(alice: User) -> None:
    item = await alice.create("notes", {"a": 1, "b": 2})
    other = str(uuid.uuid4())
    response = await alice.request(
        "PUT",
        f"/v1/notes/{item['uid']}",
        json={"a": 3, "uid": other, "updatedTs": "1999-01-01T00:00:00Z", "sync": {"version": 9}},
    )
    body = response.json()
    assert "b" not in body["payload"]
    assert body["payload"]["a"] == 3
    assert body["version"] == 2
    _stamp(body)
    assert (await alice.request("GET", f"/v1/notes/{other}")).status_code == 404


async def test_create_keeps_a_client_uid_and_updates_an_existing_one(alice: User) -> None:
    chosen = str(uuid.uuid4())
    created = await alice.create("notes", {"uid": chosen.upper(), "title": "mine"})
    assert created["uid"] == chosen
    assert created["payload"]["uid"] == chosen.upper(), "the client's spelling is kept"
    assert created["version"] == 1

    again = await alice.request("POST", "/v1/notes", json={"uid": chosen, "title": "again"})
    assert again.status_code == 201
    assert (again.json()["version"], again.json()["payload"]["title"]) == (2, "again")
    assert again.json()["payload"]["uid"] == chosen

    await alice.request("DELETE", f"/v1/notes/{chosen}")
    revived = await alice.request("POST", "/v1/notes", json={"uid": chosen, "title": "back"})
    assert revived.status_code == 201
    assert revived.json()["version"] == 4
    assert "deletedAt" not in revived.json()
    assert (await alice.request("GET", f"/v1/notes/{chosen}")).json() == revived.json()


@SQLITE_ONLY
@pytest.mark.parametrize("uid", ["not-a-uuid", 5, True, ["x"]])
async def test_create_with_a_uid_that_is_no_uuid_is_400(alice: User, uid: Any) -> None:
    response = await alice.request("POST", "/v1/notes", json={"uid": uid})
    assert response.status_code == 400
    assert "uid must be a UUID" in response.json()["error"]
    assert (await alice.request("GET", "/v1/notes")).json()["items"] == []


async def test_mutation_times_are_monotonic(alice: User, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write in the same millisecond as the previous one (or with the clock set back) is
    one millisecond later, so every change moves the item forward in sync order."""
    monkeypatch.setattr(store_module, "now_ms", lambda: 1_762_164_000_000)
    item = await alice.create("notes", {})
    assert item["updatedAt"] == "2025-11-03T10:00:00Z"
    patched = await alice.request("PATCH", f"/v1/notes/{item['uid']}", json={"a": 1})
    assert patched.json()["updatedAt"] == "2025-11-03T10:00:00.001Z"
    monkeypatch.setattr(store_module, "now_ms", lambda: 1_000)
    deleted = await alice.request("DELETE", f"/v1/notes/{item['uid']}")
    assert deleted.json()["updatedAt"] == "2025-11-03T10:00:00.002Z"
    assert deleted.json()["deletedAt"] == "2025-11-03T10:00:00.002Z"


async def test_comment_and_message_parents_must_be_live(alice: User) -> None:
    note = await alice.create("notes", {})
    task = await alice.create("tasks", {})
    chat = await alice.create("chats", {})
    for parent_type, parent in (("note", note), ("task", task), ("chat", chat)):
        ok = await alice.request(
            "POST",
            "/v1/comments",
            json={"content": "c", "parentType": parent_type, "parentUid": parent["uid"]},
        )
        assert ok.status_code == 201, ok.text
    message = await alice.create("chat_messages", {"chatUid": chat["uid"].upper()})
    missing = str(uuid.uuid4())
    # A parent that is not there is a 404 naming it (ADR 0004); a malformed reference a 400.
    for entity, body, wording in (
        ("comments", {"parentType": "note", "parentUid": missing}, f"note not found: {missing}"),
        ("comments", {"parentType": "task", "parentUid": note["uid"]}, "task not found"),
        ("chat_messages", {"chatUid": missing}, f"chat not found: {missing}"),
    ):
        response = await alice.request("POST", f"/v1/{entity}", json=body)
        assert response.status_code == 404, (entity, body)
        error = response.json()
        assert error["error"].startswith(f"parent {wording}")
        parent_type = body.get("parentType", "chat")
        parent_uid = body.get("parentUid") or body["chatUid"]
        assert error["parent"] == {"type": parent_type, "uid": parent_uid}
    for entity, body, wording in (
        ("comments", {"parentType": "user", "parentUid": note["uid"]}, "invalid parent_type"),
        ("comments", {"parentUid": note["uid"]}, "missing parentType"),
        ("comments", {"parentType": "note"}, "missing parentUid"),
        ("comments", {"parentType": "note", "parentUid": "x"}, "invalid parentUid"),
        ("chat_messages", {}, "missing chatUid"),
        ("chat_messages", {"chatUid": "nope"}, "invalid chatUid: nope"),
    ):
        response = await alice.request("POST", f"/v1/{entity}", json=body)
        assert response.status_code == 400, (entity, body)
        assert wording in response.json()["error"]

    # A full replace without the parent keys is refused (as the original, but 400 not 500).
    put = await alice.request("PUT", f"/v1/chat_messages/{message['uid']}", json={"content": "x"})
    assert put.status_code == 400
    # Once the chat is deleted, its messages cannot change, but can still be deleted.
    await alice.request("DELETE", f"/v1/chats/{chat['uid']}")
    cases: tuple[tuple[str, str, dict[str, Any] | None], ...] = (
        ("PATCH", f"/v1/chat_messages/{message['uid']}", {"content": "y"}),
        ("POST", f"/v1/chat_messages/{message['uid']}/archive", None),
        ("POST", f"/v1/chat_messages/{message['uid']}/process", {"action": "mark_read"}),
    )
    for method, path, part in cases:
        response = await alice.request(method, path, json=part)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"].startswith(f"parent chat not found: {chat['uid']}")
    assert (await alice.request("GET", f"/v1/chat_messages/{message['uid']}")).json() == message
    deleted = await alice.request("DELETE", f"/v1/chat_messages/{message['uid']}")
    assert deleted.status_code == 200


async def test_parents_are_the_callers_own(api: Api, alice: User) -> None:
    bob = await api.user("auth0|bob")
    bobs_note = await bob.create("notes", {})
    response = await alice.request(
        "POST", "/v1/comments", json={"parentType": "note", "parentUid": bobs_note["uid"]}
    )
    assert response.status_code == 404
    assert response.json()["error"].startswith(f"parent note not found: {bobs_note['uid']}")


async def test_deleting_a_task_list_clears_its_tasks_list_uid(alice: User) -> None:
    listing = await alice.create("task_lists", {"title": "groceries"})
    other = await alice.create("task_lists", {"title": "work"})
    members = [
        await alice.create("tasks", {"title": f"t{i}", "taskListUid": listing["uid"]})
        for i in range(2)
    ]
    elsewhere = await alice.create("tasks", {"title": "w", "taskListUid": other["uid"]})
    gone = await alice.create("tasks", {"title": "g", "taskListUid": listing["uid"]})
    await alice.request("DELETE", f"/v1/tasks/{gone['uid']}")

    deleted = await alice.request("DELETE", f"/v1/task_lists/{listing['uid']}")
    assert deleted.status_code == 200
    for member in members:
        task = (await alice.request("GET", f"/v1/tasks/{member['uid']}")).json()
        assert "taskListUid" not in task["payload"]
        assert task["version"] == 2
        assert task["payload"]["sync"]["version"] == 2
        assert task["payload"]["updatedTs"] == task["updatedAt"]
    untouched = (await alice.request("GET", f"/v1/tasks/{elsewhere['uid']}")).json()
    assert untouched == elsewhere
    tombstone = await alice.request(
        "GET", f"/v1/tasks/{gone['uid']}", params={"includeDeleted": "true"}
    )
    assert tombstone.json()["payload"]["taskListUid"] == listing["uid"]
    category = await alice.create("task_list_categories", {"name": "c"})
    assert (
        await alice.request("DELETE", f"/v1/task_list_categories/{category['uid']}")
    ).status_code == 200


async def test_push_and_rest_see_the_same_rows(alice: User) -> None:
    uid = new_uid()
    pushed = {"uid": uid, "title": "from the app", "updatedTs": "2025-11-03T10:00:00Z"}
    await push(alice, "notes", pushed)
    got = (await alice.request("GET", f"/v1/notes/{uid}")).json()
    assert got == {
        "uid": uid,
        "version": 1,
        "updatedAt": "2025-11-03T10:00:00Z",
        "payload": pushed,
    }
    patched = await alice.request("PATCH", f"/v1/notes/{uid}", json={"title": "from REST"})
    assert patched.json()["version"] == 2
    pulled = (await alice.request("GET", "/v1/sync/notes/pull")).json()["upserts"]
    assert pulled == [patched.json()["payload"]]


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("POST", b"{not json"),
        ("POST", b"[1, 2]"),
        ("POST", b'"a string"'),
        ("POST", b"null"),
        ("POST", b""),
        ("PUT", b"[]"),
        ("PATCH", b"42"),
        ("PATCH", b"{"),
        ("POST", b'{"a": NaN}'),
        ("PUT", b'{"a": [Infinity]}'),
        ("PATCH", b'{"a": {"b": -1e999}}'),
        ("POST", b'{"a": "\\ud800"}'),
        ("PATCH", b'{"\\udfff": 1}'),
        ("POST", b'{"a": ' * 65 + b"1" + b"}" * 65),
        ("PUT", b"[" * 100 + b"]" * 100),
        ("POST", b'{"a": "\xff\xfe"}'),
    ],
)
async def test_malformed_or_non_object_bodies_are_400_and_write_nothing(
    alice: User, method: str, body: bytes
) -> None:
    item = await alice.create("notes", {"v": 1})
    path = "/v1/notes" if method == "POST" else f"/v1/notes/{item['uid']}"
    response = await alice.request(
        method, path, content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]
    listed = (await alice.request("GET", "/v1/notes")).json()["items"]
    assert listed == [item]


@SQLITE_ONLY
@pytest.mark.parametrize(
    "body",
    [
        {"action": 5},
        {"metadata": {}},
        {"action": "pin", "metadata": "x"},
        {"action": "pin", "x": 1},
    ],
)
async def test_process_body_with_wrong_types_is_400(alice: User, body: dict[str, Any]) -> None:
    item = await alice.create("notes", {})
    response = await alice.request(
        "POST",
        f"/v1/notes/{item['uid']}/process",
        content=json.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith("body")
    assert (await alice.request("GET", f"/v1/notes/{item['uid']}")).json()["version"] == 1


@SQLITE_ONLY
@pytest.mark.parametrize("uid", ["not-a-uuid", "123", "g" * 36])
async def test_bad_uuid_is_400(alice: User, uid: str) -> None:
    response = await alice.request("GET", f"/v1/notes/{uid}")
    assert response.status_code == 400
    assert "uid" in response.json()["error"]


async def test_oversize_body_is_413_and_writes_nothing(make_api: Any) -> None:
    api: Api = await make_api(max_body_bytes=4096)
    alice = await api.user()
    response = await alice.request("POST", "/v1/notes", json={"blob": "x" * 5000})
    assert response.status_code == 413
    assert "4096" in response.json()["error"]
    assert response.json()["correlation_id"]
    fits = await alice.request("POST", "/v1/notes", json={"blob": "x" * 3000})
    assert fits.status_code == 201
    listed = (await alice.request("GET", "/v1/notes")).json()["items"]
    assert [item["uid"] for item in listed] == [fits.json()["uid"]]


async def test_versions_increase_by_exactly_one_per_mutation(alice: User) -> None:
    item = await alice.create("tasks", {})
    uid = item["uid"]
    steps = [
        ("PUT", f"/v1/tasks/{uid}", {"a": 1}),
        ("PATCH", f"/v1/tasks/{uid}", {"b": 2}),
        ("POST", f"/v1/tasks/{uid}/process", {"action": "start"}),
        ("POST", f"/v1/tasks/{uid}/archive", None),
        ("POST", "/v1/tasks", {"uid": uid}),
        ("DELETE", f"/v1/tasks/{uid}", None),
    ]
    for expected, (method, path, body) in enumerate(steps, start=2):
        response = await alice.request(method, path, json=body)
        assert response.json()["version"] == expected
        assert response.json()["payload"]["sync"]["version"] == expected


async def test_deepest_allowed_payload_and_unusual_text_round_trip(alice: User) -> None:
    deep: Any = 1
    for _ in range(63):
        deep = {"d": deep}
    payload = {"deep": deep, "nul": "a\u0000b", "emoji": "\U0001f600", "big": 10**30}
    created = await alice.create("notes", payload)
    assert {k: created["payload"][k] for k in payload} == payload
    listed = await alice.request("GET", "/v1/notes")
    assert listed.json()["items"][0]["payload"] == created["payload"]


@SQLITE_ONLY
async def test_unknown_action_with_odd_text_is_still_a_clean_400(alice: User) -> None:
    item = await alice.create("notes", {})
    for body in (b'{"action": "\\ud800x"}', b'{"action": "<\\u00e9>"}'):
        response = await alice.request(
            "POST",
            f"/v1/notes/{item['uid']}/process",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 400
        assert response.json()["error"]


@SQLITE_ONLY
@pytest.mark.parametrize("value", ["\u00b2", '"\u00b9"', 'W/"\u0661"'])
async def test_if_match_with_non_ascii_digits_is_a_400(value: str) -> None:
    with pytest.raises(ApiError) as raised:
        parse_if_match(value)
    assert raised.value.status == 400


async def test_valid_payload_helper_makes_creatable_items(alice: User) -> None:
    for entity in ENTITY_NAMES:
        payload = await valid_payload(alice, entity, n=1)
        assert (await alice.request("POST", f"/v1/{entity}", json=payload)).status_code == 201
