"""The entity routes on SQLite and PostgreSQL: every route and status of the contract."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.api.conftest import SQLITE_ONLY, Api, User
from toolbridge_api.entities import ENTITIES, ENTITY_NAMES
from toolbridge_api.errors import ApiError
from toolbridge_api.routes.entities import parse_if_match

pytestmark = pytest.mark.usefixtures("backend")


@pytest.fixture
async def alice(api: Api) -> User:
    return await api.user("auth0|alice")


async def test_create_get_list_roundtrip(alice: User) -> None:
    created = await alice.create("notes", {"title": "first", "tags": ["a"]})
    assert created["version"] == 1
    assert created["deletedAt"] is None
    assert created["payload"] == {"title": "first", "tags": ["a"]}
    uuid.UUID(created["uid"])

    got = await alice.request("GET", f"/v1/notes/{created['uid']}")
    assert got.status_code == 200
    assert got.json() == created
    assert got.headers["etag"] == '"1"'

    listed = await alice.request("GET", "/v1/notes")
    assert listed.json() == {"items": [created], "nextCursor": None}


@pytest.mark.parametrize("entity", ENTITY_NAMES)
async def test_every_entity_has_the_full_route_set(alice: User, entity: str) -> None:
    item = await alice.create(entity, {"n": 1})
    uid = item["uid"]
    put = await alice.request("PUT", f"/v1/{entity}/{uid}", json={"n": 2, "x": True})
    assert (put.status_code, put.json()["version"]) == (200, 2)
    patch = await alice.request("PATCH", f"/v1/{entity}/{uid}", json={"x": None, "y": 3})
    assert patch.json()["payload"] == {"n": 2, "y": 3}
    archived = await alice.request("POST", f"/v1/{entity}/{uid}/archive")
    assert archived.json()["payload"]["archived"] is True
    assert archived.json()["version"] == 4
    deleted = await alice.request("DELETE", f"/v1/{entity}/{uid}")
    assert deleted.status_code == 200
    assert deleted.json()["version"] == 5
    assert deleted.json()["deletedAt"] is not None
    assert (await alice.request("GET", f"/v1/{entity}/{uid}")).status_code == 410


def _action_cases() -> list[Any]:
    return [
        pytest.param(entity.name, action, id=f"{entity.name}-{action}")
        for entity in ENTITIES
        for action in entity.actions
    ]


ABSENT = object()

EXPECTED_EFFECTS: dict[tuple[str, str], dict[str, Any]] = {
    ("notes", "pin"): {"pinned": True},
    ("notes", "unpin"): {"pinned": False},
    ("notes", "archive"): {"archived": True},
    ("notes", "unarchive"): {"archived": False},
    ("tasks", "start"): {"status": "in_progress", "completedAt": ABSENT},
    ("tasks", "complete"): {"status": "done", "completedAt": str},
    ("tasks", "reopen"): {"status": "todo", "completedAt": ABSENT},
    ("comments", "resolve"): {"status": "resolved", "resolvedAt": str},
    ("comments", "reopen"): {"status": "open", "resolvedAt": ABSENT},
    ("chats", "resolve"): {"status": "resolved", "resolvedAt": str},
    ("chats", "reopen"): {"status": "open", "resolvedAt": ABSENT},
    ("chat_messages", "mark_read"): {"readAt": str},
    ("chat_messages", "mark_delivered"): {"deliveredAt": str},
}


@SQLITE_ONLY
@pytest.mark.parametrize(("entity", "action"), _action_cases())
async def test_process_applies_each_action(alice: User, entity: str, action: str) -> None:
    item = await alice.create(entity, {"title": "t", "completedAt": "old", "resolvedAt": "old"})
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
    assert payload["lastAction"] == action
    assert payload["lastActionMetadata"] == {"by": "test"}
    for key, expected in EXPECTED_EFFECTS[(entity, action)].items():
        if expected is ABSENT:
            assert key not in payload
        elif expected is str:
            assert payload[key].endswith("Z")
            assert payload[key] != "old"
        else:
            assert payload[key] == expected


def test_expected_effects_cover_every_declared_action() -> None:
    declared = {(entity.name, action) for entity in ENTITIES for action in entity.actions}
    assert declared == set(EXPECTED_EFFECTS)


@SQLITE_ONLY
async def test_unknown_action_is_400_listing_valid_ones(alice: User) -> None:
    item = await alice.create("tasks", {"title": "t"})
    response = await alice.request(
        "POST", f"/v1/tasks/{item['uid']}/process", json={"action": "pin"}
    )
    assert response.status_code == 400
    assert "start, complete, reopen" in response.json()["error"]
    unchanged = await alice.request("GET", f"/v1/tasks/{item['uid']}")
    assert unchanged.json()["version"] == 1


@SQLITE_ONLY
async def test_process_without_metadata_drops_previous_metadata(alice: User) -> None:
    item = await alice.create("notes", {})
    uid = item["uid"]
    await alice.request("POST", f"/v1/notes/{uid}/process", json={"action": "pin", "metadata": {}})
    response = await alice.request("POST", f"/v1/notes/{uid}/process", json={"action": "unpin"})
    assert "lastActionMetadata" not in response.json()["payload"]


async def test_pagination_walks_every_item_once_in_order(alice: User) -> None:
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
        assert len(body["items"]) <= 3
        seen += [item["uid"] for item in body["items"]]
        pages += 1
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert seen == created
    assert pages == 3


async def test_pagination_survives_deletes_between_pages(alice: User) -> None:
    uids = [(await alice.create("notes", {"i": i}))["uid"] for i in range(4)]
    first = (await alice.request("GET", "/v1/notes", params={"limit": 2})).json()
    await alice.request("DELETE", f"/v1/notes/{uids[2]}")
    rest = await alice.request("GET", "/v1/notes", params={"cursor": first["nextCursor"]})
    assert [item["uid"] for item in rest.json()["items"]] == [uids[3]]


@SQLITE_ONLY
async def test_default_limit_is_500_and_max_is_1000(alice: User) -> None:
    too_big = await alice.request("GET", "/v1/notes", params={"limit": 1001})
    assert too_big.status_code == 400
    assert "limit" in too_big.json()["error"]
    for bad in ("0", "-1", "ten"):
        assert (await alice.request("GET", "/v1/notes", params={"limit": bad})).status_code == 400
    ok = await alice.request("GET", "/v1/notes", params={"limit": 1000})
    assert ok.status_code == 200


@SQLITE_ONLY
@pytest.mark.parametrize(
    "cursor",
    # "czrCsg" is "s:²": str.isdigit() says yes, int() says no; it once was a 500.
    ["garbage", "czo=", "czotMQ", "eDox", "!!!", "czoxMjM0NTY3ODkwMTIzNDU2Nzg5MA", "czrCsg"],
)
async def test_bad_cursor_is_400(alice: User, cursor: str) -> None:
    response = await alice.request("GET", "/v1/notes", params={"cursor": cursor})
    assert response.status_code == 400
    assert "cursor" in response.json()["error"]


async def test_include_deleted_shows_soft_deleted_items(alice: User) -> None:
    keep = await alice.create("chats", {"k": 1})
    gone = await alice.create("chats", {"k": 2})
    await alice.request("DELETE", f"/v1/chats/{gone['uid']}")
    live = (await alice.request("GET", "/v1/chats")).json()["items"]
    assert [item["uid"] for item in live] == [keep["uid"]]
    everything = (
        await alice.request("GET", "/v1/chats", params={"includeDeleted": "true"})
    ).json()["items"]
    assert [item["uid"] for item in everything] == [keep["uid"], gone["uid"]]
    assert everything[1]["deletedAt"] is not None
    single = await alice.request(
        "GET", f"/v1/chats/{gone['uid']}", params={"includeDeleted": "true"}
    )
    assert single.status_code == 200
    assert single.json()["version"] == 2


async def test_changes_to_a_deleted_item_are_410(alice: User) -> None:
    item = await alice.create("comments", {"a": 1})
    uid = item["uid"]
    await alice.request("DELETE", f"/v1/comments/{uid}")
    for method, path, body in (
        ("PUT", f"/v1/comments/{uid}", {"a": 2}),
        ("PATCH", f"/v1/comments/{uid}", {"a": 2}),
        ("DELETE", f"/v1/comments/{uid}", None),
        ("POST", f"/v1/comments/{uid}/archive", None),
        ("POST", f"/v1/comments/{uid}/process", {"action": "resolve"}),
    ):
        response = await alice.request(method, path, json=body)
        assert response.status_code == 410, (method, path)
    final = await alice.request("GET", f"/v1/comments/{uid}", params={"includeDeleted": "true"})
    assert final.json()["version"] == 2
    assert final.json()["payload"] == {"a": 1}


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
    matching = await alice.request(
        method, f"/v1/notes/{uid}", json=body, headers={"If-Match": '"1"'}
    )
    assert matching.status_code == 200
    assert matching.json()["version"] == 2


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


@SQLITE_ONLY
async def test_patch_is_a_json_merge_patch(alice: User) -> None:
    item = await alice.create("notes", {"a": {"b": 1, "c": 2}, "d": [1, 2], "e": "keep"})
    response = await alice.request(
        "PATCH", f"/v1/notes/{item['uid']}", json={"a": {"b": None, "x": 9}, "d": [3]}
    )
    assert response.json()["payload"] == {"a": {"c": 2, "x": 9}, "d": [3], "e": "keep"}


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
        ("DELETE", f"/v1/tasks/{uid}", None),
    ]
    for expected, (method, path, body) in enumerate(steps, start=2):
        response = await alice.request(method, path, json=body)
        assert response.json()["version"] == expected


async def test_deepest_allowed_payload_and_unusual_text_round_trip(alice: User) -> None:
    deep: Any = 1
    for _ in range(63):
        deep = {"d": deep}
    payload = {"deep": deep, "nul": "a\u0000b", "emoji": "\U0001f600", "big": 10**30}
    created = await alice.create("notes", payload)
    assert created["payload"] == payload
    listed = await alice.request("GET", "/v1/notes")
    assert listed.json()["items"][0]["payload"] == payload


@SQLITE_ONLY
async def test_unknown_action_with_odd_text_is_still_a_clean_400(alice: User) -> None:
    item = await alice.create("notes", {})
    response = await alice.request(
        "POST",
        f"/v1/notes/{item['uid']}/process",
        content=b'{"action": "\\ud800x"}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "valid actions are pin, unpin, archive, unarchive" in response.json()["error"]


@SQLITE_ONLY
@pytest.mark.parametrize("value", ["\u00b2", '"\u00b9"', 'W/"\u0661"'])
async def test_if_match_with_non_ascii_digits_is_a_400(value: str) -> None:
    with pytest.raises(ApiError) as raised:
        parse_if_match(value)
    assert raised.value.status == 400
