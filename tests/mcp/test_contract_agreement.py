"""The API and the MCP tools serve the same entities: both are generated from the contract,
and this fails as soon as either side leaves one out."""

from __future__ import annotations

from typing import Any

import httpx
from fastmcp import Client

from tests.support.api import ApiServer
from toolbridge_common import contract
from toolbridge_mcp.tools import KINDS, tool_name


async def test_sync_info_and_the_mcp_tools_name_the_same_entities(
    client: Client[Any], api: ApiServer
) -> None:
    async with httpx.AsyncClient(base_url=api.url) as http:
        response = await http.get("/v1/sync/info")
    assert response.status_code == 200, response.text
    served = set(response.json()["entities"])

    tools = {tool.name for tool in await client.list_tools()}
    listed = {name.removeprefix("list_") for name in tools if name.startswith("list_")}
    complete = {
        entity.name
        for entity in contract.ENTITIES
        if all(tool_name(kind, entity) in tools for kind in KINDS)
    }

    assert served == listed, "the API's /v1/sync/info and the MCP list_ tools differ"
    assert listed == complete, "an entity lacks some of its eight tools"
    assert served == set(contract.ENTITY_NAMES), "the API and the contract differ"
