"""Tool annotations tell the truth: a tool that says it is idempotent leaves the item as the
first call left it when called again with the same arguments (MCP ``idempotentHint``)."""

from __future__ import annotations

from typing import Any

from fastmcp import Client

from tests.conftest import LogCapture
from tests.support.idp import IdP
from tests.support.mcp_calls import call, call_error

SAME_ARGUMENTS: dict[str, dict[str, Any]] = {
    "update_note": {"title": "again", "content": "same"},
    "patch_note": {"updates": {"title": "again"}},
    "archive_note": {},
    "process_note": {"action": "pin"},
}


async def test_idempotent_hints_match_what_a_repeat_does(client: Client[Any], idp: IdP) -> None:
    tools = {tool.name: tool for tool in await client.list_tools()}
    for name, arguments in SAME_ARGUMENTS.items():
        note = await call(client, idp, "create_note", title="t", content="c")
        first = await call(client, idp, name, uid=note["uid"], **arguments)
        second = await call(client, idp, name, uid=note["uid"], **arguments)
        repeat_changes_nothing = second["version"] == first["version"]
        hints = tools[name].annotations
        assert hints is not None, name
        assert bool(hints.idempotent_hint) == repeat_changes_nothing, name
    # A second delete is refused (410), so delete does not claim to be idempotent either.
    note = await call(client, idp, "create_note", title="t", content="c")
    await call(client, idp, "delete_note", uid=note["uid"])
    assert "deleted" in (await call_error(client, idp, "delete_note", uid=note["uid"])).lower()
    delete_hints = tools["delete_note"].annotations
    assert delete_hints is not None
    assert not delete_hints.idempotent_hint
    for name in ("list_notes", "get_note"):
        read_hints = tools[name].annotations
        assert read_hints is not None
        assert read_hints.read_only_hint, name


async def test_an_ordinary_version_conflict_is_not_logged_as_an_error(
    client: Client[Any], idp: IdP, logs: LogCapture
) -> None:
    note = await call(client, idp, "create_note", title="t", content="c")
    await call(client, idp, "update_note", uid=note["uid"], title="newer", content="c")
    text = await call_error(
        client, idp, "update_note", uid=note["uid"], title="stale", content="c", if_match=1
    )
    assert "version" in text.lower()
    assert not [line for line in logs.lines if line.startswith(("ERROR", "CRITICAL"))]
