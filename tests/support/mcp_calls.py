"""Calling MCP tools in tests: every result a tool gives is checked for secrets and tokens
before the test looks at it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from tests.conftest import AUDIENCE, CLIENT_ID, CLIENT_SECRET
from tests.support.idp import IdP
from tests.support.mcp_server import SECRETS

if TYPE_CHECKING:  # fastmcp itself is imported by mcp_server, after its settings are set
    from fastmcp import Client
    from fastmcp.client.client import CallToolResult


def mint_token(idp: IdP, client_id: str = CLIENT_ID, secret: str = CLIENT_SECRET) -> str:
    """A real access token from the IdP, as a static or per-user token would be."""
    return idp.fetch_token(client_id, secret, AUDIENCE)


def result_text(result: CallToolResult) -> str:
    """Everything a tool result shows the model, for leak checks and error messages."""
    parts = [getattr(block, "text", "") for block in result.content]
    if result.structured_content is not None:
        parts.append(json.dumps(result.structured_content))
    return "\n".join(parts)


def assert_no_secrets(text: str, idp: IdP) -> None:
    leaked = [s for s in (*SECRETS, *idp.issued) if s in text]
    assert not leaked, f"{len(leaked)} secret(s) or token(s) in a tool result"


async def call(client: Client[Any], idp: IdP, tool: str, **arguments: Any) -> dict[str, Any]:
    """Calls a tool that must succeed; returns its structured result."""
    result = await client.call_tool(tool, arguments, raise_on_error=False)
    text = result_text(result)
    assert_no_secrets(text, idp)
    assert not result.is_error, f"{tool} failed: {text}"
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def call_error(client: Client[Any], idp: IdP, tool: str, **arguments: Any) -> str:
    """Calls a tool that must fail with a tool error; returns the message."""
    result = await client.call_tool(tool, arguments, raise_on_error=False)
    text = result_text(result)
    assert_no_secrets(text, idp)
    assert result.is_error, f"{tool} unexpectedly succeeded: {text}"
    return text
