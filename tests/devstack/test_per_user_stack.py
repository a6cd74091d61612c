"""``toolbridge-mcp dev --per-user`` as a user runs it: three real processes, and the MCP SDK's
own OAuth client (``OAuthClientProvider``) signing two users in over HTTP — discovery,
dynamic registration, authorization code with PKCE at the dev issuer's login page (scripted
``prompt=none&login_hint``) — then calling tools, each seeing only their own data; the MCP
server exchanges their tokens at the API, which signs with its own key from the state folder.
"""

from __future__ import annotations

import re
import signal
import stat
from pathlib import Path
from typing import Any

import httpx
from fastmcp import Client

from tests.devstack.test_dev_command import JWT, DevCommand, dev_command
from tests.support.mcp_calls import result_text
from tests.support.per_user import oauth_client

__all__ = ["dev_command"]  # the fixture, shared with the stack's other tests


async def _ok(client: Client[Any], tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments, raise_on_error=False)
    assert not result.is_error, f"{tool} failed: {result_text(result)}"
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def test_mcp_clients_sign_their_users_in_and_each_sees_their_own_data(
    tmp_path: Path, dev_command: list[DevCommand]
) -> None:
    dev = DevCommand(tmp_path, "--per-user", "--seed-demo").start()
    dev_command.append(dev)
    dev.wait_up()
    text = dev.text
    assert "Demo data: added 3 notes and 3 tasks" in text
    assert "npx @modelcontextprotocol/inspector" in text
    assert f"claude mcp add --transport http toolbridge-dev {dev.mcp_url}" in text
    assert '"mcp-remote", "' + dev.mcp_url in text
    assert "users sign in at the dev issuer" in text

    async with httpx.AsyncClient() as http:
        anonymous = await http.post(dev.mcp_url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        metadata_url = re.search(
            r'resource_metadata="([^"]+)"', anonymous.headers["www-authenticate"]
        )
        assert metadata_url is not None
        metadata = (await http.get(metadata_url.group(1))).json()
    assert anonymous.status_code == 401
    assert metadata["resource"] == dev.mcp_url
    assert metadata["authorization_servers"] == [f"http://127.0.0.1:{dev.issuer_port}/"]

    alice_auth, alice_storage, alice_sign_in = oauth_client(dev.mcp_url, "alice")
    bob_auth, _, _ = oauth_client(dev.mcp_url, "bob")
    async with Client(dev.mcp_url, auth=bob_auth) as bob:
        assert (await _ok(bob, "list_notes"))["items"] == []
        mine = await _ok(bob, "create_note", title="bob's")
    async with Client(dev.mcp_url, auth=alice_auth) as alice:
        titles = {n["payload"]["title"] for n in (await _ok(alice, "list_notes"))["items"]}
        health = await _ok(alice, "health_check")
    assert "Welcome to ToolBridge" in titles  # the demo data is alice's
    assert mine["payload"]["title"] not in titles
    assert health["auth_mode"] == "token_exchange"
    assert len(alice_sign_in.opened) == 1
    assert alice_storage.tokens is not None
    assert alice_storage.tokens.access_token not in dev.text

    key = tmp_path / ".toolbridge" / "api-signing-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert any("Token exchange: API token for 'bob'" in line for line in dev.lines)
    assert dev.stop(signal.SIGINT) == 0
    assert not JWT.search(dev.text), "a token reached the output"
