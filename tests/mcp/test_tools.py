"""Every tool of every entity through a real MCP client, the real API and the fake IdP.

The entities, their actions and effects come from the contract, so a new entity is tested
here without a change; the arguments are the original MCP server's names.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastmcp import Client
from pydantic import SecretStr

from tests.support.api import ApiServer
from tests.support.idp import IdP
from tests.support.mcp_calls import call, call_error, mint_token
from tests.support.mcp_server import TENANT_ID, TENANT_SECRET, McpHttpServer
from tests.support.tool_calls import CHANGED, create_arguments
from toolbridge_common import contract
from toolbridge_common.contract import Entity
from toolbridge_mcp.auth.tenant import TenantSigner
from toolbridge_mcp.tools import KINDS, tool_name

ITEM_KEYS = {"uid", "version", "updatedAt", "deletedAt", "payload"}


async def test_eight_tools_per_contract_entity_and_health_check(client: Client[Any]) -> None:
    tools = {tool.name: tool for tool in await client.list_tools()}
    expected = {tool_name(kind, entity) for entity in contract.ENTITIES for kind in KINDS}
    assert len(expected) == 8 * len(contract.ENTITIES) == 56
    assert set(tools) == expected | {"health_check"}
    for entity in contract.ENTITIES:
        action = tools[tool_name("process", entity)].input_schema["properties"]["action"]
        assert action.get("enum", [action.get("const")]) == list(entity.actions)
    status = tools["create_task"].input_schema["properties"]["status"]["anyOf"][0]
    assert status["enum"] == ["open", "in_progress", "completed", "archived"]
    note_status = tools["patch_note"].input_schema["properties"]["status"]["anyOf"][0]
    assert note_status["enum"] == ["active", "archived"]
    parent = tools["create_comment"].input_schema["properties"]["parent_type"]
    assert parent["enum"] == ["note", "task", "chat"]
    for name, tool in tools.items():
        assert tool.description, name
        assert tool.output_schema, name
        assert tool.input_schema.get("additionalProperties") is False, name
    item_schema = tools["get_note"].output_schema
    assert item_schema is not None
    assert set(item_schema["properties"]) == ITEM_KEYS
    assert "title" in item_schema["properties"]["payload"]["properties"]  # typed payload
    page_schema = tools["list_notes"].output_schema
    assert page_schema is not None
    assert set(page_schema["properties"]) == {"items", "nextCursor"}
    limit = tools["list_notes"].input_schema["properties"]["limit"]
    assert limit["default"] == contract.MCP_LIST_LIMIT == 100


@pytest.mark.parametrize("entity", contract.ENTITIES, ids=contract.ENTITY_NAMES)
async def test_every_kind_of_tool(
    entity: Entity, client: Client[Any], idp: IdP, api: ApiServer
) -> None:
    def name(kind: str) -> str:
        return tool_name(kind, entity)

    fields = await create_arguments(client, entity)
    client_uid = str(uuid.uuid4())
    created = await call(
        client,
        idp,
        name("create"),
        uid=client_uid,
        additional_fields={"extra": "kept"},
        **fields,
    )
    uid = created["uid"]
    assert uid == client_uid
    assert set(created) == ITEM_KEYS
    assert created["version"] == 1
    assert created["deletedAt"] is None
    assert created["payload"]["extra"] == "kept"

    got = await call(client, idp, name("get"), uid=uid)
    assert got == created

    listed = await call(client, idp, name("list"), limit=1000)
    assert set(listed) == {"items", "nextCursor"}
    assert uid in [item["uid"] for item in listed["items"]]

    changes = CHANGED[entity.name]
    patched = await call(client, idp, name("patch"), uid=uid, updates=changes)
    assert patched["version"] == 2
    for key, value in changes.items():
        assert patched["payload"][key] == value
    assert patched["payload"]["extra"] == "kept"  # the rest was kept

    updated = await call(client, idp, name("update"), uid=uid, if_match=2, **fields)
    assert updated["version"] == 3
    assert "extra" not in updated["payload"]  # a replace keeps only what it was given

    action = next(iter(entity.actions))
    processed = await call(client, idp, name("process"), uid=uid, action=action)
    assert processed["version"] == 4
    for key, value in entity.actions[action].sets.items():
        assert processed["payload"][key] == value

    archived = await call(client, idp, name("archive"), uid=uid)
    assert archived["version"] == 5
    for key, value in entity.archive.sets.items():
        assert archived["payload"][key] == value

    deleted = await call(client, idp, name("delete"), uid=uid)
    assert deleted["uid"] == uid
    assert deleted["deletedAt"] is not None
    assert deleted["version"] == 6

    message = await call_error(client, idp, name("get"), uid=uid)
    assert "deleted" in message
    assert "include_deleted=true" in message
    assert name("get") in message

    tombstone = await call(client, idp, name("get"), uid=uid, include_deleted=True)
    assert tombstone["deletedAt"] is not None

    page = await call(client, idp, name("list"), limit=1000)
    assert uid not in [item["uid"] for item in page["items"]]
    page = await call(client, idp, name("list"), limit=1000, include_deleted=True)
    assert uid in [item["uid"] for item in page["items"]]


async def test_list_pages_with_the_cursor(client: Client[Any], idp: IdP) -> None:
    uids = {(await call(client, idp, "create_chat", title=f"c{i}"))["uid"] for i in range(3)}
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        page = await call(client, idp, "list_chats", limit=2, cursor=cursor)
        assert len(page["items"]) <= 2
        seen += [item["uid"] for item in page["items"]]
        cursor = page["nextCursor"]
        if not page["items"] or cursor is None:
            break
    assert uids <= set(seen)
    assert len(seen) == len(set(seen))


async def test_arguments_as_llm_clients_send_them(client: Client[Any], idp: IdP) -> None:
    note = await call(client, idp, "create_note", title="Sloppy", tags='["a", "b"]')
    assert note["payload"]["tags"] == ["a", "b"]
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
    assert done["payload"]["status"] == "completed"
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
        additional_fields=None,
        uid=None,
    )  # null for "leave it" (clients with strict tool calling send every field)
    assert {"description", "status", "priority", "dueDate", "tags"}.isdisjoint(task["payload"])
    note = await call(
        client, idp, "update_note", uid=note["uid"], title="N", content=None, if_match=None
    )
    assert "content" not in note["payload"]
    page = await call(client, idp, "list_notes", limit=None, cursor=None, include_deleted=None)
    assert note["uid"] in [item["uid"] for item in page["items"]]
    await call(client, idp, "get_note", uid=note["uid"], include_deleted=None)


async def test_bad_input_is_a_clear_error_not_a_crash(client: Client[Any], idp: IdP) -> None:
    message = await call_error(client, idp, "create_task", title="t", status="someday")
    assert "status" in message
    assert "'open'" in message
    assert "'completed'" in message
    assert "someday" not in message  # values are never echoed (they may be secrets)
    assert "title (required)" in message
    note = await call(client, idp, "create_note", title="n")
    message = await call_error(client, idp, "process_note", uid=note["uid"], action="explode")
    assert "action" in message
    assert "'pin'" in message
    message = await call_error(client, idp, "create_note", title="n", additional_fields="{oops")
    assert "Invalid JSON string for additional_fields" in message
    message = await call_error(client, idp, "create_task", title="t", due_date="next friday")
    assert "due_date" in message
    assert "ISO 8601" in message
    message = await call_error(client, idp, "create_note", title="n", uid="not-a-uuid")
    assert "uid" in message
    assert "UUID" in message


async def test_one_api_request_per_tool_call_on_one_connection(
    client: Client[Any], idp: IdP, api: ApiServer
) -> None:
    note = await call(client, idp, "create_note", title="warm-up")
    api.reset_counters()
    calls = [
        ("get_note", {"uid": note["uid"]}),
        ("list_notes", {"limit": 5}),
        ("patch_note", {"uid": note["uid"], "content": "x"}),
        ("update_note", {"uid": note["uid"], "title": "t", "if_match": 2}),
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
        note = await call(legacy, idp, "create_note", title="old client", content="c")
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
    assert kept_task["deletedAt"] is None
    kept_note = await call(client, idp, "get_note", uid=note["uid"])
    assert kept_note["version"] == 1
