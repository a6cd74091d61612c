"""Arguments for the MCP entity tools, in the original MCP server's names, per contract entity."""

from __future__ import annotations

from typing import Any

from fastmcp import Client

from toolbridge_common.contract import Entity

CHANGED: dict[str, dict[str, Any]] = {
    "notes": {"title": "Groceries!"},
    "tasks": {"status": "in_progress"},
    "comments": {"content": "Changed my mind"},
    "chats": {"title": "Replanning"},
    "chat_messages": {"content": "hello again"},
    "task_lists": {"title": "Weekend errands"},
    "task_list_categories": {"name": "House"},
}
"""A patch (``updates``, payload keys) for each entity."""


async def _create(client: Client[Any], tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments, raise_on_error=False)
    assert not result.is_error, f"{tool} failed: {result.content}"
    assert isinstance(result.structured_content, dict)
    uid: str = result.structured_content["uid"]
    return uid


async def create_arguments(client: Client[Any], entity: Entity) -> dict[str, Any]:
    """Create arguments for one entity (its parent created first where it needs one)."""
    if entity.name == "notes":
        return {"title": "Groceries", "content": "milk, eggs", "tags": ["home"]}
    if entity.name == "tasks":
        return {"title": "File taxes", "priority": "high", "due_date": "2026-04-15"}
    if entity.name == "comments":
        note = await _create(client, "create_note", title="Parent", content="p")
        return {"content": "Looks good", "parent_type": "note", "parent_uid": note, "author": "ana"}
    if entity.name == "chats":
        return {"title": "Planning", "participants": ["ana", "bo"], "description": "Q3"}
    if entity.name == "chat_messages":
        chat = await _create(client, "create_chat", title="Parent chat")
        return {"chat_uid": chat, "content": "hello", "sender": "ana"}
    if entity.name == "task_lists":
        return {"title": "Errands", "color": "#ff8800"}
    if entity.name == "task_list_categories":
        return {"name": "Home", "order": 2}
    raise AssertionError(f"no create arguments for {entity.name}: add them here")


PARENT_KEYS = {"parent_type": "parentType", "parent_uid": "parentUid", "chat_uid": "chatUid"}


def replace_arguments(fields: dict[str, Any]) -> dict[str, Any]:
    """An update call as the original made it: the parent of a comment or chat message in
    ``additional_fields`` (its update tools had no parent arguments)."""
    parent = {PARENT_KEYS[k]: v for k, v in fields.items() if k in PARENT_KEYS}
    replace = {k: v for k, v in fields.items() if k not in PARENT_KEYS}
    if parent:
        replace["additional_fields"] = parent
    return replace
