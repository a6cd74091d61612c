"""The tool path's shortcuts give what the long way gave: a result made once (``answer``) is
what FastMCP makes of the model, a compacted output schema accepts and refuses the same
values, the typed item is read from the body in one pass with the lenient payload, and the
API client's pool (httpcore2 under httpx) raises httpx's errors."""

from __future__ import annotations

import asyncio
import json
import math
import socket
from typing import Any

import httpx
import jsonschema  # type: ignore[import-untyped]  # no stubs; only the tests use it
import pytest
from fastmcp.exceptions import ToolError
from fastmcp.tools import Tool
from pydantic import SecretStr

from tests.support.api import ApiServer
from toolbridge_common import contract
from toolbridge_mcp.backend.runtime import Backend
from toolbridge_mcp.backend.transport import PooledTransport
from toolbridge_mcp.config import Settings
from toolbridge_mcp.tools.entities import EntityTools, answer
from toolbridge_mcp.tools.fields import compact_nullable

UID = "0b8c6d3e-5a1f-4c2b-9d7e-3f4a5b6c7d8e"


def _item(payload: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"uid": UID, "version": 3, "updatedAt": "2026-11-27T10:00:00.000Z", **top} | {
        "payload": payload
    }


PAYLOADS: list[dict[str, Any]] = [
    {"title": "t", "content": "c", "tags": ["a"], "pinned": True, "status": "active"},
    {"title": "only a title", "sync": {"version": 3}, "updatedTs": "x", "colour": "teal"},
    {"title": None, "tags": None},  # stored nulls stay null
    {"tags": "not-a-list", "pinned": "maybe", "title": "moved"},  # lenient
    {"pinned": "true", "order": "5", "title": "ünïcødé ✓"},  # lax values as before
    {},
]


def _notes() -> EntityTools:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, go_api_base_url="http://api.test", jwt_token=SecretStr("t")
    )
    return EntityTools(contract.entity("notes"), Backend(settings))


def _fastmcp_result(tool_returns: Any, value: Any) -> tuple[str, Any]:
    """What FastMCP makes of ``value`` returned by a tool annotated ``tool_returns``."""

    async def fn() -> Any:
        return value

    fn.__annotations__ = {"return": tool_returns}
    result = Tool.from_function(fn, name="t").convert_result(value)
    text = result.content[0].text  # type: ignore[union-attr]
    return text, result.structured_content


@pytest.mark.parametrize("payload", PAYLOADS)
def test_answer_is_what_fastmcp_makes_of_the_model(payload: dict[str, Any]) -> None:
    notes = _notes()
    item = notes.item.model_validate_json(json.dumps(_item(payload, deletedAt=None)))
    page = notes.page.model_validate_json(
        json.dumps({"items": [_item(p) for p in PAYLOADS], "nextCursor": "c"})
    )
    for model, value in ((notes.item, item), (notes.page, page)):
        made = answer(value)
        text, structured = _fastmcp_result(model, value)
        assert made.structured_content == structured
        assert made.content[0].text == text  # type: ignore[union-attr]
        assert json.loads(text) == structured


def test_a_non_finite_number_takes_fastmcps_path() -> None:
    notes = _notes()
    item = notes.item.model_validate({**_item({"title": "t"}), "payload": {"order": math.inf}})
    with pytest.raises(ToolError, match="non-finite"):
        answer(item)


def test_the_payload_is_read_leniently_in_one_pass() -> None:
    notes = _notes()
    item = notes.item.model_validate_json(json.dumps(_item(PAYLOADS[3])))
    dumped = item.model_dump()
    assert dumped["payload"] == {
        "title": "moved",
        "untypedFields": {"pinned": "maybe", "tags": "not-a-list"},
    }
    lax = notes.item.model_validate_json(json.dumps(_item(PAYLOADS[4]))).model_dump()
    # a note has no typed "order": kept as stored
    assert lax["payload"] == {"pinned": True, "order": "5", "title": "ünïcødé ✓"}


def test_compacted_output_schemas_accept_and_refuse_the_same_values() -> None:
    notes = _notes()
    tools = {tool.name: tool for tool in notes.tools()}
    samples: list[Any] = [_item(p) for p in PAYLOADS] + [
        _item({"title": 1}),
        _item({"tags": [1]}),
        _item({"pinned": "yes"}),
        {**_item({}), "version": "3"},
        {**_item({}), "deletedAt": 5},
        {"uid": UID},
    ]
    samples += [{"items": [s], "nextCursor": None} for s in samples[:3]]
    for name in ("get_note", "list_notes"):
        compacted = tools[name].output_schema
        assert compacted is not None
        assert "anyOf" not in json.dumps(compacted["properties"].get("deletedAt", {}))
        original = compacted_free(notes, name)
        for sample in samples:
            same = _valid(compacted, sample) == _valid(original, sample)
            assert same, (name, sample)


def compacted_free(notes: EntityTools, name: str) -> dict[str, Any]:
    """The schema FastMCP generates for the tool's result model, before compaction."""
    model = notes.page if name.startswith("list") else notes.item

    async def fn() -> Any:
        return None

    fn.__annotations__ = {"return": model}
    schema = Tool.from_function(fn, name="t").output_schema
    assert schema is not None
    assert compact_nullable(schema) == dict(
        {tool.name: tool for tool in notes.tools()}[name].output_schema or {}
    )
    return schema


def _valid(schema: dict[str, Any], value: Any) -> bool:
    valid: bool = jsonschema.Draft202012Validator(schema).is_valid(value)
    return valid


async def test_the_pool_raises_httpx_errors() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with httpx.AsyncClient(transport=PooledTransport()) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/")

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(transport=PooledTransport(), timeout=0.2) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get(f"http://127.0.0.1:{port}/")
    finally:
        server.close()


async def test_the_pool_keeps_connections_and_streams_bodies(api_server: ApiServer) -> None:
    api_server.reset_counters()
    # generous timeout: the first /openapi.json builds the schema (0.3 s idle, 8 s seen under load)
    async with httpx.AsyncClient(
        base_url=api_server.url, transport=PooledTransport(), timeout=60
    ) as http:
        for _ in range(5):
            response = await http.get("/healthz")
            assert response.status_code == 200
            assert response.json()
        async with http.stream("GET", "/openapi.json") as streamed:
            body = b"".join([part async for part in streamed.aiter_bytes()])
        assert json.loads(body)["paths"]
    assert api_server.connections == 1
