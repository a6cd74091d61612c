"""Every tool of every entity through a real MCP client, the real API and the fake IdP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastmcp import Client
from pydantic import SecretStr

from tests.mcp.conftest import (
    TENANT_ID,
    TENANT_SECRET,
    McpHttpServer,
    call,
    call_error,
    mint_token,
)
from tests.support.api import ApiServer
from tests.support.idp import IdP
from toolbridge_mcp.auth.tenant import TenantSigner

KINDS = ("list", "get", "create", "update", "patch", "delete", "archive", "process")
ENTITIES = {
    "notes": "note",
    "tasks": "task",
    "comments": "comment",
    "chats": "chat",
    "chat_messages": "chat_message",
}
ACTIONS = {
    "note": ["pin", "unpin", "archive", "unarchive"],
    "task": ["start", "complete", "reopen"],
    "comment": ["resolve", "reopen"],
    "chat": ["resolve", "reopen"],
    "chat_message": ["mark_read", "mark_delivered"],
}


async def _fields(client: Client[Any], idp: IdP, singular: str) -> dict[str, Any]:
    """Create arguments for one entity (comments and messages need a parent first)."""
    if singular == "note":
        return {"title": "Groceries", "content": "milk, eggs", "tags": ["home"]}
    if singular == "task":
        return {"title": "File taxes", "priority": "high", "due_date": "2026-04-15"}
    if singular == "comment":
        note = await call(client, idp, "create_note", title="Parent")
        return {"content": "Looks good", "parent_type": "note", "parent_uid": note["uid"]}
    if singular == "chat":
        return {"title": "Planning", "participants": ["ana", "bo"]}
    chat = await call(client, idp, "create_chat", title="Parent chat")
    return {"chat_uid": chat["uid"], "content": "hello", "sender": "ana"}


async def test_forty_entity_tools_and_health_check(client: Client[Any]) -> None:
    tools = {tool.name: tool for tool in await client.list_tools()}
    expected = {
        f"{kind}_{plural if kind == 'list' else singular}"
        for plural, singular in ENTITIES.items()
        for kind in KINDS
    }
    assert len(expected) == 40
    assert set(tools) == expected | {"health_check"}
    for singular, actions in ACTIONS.items():
        schema = tools[f"process_{singular}"].input_schema
        assert schema["properties"]["action"]["enum"] == actions
    assert tools["create_task"].input_schema["properties"]["status"]["enum"] == [
        "todo",
        "in_progress",
        "done",
    ]
    assert all(tools[name].description for name in tools)
    assert all(tools[name].output_schema for name in tools)


@pytest.mark.parametrize("plural", list(ENTITIES))
async def test_every_kind_of_tool(
    plural: str, client: Client[Any], idp: IdP, api: ApiServer
) -> None:
    singular = ENTITIES[plural]
    fields = await _fields(client, idp, singular)

    created = await call(client, idp, f"create_{singular}", **fields)
    uid = created["uid"]
    assert created["version"] == 1
    assert created["deleted_at"] is None
    first_key = next(iter(fields))
    assert first_key.split("_")[0] in "".join(created["payload"]).lower()

    got = await call(client, idp, f"get_{singular}", uid=uid)
    assert got == created

    listed = await call(client, idp, f"list_{plural}", limit=1000)
    assert uid in [item["uid"] for item in listed["items"]]

    patch_key, patch_value = {
        "note": ("title", "Groceries!"),
        "task": ("status", "in_progress"),
        "comment": ("content", "Changed my mind"),
        "chat": ("title", "Replanning"),
        "chat_message": ("content", "hello again"),
    }[singular]
    patched = await call(client, idp, f"patch_{singular}", uid=uid, **{patch_key: patch_value})
    assert patched["version"] == 2
    assert patch_value in patched["payload"].values()
    assert set(created["payload"]) <= set(patched["payload"])  # the rest was kept

    updated = await call(client, idp, f"update_{singular}", uid=uid, if_version=2, **fields)
    assert updated["version"] == 3
    assert patch_value not in updated["payload"].values()

    action = ACTIONS[singular][0]
    processed = await call(client, idp, f"process_{singular}", uid=uid, action=action)
    assert processed["version"] == 4
    assert processed["payload"] != updated["payload"]

    archived = await call(client, idp, f"archive_{singular}", uid=uid)
    assert archived["version"] == 5

    deleted = await call(client, idp, f"delete_{singular}", uid=uid)
    assert deleted["uid"] == uid
    assert deleted["deleted"] is True

    message = await call_error(client, idp, f"get_{singular}", uid=uid)
    assert "deleted" in message
    assert "include_deleted=true" in message
    assert f"get_{singular}" in message

    tombstone = await call(client, idp, f"get_{singular}", uid=uid, include_deleted=True)
    assert tombstone["deleted_at"] is not None

    page = await call(client, idp, f"list_{plural}", limit=1000)
    assert uid not in [item["uid"] for item in page["items"]]
    page = await call(client, idp, f"list_{plural}", limit=1000, include_deleted=True)
    assert uid in [item["uid"] for item in page["items"]]


async def test_list_pages_with_the_cursor(client: Client[Any], idp: IdP) -> None:
    uids = {(await call(client, idp, "create_chat", title=f"c{i}"))["uid"] for i in range(3)}
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        page = await call(client, idp, "list_chats", limit=2, cursor=cursor)
        assert len(page["items"]) <= 2
        seen += [item["uid"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert uids <= set(seen)
    assert len(seen) == len(set(seen))


async def test_arguments_as_llm_clients_send_them(client: Client[Any], idp: IdP) -> None:
    note = await call(
        client, idp, "create_note", title="Sloppy", tags='["a", "b"]', mood="cheerful"
    )
    assert note["payload"]["tags"] == ["a", "b"]
    assert "mood" not in note["payload"]
    note = await call(client, idp, "patch_note", uid=note["uid"], tags="x, y")
    assert note["payload"]["tags"] == ["x", "y"]
    chat = await call(client, idp, "create_chat", title="T", participants='["ana"]')
    assert chat["payload"]["participants"] == ["ana"]
    done = await call(
        client,
        idp,
        "process_task",
        uid=(await call(client, idp, "create_task", title="t"))["uid"],
        action="complete",
        metadata='{"by": "assistant"}',
    )
    assert done["payload"]["status"] == "done"
    task = await call(
        client,
        idp,
        "create_task",
        title="nulls",
        description=None,
        status=None,
        priority=None,
        due_date=None,
        tags=None,
    )  # null for "leave it" (clients with strict tool calling send every field)
    assert task["payload"]["status"] == "todo"
    assert task["payload"]["priority"] == "medium"
    assert task["payload"]["tags"] == []
    note = await call(client, idp, "update_note", uid=note["uid"], title="N", content=None)
    assert note["payload"]["content"] == ""
    page = await call(client, idp, "list_notes", limit=None, cursor=None, include_deleted=None)
    assert note["uid"] in [item["uid"] for item in page["items"]]
    await call(client, idp, "get_note", uid=note["uid"], include_deleted=None)
    health = await call(client, idp, "health_check", verbose=True)  # made up, dropped too
    assert health["status"] == "ok"


async def test_bad_input_is_a_clear_error_not_a_crash(client: Client[Any], idp: IdP) -> None:
    message = await call_error(client, idp, "create_task", title="t", status="someday")
    assert "status" in message
    note = await call(client, idp, "create_note", title="n")
    message = await call_error(client, idp, "process_note", uid=note["uid"], action="explode")
    assert "action" in message


async def test_one_api_request_per_tool_call_on_one_connection(
    client: Client[Any], idp: IdP, api: ApiServer
) -> None:
    note = await call(client, idp, "create_note", title="warm-up")
    api.reset_counters()
    calls = [
        ("get_note", {"uid": note["uid"]}),
        ("list_notes", {"limit": 5}),
        ("patch_note", {"uid": note["uid"], "content": "x"}),
        ("create_task", {"title": "t"}),
        ("process_note", {"uid": note["uid"], "action": "pin"}),
        ("archive_note", {"uid": note["uid"]}),
        ("delete_note", {"uid": note["uid"]}),
    ]
    for tool, arguments in calls:
        await call(client, idp, tool, **arguments)
    assert api.requests == len(calls)
    assert api.connections == 1
    assert all(path.startswith("/v1/") for _, path in api.counter.paths)
    assert len(idp.requests) == 1  # the one token fetched at startup


async def test_health_check_tool_and_healthz(
    client: Client[Any], idp: IdP, mcp: McpHttpServer
) -> None:
    health = await call(client, idp, "health_check")
    assert health["status"] == "ok"
    assert health["auth_mode"] == "auth0"
    assert health["tenant_id"] == "tenant-a"
    assert health["api_url"].startswith("http://127.0.0.1:")
    assert health["token_expires_in_seconds"] > 3000
    assert health["last_refresh_success"] is True
    assert health["failure_count"] == 0

    async with httpx.AsyncClient() as http:
        response = await http.get(f"{mcp.base_url}/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["auth_mode"] == "auth0"


async def test_legacy_protocol_client(mcp: McpHttpServer, idp: IdP) -> None:
    async with Client(mcp.url, mode="legacy") as legacy:
        assert legacy.protocol_version == "2025-11-25"
        note = await call(legacy, idp, "create_note", title="old client")
        got = await call(legacy, idp, "get_note", uid=note["uid"])
    assert got["payload"]["title"] == "old client"


async def test_items_other_clients_stored_with_odd_types_still_read(
    client: Client[Any], api: ApiServer, idp: IdP
) -> None:
    """The API stores any JSON object; a known key of another type must not fail the page."""
    note = await call(client, idp, "create_note", title="typed", tags=["a"])
    signer = TenantSigner(TENANT_ID, SecretStr(TENANT_SECRET))
    auth = {"Authorization": f"Bearer {mint_token(idp)}"}
    async with httpx.AsyncClient(base_url=api.url) as http:
        opened = await http.post("/v1/sync/sessions", headers={**auth, **signer.headers()})
        session = {
            "X-Sync-Session": opened.json()["id"],
            "X-Sync-Epoch": opened.headers["X-Sync-Epoch"],
        }
        patched = await http.patch(
            f"/v1/notes/{note['uid']}",
            json={"tags": "not-a-list", "pinned": "maybe", "colour": "teal"},
            headers={**auth, **signer.headers(), **session},
        )
    assert patched.status_code == 200, patched.text

    item = await call(client, idp, "get_note", uid=note["uid"])
    payload = item["payload"]
    assert payload["title"] == "typed"
    assert payload["colour"] == "teal"
    assert payload["untypedFields"] == {"tags": "not-a-list", "pinned": "maybe"}
    page = await call(client, idp, "list_notes")
    assert note["uid"] in {entry["uid"] for entry in page["items"]}


async def test_a_uid_never_reaches_another_route(client: Client[Any], idp: IdP) -> None:
    """A uid is one path segment: ``/``, ``?`` and dot segments in it are escaped, so a
    prompt-injected uid cannot delete a task through delete_note or wipe everything."""
    note = await call(client, idp, "create_note", title="keep me")
    task = await call(client, idp, "create_task", title="keep me too")
    attempts: list[tuple[str, dict[str, Any]]] = [
        ("delete_note", {"uid": f"../tasks/{task['uid']}"}),
        ("process_note", {"uid": "../sync/wipe?", "action": "pin"}),  # POST /v1/sync/wipe
        ("archive_note", {"uid": f"{note['uid']}/../../tasks/{task['uid']}"}),
        ("get_note", {"uid": f"{note['uid']}?includeDeleted=true"}),
        ("patch_note", {"uid": "..", "title": "x"}),
    ]
    for tool, arguments in attempts:
        await call_error(client, idp, tool, **arguments)  # not found, or not a valid uid
    kept_task = await call(client, idp, "get_task", uid=task["uid"])
    assert kept_task["version"] == 1
    assert kept_task["deleted_at"] is None
    kept_note = await call(client, idp, "get_note", uid=note["uid"])
    assert kept_note["version"] == 1
