"""The original MCP server's tool calls (``erauner12/toolbridge-api`` at 48d7d10, ``mcp/``),
with its argument names and shapes, against this server over streamable HTTP with a real MCP
client: each works as it meant to, or fails with a clear error — nothing is dropped silently.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastmcp import Client

from tests.support.api import ApiServer
from tests.support.idp import IdP
from tests.support.mcp_calls import call, call_error
from tests.support.tool_calls import CHANGED, create_arguments, replace_arguments
from toolbridge_common import contract
from toolbridge_common.contract import Entity
from toolbridge_mcp.tools import tool_name


async def test_notes_as_the_original_called_them(client: Client[Any], idp: IdP) -> None:
    note = await call(
        client,
        idp,
        "create_note",
        title="Meeting",
        content="Agenda",
        tags=["work"],
        additional_fields={"color": "blue"},
    )
    assert note["payload"]["title"] == "Meeting"
    assert note["payload"]["content"] == "Agenda"
    assert note["payload"]["tags"] == ["work"]
    assert note["payload"]["color"] == "blue"
    uid = note["uid"]
    strings = await call(
        client,
        idp,
        "create_note",
        title="JSON strings",
        content="c",
        tags='["a", "b"]',
        additional_fields='{"mood": "calm"}',
    )
    assert strings["payload"]["tags"] == ["a", "b"]
    assert strings["payload"]["mood"] == "calm"

    # The API is shared with other tests: page with the original's arguments until the note
    # (the newest change, so on the last non-empty page) shows up.
    seen: set[str] = set()
    cursor: str | None = None
    while True:
        page = await call(client, idp, "list_notes", limit=10, cursor=cursor, include_deleted=False)
        assert set(page) == {"items", "nextCursor"}
        seen |= {item["uid"] for item in page["items"]}
        if not page["items"]:
            break
        cursor = page["nextCursor"]
    assert uid in seen
    got = await call(client, idp, "get_note", uid=uid, include_deleted=False)
    assert got["payload"]["color"] == "blue"

    updated = await call(
        client,
        idp,
        "update_note",
        uid=uid,
        title="Meeting (moved)",
        content="New agenda",
        if_match=1,
        additional_fields={"color": "red"},
    )
    assert updated["version"] == 2
    assert updated["payload"]["title"] == "Meeting (moved)"
    assert updated["payload"]["color"] == "red"
    assert "tags" not in updated["payload"]  # a replace keeps only what it was given

    patched = await call(
        client, idp, "patch_note", uid=uid, updates={"content": "Patched", "tags": ["x"]}
    )
    assert patched["version"] == 3
    assert patched["payload"]["content"] == "Patched"
    assert patched["payload"]["tags"] == ["x"]
    assert patched["payload"]["title"] == "Meeting (moved)"
    assert patched["payload"]["color"] == "red"
    patched = await call(client, idp, "patch_note", uid=uid, updates='{"title": "From JSON"}')
    assert patched["payload"]["title"] == "From JSON"
    assert patched["payload"]["content"] == "Patched"

    pinned = await call(
        client, idp, "process_note", uid=uid, action="pin", metadata={"by": "assistant"}
    )
    assert pinned["payload"]["pinned"] is True
    archived = await call(client, idp, "process_note", uid=uid, action="archive")
    assert archived["payload"]["status"] == "archived"
    active = await call(client, idp, "process_note", uid=uid, action="unarchive", metadata="{}")
    assert active["payload"]["status"] == "active"
    unpinned = await call(client, idp, "process_note", uid=uid, action="unpin")
    assert unpinned["payload"]["pinned"] is False
    archived = await call(client, idp, "archive_note", uid=uid)
    assert archived["payload"]["status"] == "archived"
    deleted = await call(client, idp, "delete_note", uid=uid)
    assert deleted["deletedAt"] is not None
    page = await call(client, idp, "list_notes", include_deleted=True)
    assert uid in {item["uid"] for item in page["items"]}


async def test_tasks_as_the_original_called_them(client: Client[Any], idp: IdP) -> None:
    task = await call(
        client,
        idp,
        "create_task",
        title="Fix bug #123",
        description="Authentication error in production",
        status="open",
        priority="high",
        due_date="2025-12-31T23:59:59Z",
        tags=["bug"],
        additional_fields={"estimate": 3},
    )
    payload = task["payload"]
    assert payload["description"] == "Authentication error in production"
    assert payload["status"] == "open"
    assert payload["priority"] == "high"
    assert payload["dueDate"] == "2025-12-31T23:59:59Z"
    assert "due_date" not in payload
    assert payload["estimate"] == 3
    uid = task["uid"]

    updated = await call(
        client,
        idp,
        "update_task",
        uid=uid,
        title="Fix bug #123",
        description="Root cause found",
        status="in_progress",
        if_match=1,
        additional_fields='{"estimate": 1}',
    )
    assert updated["payload"]["status"] == "in_progress"
    assert updated["payload"]["description"] == "Root cause found"
    assert updated["payload"]["estimate"] == 1

    for action, status in (("start", "in_progress"), ("complete", "completed"), ("reopen", "open")):
        processed = await call(client, idp, "process_task", uid=uid, action=action)
        assert processed["payload"]["status"] == status
    done = await call(
        client, idp, "process_task", uid=uid, action="complete", metadata='{"by": "me"}'
    )
    assert done["payload"]["status"] == "completed"  # what the Go API and its apps write
    got = await call(client, idp, "get_task", uid=uid)
    assert got["payload"]["status"] == "completed"
    archived = await call(client, idp, "archive_task", uid=uid)
    assert archived["payload"]["status"] == "archived"


@pytest.mark.parametrize("parent_type", ["note", "task", "chat"])
async def test_comments_as_the_original_called_them(
    parent_type: str, client: Client[Any], idp: IdP
) -> None:
    parent_tool = f"create_{parent_type}"
    parent = await call(client, idp, parent_tool, title=f"a {parent_type}")
    comment = await call(
        client,
        idp,
        "create_comment",
        content="Looks good",
        parent_type=parent_type,
        parent_uid=parent["uid"],
        author="ana",
        tags=["review"],
        additional_fields={"lang": "en"},
    )
    payload = comment["payload"]
    assert payload["parentType"] == parent_type
    assert payload["parentUid"] == parent["uid"]
    assert payload["author"] == "ana"
    assert payload["lang"] == "en"
    uid = comment["uid"]

    # The original update_comment had no parent arguments: it passed them in
    # additional_fields (a replace without them loses the parent).
    updated = await call(
        client,
        idp,
        "update_comment",
        uid=uid,
        content="Still good",
        if_match=1,
        additional_fields={"parentType": parent_type, "parentUid": parent["uid"]},
    )
    assert updated["payload"]["content"] == "Still good"
    assert updated["payload"]["parentUid"] == parent["uid"]

    resolved = await call(client, idp, "process_comment", uid=uid, action="resolve")
    assert resolved["payload"]["status"] == "resolved"
    reopened = await call(client, idp, "process_comment", uid=uid, action="reopen")
    assert reopened["payload"]["status"] == "open"


async def test_a_replace_without_the_parent_is_a_clear_error(client: Client[Any], idp: IdP) -> None:
    note = await call(client, idp, "create_note", title="parent")
    comment = await call(
        client,
        idp,
        "create_comment",
        content="c",
        parent_type="note",
        parent_uid=note["uid"],
    )
    message = await call_error(client, idp, "update_comment", uid=comment["uid"], content="x")
    assert "rejected the request" in message
    assert (await call(client, idp, "get_comment", uid=comment["uid"]))["version"] == 1


async def test_chats_and_messages_as_the_original_called_them(
    client: Client[Any], idp: IdP
) -> None:
    chat = await call(
        client,
        idp,
        "create_chat",
        title="Planning",
        description="Q3 planning",
        participants='["ana", "bo"]',
        archived=False,
        tags=["team"],
        additional_fields={"topic": "roadmap"},
    )
    payload = chat["payload"]
    assert payload["description"] == "Q3 planning"
    assert payload["participants"] == ["ana", "bo"]
    assert payload["archived"] is False
    assert payload["topic"] == "roadmap"
    plain = await call(client, idp, "create_chat", title="defaults")
    assert plain["payload"]["archived"] is False  # the original always sent it
    chat_uid = chat["uid"]

    updated = await call(
        client,
        idp,
        "update_chat",
        uid=chat_uid,
        title="Planning (Q3)",
        description="moved",
        if_match=1,
    )
    assert updated["payload"]["title"] == "Planning (Q3)"
    resolved = await call(client, idp, "process_chat", uid=chat_uid, action="resolve")
    assert resolved["payload"]["status"] == "resolved"
    reopened = await call(client, idp, "process_chat", uid=chat_uid, action="reopen")
    assert reopened["payload"]["status"] == "active"
    archived = await call(client, idp, "archive_chat", uid=chat_uid)
    assert archived["payload"]["archived"] is True

    message = await call(
        client,
        idp,
        "create_chat_message",
        chat_uid=chat_uid,
        content="Hello from E2E test!",
        sender="e2e-bot",
        message_type="text",
        tags=["greeting"],
        additional_fields={"lang": "en"},
    )
    payload = message["payload"]
    assert payload["chatUid"] == chat_uid
    assert payload["sender"] == "e2e-bot"
    assert payload["messageType"] == "text"
    assert "message_type" not in payload
    uid = message["uid"]
    updated = await call(
        client,
        idp,
        "update_chat_message",
        uid=uid,
        content="edited",
        if_match=1,
        additional_fields={"chatUid": chat_uid},
    )
    assert updated["payload"]["content"] == "edited"
    read = await call(client, idp, "process_chat_message", uid=uid, action="mark_read")
    assert read["payload"]["read"] is True
    delivered = await call(client, idp, "process_chat_message", uid=uid, action="mark_delivered")
    assert delivered["payload"]["delivered"] is True
    listed = await call(client, idp, "list_chat_messages", limit=100)
    assert uid in {item["uid"] for item in listed["items"]}


async def test_create_keeps_a_client_uid(client: Client[Any], idp: IdP) -> None:
    uid = str(uuid.uuid4())
    note = await call(client, idp, "create_note", uid=uid, title="offline first", content="c")
    assert note["uid"] == uid
    assert note["payload"]["uid"] == uid
    assert (await call(client, idp, "get_note", uid=uid))["payload"]["title"] == "offline first"


@pytest.mark.parametrize("entity", contract.ENTITIES, ids=contract.ENTITY_NAMES)
async def test_a_stale_if_match_is_a_version_conflict_on_every_update_tool(
    entity: Entity, client: Client[Any], idp: IdP, api: ApiServer
) -> None:
    fields = await create_arguments(client, entity)
    created = await call(client, idp, tool_name("create", entity), **fields)
    uid = created["uid"]
    changed = await call(
        client, idp, tool_name("patch", entity), uid=uid, updates=CHANGED[entity.name]
    )
    assert changed["version"] == 2
    replace = replace_arguments(fields)
    api.reset_counters()
    for tool in (tool_name("update", entity), tool_name("patch", entity)):
        arguments = replace if tool.startswith("update") else {"updates": CHANGED[entity.name]}
        message = await call_error(client, idp, tool, uid=uid, if_match=1, **arguments)
        assert "Version conflict" in message, message
        assert "at version 2" in message
        assert "if_match=2" in message
    assert api.requests == 2  # one request each: the 412 carries the current version
    after = await call(client, idp, tool_name("get", entity), uid=uid)
    assert after["version"] == 2  # nothing was overwritten
    fresh = await call(client, idp, tool_name("update", entity), uid=uid, if_match=2, **replace)
    assert fresh["version"] == 3


@pytest.mark.parametrize(
    ("tool", "arguments", "unknown"),
    [
        ("create_note", {"title": "t", "mood": "cheerful"}, "mood"),
        ("update_note", {"title": "t", "if_matched": 1}, "if_matched"),
        ("patch_note", {"update": {"title": "x"}}, "update"),
        ("create_task", {"title": "t", "dueDate": "2025-01-01"}, "dueDate"),
        ("process_task", {"action": "complete", "meta": {}}, "meta"),
        ("list_notes", {"page_size": 5}, "page_size"),
        ("health_check", {"verbose": True}, "verbose"),
    ],
)
async def test_an_unknown_argument_is_an_error_naming_the_valid_ones(
    tool: str,
    arguments: dict[str, Any],
    unknown: str,
    client: Client[Any],
    idp: IdP,
    api: ApiServer,
) -> None:
    if "uid" not in arguments and tool.split("_")[0] in ("update", "patch", "process"):
        owner = "note" if tool.endswith("note") else "task"
        arguments = {
            "uid": (await call(client, idp, f"create_{owner}", title="x"))["uid"]
        } | arguments
    api.reset_counters()
    message = await call_error(client, idp, tool, **arguments)
    assert f"{tool} has no argument {unknown!r}" in message
    tools = {t.name: t for t in await client.list_tools()}
    for name in tools[tool].input_schema.get("properties", {}):
        assert name in message
    assert api.requests == 0  # refused before anything was sent


async def test_if_match_and_if_version_must_agree(client: Client[Any], idp: IdP) -> None:
    note = await call(client, idp, "create_note", title="t")
    message = await call_error(
        client, idp, "patch_note", uid=note["uid"], title="x", if_match=1, if_version=2
    )
    assert "disagree" in message
    same = await call(
        client, idp, "patch_note", uid=note["uid"], title="x", if_match=1, if_version=1
    )
    assert same["version"] == 2


async def test_patch_needs_something_to_change_and_one_value_per_field(
    client: Client[Any], idp: IdP
) -> None:
    note = await call(client, idp, "create_note", title="t")
    message = await call_error(client, idp, "patch_note", uid=note["uid"])
    assert "Nothing to change" in message
    message = await call_error(
        client, idp, "patch_note", uid=note["uid"], title="a", updates={"title": "b"}
    )
    assert "title" in message
    both = await call(
        client, idp, "patch_note", uid=note["uid"], title="a", updates={"content": "b"}
    )
    assert both["payload"]["title"] == "a"
    assert both["payload"]["content"] == "b"
    message = await call_error(client, idp, "patch_note", uid=note["uid"], updates="[1, 2]")
    assert "updates must be a JSON object" in message
    message = await call_error(client, idp, "patch_note", uid=note["uid"], updates="{nope")
    assert "Invalid JSON string for updates" in message
    assert (await call(client, idp, "get_note", uid=note["uid"]))["version"] == 2


async def test_old_status_values_are_refused_naming_the_valid_ones(
    client: Client[Any], idp: IdP
) -> None:
    """The original's hints (todo, done) are not what the Go API and its apps write."""
    for old in ("todo", "done"):
        message = await call_error(client, idp, "create_task", title="t", status=old)
        assert "'open'" in message
        assert "'completed'" in message
