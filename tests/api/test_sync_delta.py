"""Delta sync (``/v1/sync/{entity}/push|pull``) on SQLite and PostgreSQL, as the original Go
API defines it: last writer wins on the item's time, per-item acks, tombstones, cursors.

The original's own scripts (``scripts/smoke-test.sh``, ``scripts/integration-test.sh`` and
the README's quick start, at 48d7d10) are replayed step by step over real HTTP."""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.conftest import SQLITE_ONLY, Api, User
from tests.api.items import go_cursor, new_uid, pull, pull_all, push
from tests.support.api import ApiServer
from toolbridge_api.entities import ENTITY_NAMES
from toolbridge_api.security import Principal

pytestmark = pytest.mark.usefixtures("backend")

T0 = "2025-11-03T10:00:00Z"
T0_MS = 1_762_164_000_000


@pytest.fixture
async def alice(api: Api) -> User:
    return await api.user("auth0|alice")


# --- the original's scripts over real HTTP -----------------------------------------------


@pytest.fixture
def server(database_url: str) -> Iterator[ApiServer]:
    """The API over real HTTP with ``X-Debug-Sub`` on, as the scripts run the Go API."""
    with ApiServer(None, None, None, database_url=database_url, debug_sub_enabled=True) as api:
        yield api


class Script:
    """What the scripts do with curl and jq: one user (X-Debug-Sub), one session."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        self.sync: dict[str, str] = {}

    def start_session(self, **headers: str) -> dict[str, Any]:
        response = self.http.post("/v1/sync/sessions", headers=headers)
        assert response.status_code == 201, response.text
        session: dict[str, Any] = response.json()
        assert session["id"], "the script asserts .id is not null"
        self.sync = {"X-Sync-Session": session["id"], "X-Sync-Epoch": str(session["epoch"])}
        return session

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        response = self.http.request(method, path, json=body, params=params, headers=self.sync)
        assert response.status_code < 400, (method, path, response.status_code, response.text)
        return response.json()

    def push(self, entity: str, item: dict[str, Any]) -> dict[str, Any]:
        acks = self.call("POST", f"/v1/sync/{entity}/push", {"items": [item]})
        assert len(acks) == 1
        ack: dict[str, Any] = acks[0]
        assert ack.get("error") in (None, ""), ack
        return ack

    def upsert(self, entity: str, uid: str, **params: Any) -> dict[str, Any] | None:
        page = self.call("GET", f"/v1/sync/{entity}/pull", limit=100, **params)
        found = [item for item in page["upserts"] if item["uid"] == uid]
        return found[0] if found else None


def _sync(version: int, *, deleted_at: str | None = None) -> dict[str, Any]:
    sync: dict[str, Any] = {"version": version, "isDeleted": deleted_at is not None}
    if deleted_at is not None:
        sync["deletedAt"] = deleted_at
    return sync


def test_the_originals_smoke_test_script(server: ApiServer) -> None:
    """``scripts/smoke-test.sh``: every step and every assertion, in order."""
    user = f"smoke-test-user-{os.getpid()}"
    note, task, comment_note, comment, chat, message = (new_uid() for _ in range(6))
    with httpx.Client(base_url=server.url, headers={"X-Debug-Sub": user}) as http:
        script = Script(http)
        # 1. health
        assert http.get("/healthz").status_code == 200
        # 2. session
        script.start_session()
        # 3. push a note
        first = {
            "uid": note,
            "title": "Smoke Test Note",
            "content": "This is a smoke test",
            "updatedTs": "2025-11-03T10:00:00Z",
            "sync": _sync(1),
        }
        assert script.push("notes", first)["version"] == 1
        # 4. pull it
        pulled = script.upsert("notes", note)
        assert pulled is not None
        assert pulled["title"] == "Smoke Test Note"
        # 5. the same time again: idempotent, payload unchanged
        same = {k: v for k, v in first.items() if k != "content"}
        assert script.push("notes", same)["version"] == 1
        assert script.upsert("notes", note) == first
        # 6. newer: version 2
        newer = {
            "uid": note,
            "title": "Updated Smoke Test Note",
            "content": "Updated content",
            "updatedTs": "2025-11-03T10:01:00Z",
            "sync": _sync(1),
        }
        assert script.push("notes", newer)["version"] == 2
        # 7. pull the update
        updated = script.upsert("notes", note)
        assert updated is not None
        assert updated["title"] == "Updated Smoke Test Note"
        assert updated["content"] == "Updated content"
        # 8. tombstone: version 3
        tombstone = {
            "uid": note,
            "title": "Updated Smoke Test Note",
            "updatedTs": "2025-11-03T10:02:00Z",
            "sync": _sync(2, deleted_at="2025-11-03T10:02:00Z"),
        }
        assert script.push("notes", tombstone)["version"] == 3
        # 9. pulled as a delete, not an upsert
        page = script.call("GET", "/v1/sync/notes/pull", limit=100)
        assert note not in [item["uid"] for item in page["upserts"]]
        assert {"uid": note, "deletedAt": "2025-11-03T10:02:00Z"} in page["deletes"]
        # 10. limit=1 gives a cursor (the script passes either way; here it must be there)
        one = script.call("GET", "/v1/sync/notes/pull", limit=1)
        assert one["nextCursor"]
        rest = script.call("GET", "/v1/sync/notes/pull", limit=1, cursor=one["nextCursor"])
        assert rest == {"upserts": [], "deletes": []}
        # 11-13. a task, pulled, then deleted
        assert (
            script.push(
                "tasks",
                {
                    "uid": task,
                    "title": "Smoke Test Task",
                    "done": False,
                    "updatedTs": "2025-11-03T10:00:00Z",
                    "sync": _sync(1),
                },
            )["version"]
            == 1
        )
        pulled_task = script.upsert("tasks", task)
        assert pulled_task is not None
        assert pulled_task["title"] == "Smoke Test Task"
        task_tombstone = {
            "uid": task,
            "title": "Smoke Test Task",
            "updatedTs": "2025-11-03T10:01:00Z",
            "sync": _sync(1, deleted_at="2025-11-03T10:01:00Z"),
        }
        assert script.push("tasks", task_tombstone)["version"] == 2
        # 14-17. a note, a comment on it; the payload comes back verbatim
        parent = {
            "uid": comment_note,
            "title": "Note for Comment Test",
            "content": "Parent note for comment",
            "updatedTs": "2025-11-03T11:00:00Z",
            "sync": _sync(1),
        }
        assert script.push("notes", parent)["version"] == 1
        comment_item = {
            "uid": comment,
            "content": "Smoke Test Comment",
            "parentType": "note",
            "parentUid": comment_note,
            "updatedTs": "2025-11-03T11:00:00Z",
            "sync": _sync(1),
        }
        assert script.push("comments", comment_item)["version"] == 1
        pulled_comment = script.upsert("comments", comment)
        assert pulled_comment is not None
        assert pulled_comment["content"] == "Smoke Test Comment"
        assert pulled_comment["parentType"] == "note"
        assert pulled_comment == comment_item
        # 18-20. a chat, pulled, deleted
        chat_item = {
            "uid": chat,
            "title": "Smoke Test Chat",
            "updatedTs": "2025-11-03T10:00:00Z",
            "sync": _sync(1),
        }
        assert script.push("chats", chat_item)["version"] == 1
        pulled_chat = script.upsert("chats", chat)
        assert pulled_chat is not None
        assert pulled_chat["title"] == "Smoke Test Chat"
        chat_tombstone = {
            "uid": chat,
            "title": "Smoke Test Chat",
            "updatedTs": "2025-11-03T10:01:00Z",
            "sync": _sync(1, deleted_at="2025-11-03T10:01:00Z"),
        }
        assert script.push("chats", chat_tombstone)["version"] == 2
        # 21. the chat comes back (not asserted by the script: the original answers 3), then
        # a message in it
        alive = {
            "uid": chat,
            "title": "Chat for Messages",
            "updatedTs": "2025-11-03T11:00:00Z",
            "sync": _sync(2),
        }
        assert script.push("chats", alive)["version"] == 3
        message_item = {
            "uid": message,
            "content": "Smoke test message",
            "chatUid": chat,
            "updatedTs": "2025-11-03T11:01:00Z",
            "sync": _sync(1),
        }
        assert script.push("chat_messages", message_item)["version"] == 1
        # 22. pulled
        pulled_message = script.upsert("chat_messages", message)
        assert pulled_message is not None
        assert pulled_message["content"] == "Smoke test message"
        # 23. deleted
        message_tombstone = {
            "uid": message,
            "content": "Smoke test message",
            "chatUid": chat,
            "updatedTs": "2025-11-03T11:02:00Z",
            "sync": _sync(1, deleted_at="2025-11-03T11:02:00Z"),
        }
        assert script.push("chat_messages", message_tombstone)["version"] == 2


def test_the_originals_integration_test_script(server: ApiServer) -> None:
    """``scripts/integration-test.sh`` (REST only): every step and every assertion, plus
    the values the original answers where the script only reads them."""
    with httpx.Client(
        base_url=server.url, headers={"X-Debug-Sub": f"e2e-test-{os.getpid()}"}
    ) as http:
        script = Script(http)
        # 0. session, with the empty sync headers the script sends
        script.start_session(**{"X-Sync-Session": "", "X-Sync-Epoch": ""})
        # 1-2. create a note, read it back
        note = script.call(
            "POST",
            "/v1/notes",
            {
                "title": "E2E Test Note",
                "content": "Created during end-to-end testing",
                "tags": ["test", "e2e"],
            },
        )
        assert note["uid"]
        assert note["version"] == 1
        got = script.call("GET", f"/v1/notes/{note['uid']}")
        assert got["payload"]["title"] == "E2E Test Note"
        # 3. patch: version 2
        patched = script.call(
            "PATCH", f"/v1/notes/{note['uid']}", {"content": "Updated via PATCH during E2E test"}
        )
        assert patched["version"] == 2
        # 4. list
        listed = script.call("GET", "/v1/notes", limit=10)
        assert note["uid"] in [item["uid"] for item in listed["items"]]
        # 5. archive (the script accepts either value; the original writes status)
        archived = script.call("POST", f"/v1/notes/{note['uid']}/archive", {})
        assert archived["payload"]["status"] == "archived"
        # 6. delete
        deleted = script.call("DELETE", f"/v1/notes/{note['uid']}")
        assert deleted["deletedAt"] is not None
        # 7-9. a task, started, deleted
        task = script.call(
            "POST",
            "/v1/tasks",
            {
                "title": "E2E Test Task",
                "description": "Test task from E2E test",
                "status": "todo",
                "priority": "high",
            },
        )
        assert task["uid"]
        started = script.call(
            "POST",
            f"/v1/tasks/{task['uid']}/process",
            {"action": "start", "metadata": {"started_by": "e2e-test"}},
        )
        assert started["payload"]["status"] == "in_progress"
        assert script.call("DELETE", f"/v1/tasks/{task['uid']}")["deletedAt"] is not None
        # 10-12. a chat and a message in it, listed
        chat = script.call(
            "POST",
            "/v1/chats",
            {
                "title": "E2E Test Chat",
                "description": "Test chat room",
                "participants": ["user1", "user2"],
            },
        )
        assert chat["uid"]
        message = script.call(
            "POST",
            "/v1/chat_messages",
            {"chatUid": chat["uid"], "content": "Hello from E2E test!", "sender": "e2e-bot"},
        )
        assert message["uid"]
        messages = script.call("GET", "/v1/chat_messages", limit=10)
        assert [item["uid"] for item in messages["items"]] == [message["uid"]]
        # 13-15. a note, a comment on it, resolved
        parent = script.call(
            "POST",
            "/v1/notes",
            {"title": "Note for Comment Test", "content": "This note will have a comment"},
        )
        comment = script.call(
            "POST",
            "/v1/comments",
            {
                "content": "This is a test comment",
                "parentType": "note",
                "parentUid": parent["uid"],
                "author": "e2e-test",
            },
        )
        assert comment["uid"]
        resolved = script.call(
            "POST",
            f"/v1/comments/{comment['uid']}/process",
            {"action": "resolve", "metadata": {"resolved_by": "e2e-test"}},
        )
        assert resolved["payload"]["status"] == "resolved"


def test_the_readme_quick_start_and_a_wipe(server: ApiServer) -> None:
    """The README's push and pull (with the session the original really requires), then the
    client's view of a wipe: its session is gone, the new one has the next epoch, an old
    epoch is refused, and the data is gone."""
    with httpx.Client(base_url=server.url, headers={"X-Debug-Sub": "demo-user"}) as http:
        item = {
            "uid": "c1d9b7dc-a1b2-4c3d-9e8f-7a6b5c4d3e2f",
            "title": "Test Note",
            "content": "Hello from API",
            "sync": {"version": 1, "isDeleted": False},
            "updatedTs": "2025-11-03T10:00:00Z",
        }
        no_session = http.post("/v1/sync/notes/push", json={"items": [item]})
        assert no_session.status_code == 428
        script = Script(http)
        session = script.start_session()
        acks = script.call("POST", "/v1/sync/notes/push", {"items": [item]})
        assert acks == [{"uid": item["uid"], "version": 1, "updatedAt": "2025-11-03T10:00:00Z"}]
        page = script.call("GET", "/v1/sync/notes/pull", limit=100)
        assert page == {
            "upserts": [item],
            "deletes": [],
            "nextCursor": go_cursor(T0_MS, item["uid"]),  # type: ignore[arg-type]
        }
        old = dict(script.sync)
        wiped = http.post("/v1/sync/wipe", json={"confirm": "WIPE"}, headers=old)
        assert wiped.status_code == 200, wiped.text
        assert wiped.json()["epoch"] == session["epoch"] + 1
        assert http.get("/v1/sync/notes/pull", headers=old).status_code == 428
        renewed = script.start_session()
        assert renewed["epoch"] == session["epoch"] + 1
        stale = http.get(
            "/v1/sync/notes/pull", headers={**script.sync, "X-Sync-Epoch": str(session["epoch"])}
        )
        assert stale.status_code == 409
        assert stale.json()["epoch"] == renewed["epoch"]
        assert script.call("GET", "/v1/sync/notes/pull") == {"upserts": [], "deletes": []}


# --- push ---------------------------------------------------------------------------------


async def test_push_stores_items_as_sent_and_acks_each(alice: User) -> None:
    uid = new_uid()
    item = {"uid": uid.upper(), "title": "t", "updatedTs": T0, "extra": {"nested": [1, None]}}
    acks = await push(alice, "notes", item)
    assert acks == [{"uid": uid, "version": 1, "updatedAt": T0}], "uid in lowercase"
    page = await pull(alice, "notes")
    assert page["upserts"] == [item], "the payload is stored exactly as sent"
    got = (await alice.request("GET", f"/v1/notes/{uid}")).json()
    assert (got["uid"], got["payload"]) == (uid, item)


@pytest.mark.parametrize(
    ("body", "status", "acks"),
    [
        (b"{}", 200, []),
        (b'{"items": null}', 200, []),
        (b'{"items": [], "other": 1}', 200, []),
        (b"[]", 400, None),
        (b'{"items": [1]}', 400, None),
        (b'{"items": {}}', 400, None),
        (b"{", 400, None),
        (b"", 400, None),
        (b'{"items": [{"uid": "x", "a": NaN}]}', 400, None),
    ],
)
async def test_push_body_shapes(
    alice: User, body: bytes, status: int, acks: list[Any] | None
) -> None:
    response = await alice.request(
        "POST", "/v1/sync/notes/push", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    if acks is not None:
        assert response.json() == acks
    else:
        assert response.json()["error"]
    assert (await pull(alice, "notes"))["upserts"] == []


async def test_last_writer_wins_on_the_items_time(alice: User) -> None:
    uid = new_uid()
    first = {"uid": uid, "v": "first", "updatedTs": "2025-11-03T10:00:00Z", "sync": {"version": 5}}
    assert await push(alice, "notes", first) == [
        {"uid": uid, "version": 5, "updatedAt": "2025-11-03T10:00:00Z"}
    ], "a new item takes the client's version"
    older = {"uid": uid, "v": "older", "updatedTs": "2025-11-03T09:00:00Z"}
    equal = {"uid": uid, "v": "equal", "updatedTs": "2025-11-03T10:00:00.000Z"}
    acks = await push(alice, "notes", older, equal)
    assert acks == [{"uid": uid, "version": 5, "updatedAt": "2025-11-03T10:00:00Z"}] * 2
    assert (await pull(alice, "notes"))["upserts"] == [first]
    newer = {
        "uid": uid,
        "v": "newer",
        "updatedTs": "2025-11-03T10:00:00.001Z",
        "sync": {"version": 1},
    }
    assert await push(alice, "notes", newer) == [
        {"uid": uid, "version": 6, "updatedAt": "2025-11-03T10:00:00.001Z"}
    ], "an update is the stored version + 1, whatever the client says"
    assert (await pull(alice, "notes"))["upserts"] == [newer]


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ({"updatedTs": "2025-11-03T10:00:00Z", "updatedAt": "2030-01-01T00:00:00Z"}, T0_MS),
        ({"updatedAt": "2025-11-03T10:00:00Z", "updateTime": "2030-01-01T00:00:00Z"}, T0_MS),
        ({"updateTime": "2025-11-03T10:00:00Z"}, T0_MS),
        ({"updatedTs": None, "updatedAt": "2025-11-03T10:00:00Z"}, T0_MS),
        ({"updatedTs": "0", "updatedAt": "2025-11-03T10:00:00Z"}, T0_MS),
        ({"updatedTs": str(T0_MS)}, T0_MS),
        ({"updatedTs": T0_MS + 5}, T0_MS + 5),
        ({"updatedTs": "2025-11-03T12:00:00.5+02:00"}, T0_MS + 500),
        ({"updatedTs": "2025-11-03T10:00:00.123456789Z"}, T0_MS + 123),
    ],
)
async def test_the_items_time_is_read_like_the_original(
    alice: User, times: dict[str, Any], expected: int
) -> None:
    uid = new_uid()
    (ack,) = await push(alice, "tasks", {"uid": uid, **times})
    assert "error" not in ack
    page = await pull(alice, "tasks", cursor=go_cursor(expected - 1, uid))
    assert [item["uid"] for item in page["upserts"]] == [uid]
    assert page["nextCursor"] == go_cursor(expected, uid)


async def test_an_item_without_a_time_gets_the_servers(alice: User) -> None:
    before = int(time.time() * 1000)
    (ack,) = await push(alice, "notes", {"uid": new_uid()})
    after = int(time.time() * 1000)
    page = await pull(alice, "notes")
    stamp = _cursor_ms(page["nextCursor"])
    assert before <= stamp <= after
    assert ack["updatedAt"].endswith("Z")


def _cursor_ms(cursor: str) -> int:
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    return int(raw.split("|")[0])


@pytest.mark.parametrize(
    ("item", "error"),
    [
        ({"title": "no uid"}, "missing or invalid uid"),
        ({"uid": 5}, "missing or invalid uid"),
        ({"uid": "not-a-uuid"}, "missing or invalid uid"),
        ({"uid": "UID", "updatedTs": "yesterday"}, "missing or invalid uid"),
        ({"updatedTs": "yesterday"}, "invalid updatedTs: 'yesterday'"),
        ({"updatedTs": "2025-13-03T10:00:00Z"}, "invalid updatedTs"),
        ({"updatedTs": True}, "invalid updatedTs"),
        ({"updatedAt": {"at": 1}}, "invalid updatedAt"),
        ({"updateTime": "10:00"}, "invalid updateTime"),
        ({"updatedTs": 10**19}, "invalid updatedTs"),
        ({"sync": {"version": 2**30}}, "invalid sync.version: 1073741824"),
        ({"sync": {"isDeleted": True, "deletedAt": "later"}}, "invalid sync.deletedAt"),
    ],
)
async def test_unreadable_items_are_refused_and_the_rest_apply(
    alice: User, item: dict[str, Any], error: str
) -> None:
    good = new_uid()
    if "uid" not in item and "title" not in item:
        item = {"uid": new_uid(), **item}
    acks = await push(alice, "notes", item, {"uid": good, "updatedTs": T0})
    assert acks[0] == {"uid": "", "version": 0, "updatedAt": "", "error": acks[0]["error"]}
    assert acks[0]["error"].startswith(error)
    assert acks[1] == {"uid": good, "version": 1, "updatedAt": T0}
    assert [i["uid"] for i in (await pull(alice, "notes"))["upserts"]] == [good]


async def test_tombstones_and_resurrection(alice: User) -> None:
    uid, other = new_uid(), new_uid()
    await push(alice, "chats", {"uid": uid, "updatedTs": T0}, {"uid": other, "updatedTs": T0})
    deleted = {
        "uid": uid,
        "updatedTs": "2025-11-03T10:01:00Z",
        "sync": {"isDeleted": True, "deletedAt": "2025-11-03T10:00:30Z"},
    }
    no_time = {"uid": other, "updatedTs": "2025-11-03T10:02:00Z", "sync": {"isDeleted": True}}
    assert [ack["version"] for ack in await push(alice, "chats", deleted, no_time)] == [2, 2]
    page = await pull(alice, "chats")
    assert page["upserts"] == []
    assert page["deletes"] == [
        {"uid": uid, "deletedAt": "2025-11-03T10:00:30Z"},
        {"uid": other, "deletedAt": "2025-11-03T10:02:00Z"},
    ]
    gone = await alice.request("GET", f"/v1/chats/{uid}")
    assert (gone.status_code, gone.json()["deletedAt"]) == (410, "2025-11-03T10:00:30Z")
    # An older live push does not undo the delete; a newer one does.
    stale = {"uid": uid, "updatedTs": "2025-11-03T10:00:59Z"}
    assert (await push(alice, "chats", stale))[0]["version"] == 2
    back = {"uid": uid, "title": "back", "updatedTs": "2025-11-03T10:05:00Z"}
    assert (await push(alice, "chats", back))[0]["version"] == 3
    page = await pull(alice, "chats")
    assert page["upserts"] == [back]
    assert page["deletes"] == [{"uid": other, "deletedAt": "2025-11-03T10:02:00Z"}]
    not_really = {"uid": uid, "updatedTs": "2025-11-03T10:06:00Z", "sync": {"isDeleted": "true"}}
    await push(alice, "chats", not_really)
    assert (await pull(alice, "chats"))["upserts"][-1] == not_really, "only true deletes"


async def test_a_rest_delete_is_pulled_as_a_tombstone(alice: User) -> None:
    note = await alice.create("notes", {"title": "t"})
    deleted = (await alice.request("DELETE", f"/v1/notes/{note['uid']}")).json()
    page = await pull(alice, "notes")
    assert page["deletes"] == [{"uid": note["uid"], "deletedAt": deleted["deletedAt"]}]


async def test_comment_and_message_parents(alice: User) -> None:
    note, comment, late_note, orphan, chat, message = (new_uid() for _ in range(6))
    acks = await push(
        alice,
        "notes",
        {"uid": note, "updatedTs": T0},
    )
    assert "error" not in acks[0]
    acks = await push(
        alice,
        "comments",
        {"uid": comment, "parentType": "note", "parentUid": note.upper(), "updatedTs": T0},
        {"uid": orphan, "parentType": "note", "parentUid": late_note, "updatedTs": T0},
        {"uid": new_uid(), "parentType": "user", "parentUid": note, "updatedTs": T0},
        {"uid": new_uid(), "parentUid": note},
        {"uid": new_uid(), "parentType": "note"},
        {"uid": new_uid(), "parentType": "note", "parentUid": "nope"},
        {"uid": new_uid(), "parentType": "task", "parentUid": note, "updatedTs": T0},
    )
    assert "error" not in acks[0]
    assert acks[1] == {
        "uid": orphan,
        "version": 1,
        "updatedAt": T0,
        "error": f"parent note not found: {late_note}",
    }
    assert acks[2]["error"] == "invalid parent_type: user (must be 'note', 'task' or 'chat')"
    assert (acks[2]["version"], acks[2]["updatedAt"]) == (1, T0)
    assert [ack["error"] for ack in acks[3:6]] == [
        "missing parentType",
        "missing parentUid",
        "invalid parentUid",
    ]
    assert all(ack["uid"] == "" for ack in acks[3:6])
    assert acks[6]["error"] == f"parent task not found: {note}"
    assert [item["uid"] for item in (await pull(alice, "comments"))["upserts"]] == [comment]

    # In one batch, an item can name a parent pushed before it (not after it).
    acks = await push(
        alice,
        "chats",
        {"uid": chat, "updatedTs": T0},
    )
    acks = await push(
        alice,
        "chat_messages",
        {"uid": message, "chatUid": chat, "updatedTs": T0},
        {"uid": new_uid(), "chatUid": "bad-uid"},
        {"uid": new_uid()},
    )
    assert "error" not in acks[0]
    assert acks[1]["error"] == "invalid chatUid: bad-uid"
    assert acks[2]["error"] == "missing chatUid"

    # A tombstone needs its parent keys but not a live parent.
    await push(
        alice,
        "chats",
        {"uid": chat, "updatedTs": "2025-11-03T11:00:00Z", "sync": {"isDeleted": True}},
    )
    (ack,) = await push(
        alice,
        "chat_messages",
        {
            "uid": message,
            "chatUid": chat,
            "updatedTs": "2025-11-03T11:00:00Z",
            "sync": {"isDeleted": True},
        },
    )
    assert (ack.get("error"), ack["version"]) == (None, 2)
    (live,) = await push(
        alice,
        "chat_messages",
        {"uid": message, "chatUid": chat, "updatedTs": "2025-11-03T12:00:00Z"},
    )
    assert live["error"] == f"parent chat not found: {chat}"


async def test_items_of_one_push_apply_in_order(alice: User) -> None:
    """Items of one push apply in order, in one transaction: a later item sees what an
    earlier one wrote (the same comment twice: version 1, then 2)."""
    task = new_uid()
    comment = new_uid()
    await push(alice, "tasks", {"uid": task, "updatedTs": T0})
    acks = await push(
        alice,
        "comments",
        {"uid": comment, "parentType": "task", "parentUid": task, "updatedTs": T0},
        {
            "uid": comment,
            "parentType": "task",
            "parentUid": task,
            "updatedTs": "2025-11-03T10:00:01Z",
            "content": "second write of the same comment in the batch",
        },
    )
    assert [ack["version"] for ack in acks] == [1, 2]


# --- pull ---------------------------------------------------------------------------------


async def test_pull_pages_in_time_order_and_resumes_from_a_high_water_mark(alice: User) -> None:
    uids = [new_uid() for _ in range(5)]
    await push(
        alice,
        "notes",
        *({"uid": uid, "updatedTs": str(T0_MS + i)} for i, uid in enumerate(uids)),
    )
    first = await pull(alice, "notes", limit=2)
    assert [item["uid"] for item in first["upserts"]] == uids[:2]
    assert first["nextCursor"] == go_cursor(T0_MS + 1, uids[1])
    rest = await pull(alice, "notes", limit=10, cursor=first["nextCursor"])
    assert [item["uid"] for item in rest["upserts"]] == uids[2:]
    assert rest["nextCursor"] == go_cursor(T0_MS + 4, uids[4]), "present on a short page too"
    end = await pull(alice, "notes", cursor=rest["nextCursor"])
    assert end == {"upserts": [], "deletes": []}, "no nextCursor on an empty page"

    # Later: only what changed since the cursor, in the order it changed.
    changed = {"uid": uids[0], "v": 2, "updatedTs": str(T0_MS + 10)}
    new = {"uid": new_uid(), "updatedTs": str(T0_MS + 11)}
    await push(alice, "notes", changed, new)
    await alice.request("DELETE", f"/v1/notes/{uids[1]}")
    since = await pull(alice, "notes", cursor=rest["nextCursor"])
    assert since["upserts"] == [changed, new]
    assert [item["uid"] for item in since["deletes"]] == [uids[1]]
    everything = await pull_all(alice, "notes", limit=2)
    assert len(everything["upserts"]) + len(everything["deletes"]) == 6


@SQLITE_ONLY
async def test_push_and_pull_need_a_session_and_the_current_epoch(api: Api, alice: User) -> None:
    for method, path in (("POST", "/v1/sync/notes/push"), ("GET", "/v1/sync/notes/pull")):
        body: dict[str, Any] | None = {"items": []} if method == "POST" else None
        missing = await alice.request(method, path, json=body, headers={"X-Sync-Session": ""})
        assert missing.status_code == 428
        await api.app.state.sync_state.bump_epoch(alice_principal(alice))
        stale = await alice.request(method, path, json=body)
        assert stale.status_code == 409
        assert stale.json()["error"] == "epoch_mismatch"
        await alice.start_session()


def alice_principal(user: User) -> Principal:
    return Principal(user.tenant_id, user.user_id)


@pytest.mark.parametrize("entity", ENTITY_NAMES)
async def test_every_entity_pushes_and_pulls(alice: User, entity: str) -> None:
    extra: dict[str, Any] = {}
    if entity == "comments":
        note = await alice.create("notes", {})
        extra = {"parentType": "note", "parentUid": note["uid"]}
    elif entity == "chat_messages":
        chat = await alice.create("chats", {})
        extra = {"chatUid": chat["uid"]}
    uid = str(uuid.uuid4())
    item = {"uid": uid, "updatedTs": T0, **extra}
    assert await push(alice, entity, item) == [{"uid": uid, "version": 1, "updatedAt": T0}]
    assert (await pull(alice, entity))["upserts"] == [item]
