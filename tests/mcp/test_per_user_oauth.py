"""Per-user mode with OAuth protection (``TOOLBRIDGE_OAUTH_ISSUER``): RFC 9728 metadata, 401
with ``WWW-Authenticate`` for a missing or bad token before anything reaches the API, and
verified callers acting as themselves at the real API. Real HTTP, real MCP client."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport
from mcp.shared.exceptions import MCPError

from tests.conftest import AUDIENCE, CLIENT_ID, CLIENT_SECRET, NASTY_SECRET, LogCapture
from tests.mcp.conftest import (
    TENANT_ID,
    TENANT_SECRET,
    McpHttpServer,
    ServerFactory,
    assert_no_secrets,
    call,
    call_error,
    cli_command,
    mint_token,
    server_env,
)
from tests.support.api import ApiServer
from tests.support.idp import IdP, Reply
from toolbridge_api.security import Principal

PUBLIC_URL = "https://mcp.toolbridge.test"
METADATA_PATH = "/.well-known/oauth-protected-resource/mcp"
OTHER_AUDIENCE = "https://other-api.toolbridge.test"


def protected(start_mcp: ServerFactory, idp: IdP, **overrides: Any) -> McpHttpServer:
    """A per-user server that verifies callers' tokens against the fake IdP."""
    settings = {
        "oauth_issuer": f"{idp.base_url}/",
        "oauth_audience": AUDIENCE,
        "public_url": PUBLIC_URL,
    }
    return start_mcp("passthrough", **(settings | overrides))


async def post_tool_call(
    server: McpHttpServer,
    authorization: tuple[str, ...] = (),
    tool: str = "list_notes",
    **arguments: Any,
) -> httpx.Response:
    """One raw sessionless (2026-07-28) ``tools/call``, as the MCP client sends it, with
    ``authorization`` as that many ``Authorization`` headers."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "raw-http", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments, "_meta": meta},
    }
    headers = [
        ("Accept", "application/json, text/event-stream"),
        ("Content-Type", "application/json"),
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", "tools/call"),
        ("Mcp-Name", tool),
        *(("Authorization", value) for value in authorization),
    ]
    async with httpx.AsyncClient() as http:
        return await http.post(server.url, content=json.dumps(body), headers=headers)


def challenge_metadata_url(response: httpx.Response) -> str:
    header = response.headers["WWW-Authenticate"]
    assert header.startswith("Bearer ")
    marker = 'resource_metadata="'
    assert marker in header, header
    return header.split(marker, 1)[1].split('"', 1)[0]


async def refused(server: McpHttpServer, token: str | None, idp: IdP) -> None:
    """The real MCP client cannot even connect with ``token`` (or without one)."""
    with pytest.raises(MCPError):
        async with Client(server.url, auth=token) as client:
            await call(client, idp, "list_notes")


@pytest.fixture(scope="module")
def foreign_idp() -> Iterator[IdP]:
    """Another issuer with its own keys, minting for the same audience."""
    with IdP(clients={CLIENT_ID: CLIENT_SECRET}) as other:
        yield other


def test_metadata_names_the_issuer_and_this_resource(idp: IdP, start_mcp: ServerFactory) -> None:
    server = protected(start_mcp, idp)
    response = httpx.get(f"{server.base_url}{METADATA_PATH}")
    assert response.status_code == 200
    metadata = response.json()
    assert metadata["resource"] == f"{PUBLIC_URL}/mcp"
    assert metadata["authorization_servers"] == [f"{idp.base_url}/"]
    assert metadata["bearer_methods_supported"] == ["header"]
    assert metadata["resource_name"] == "ToolBridge"


async def test_no_token_gets_401_pointing_at_the_metadata(
    idp: IdP, api: ApiServer, start_mcp: ServerFactory
) -> None:
    server = protected(start_mcp, idp)
    api.reset_counters()
    response = await post_tool_call(server)
    assert response.status_code == 401
    metadata_url = challenge_metadata_url(response)
    assert metadata_url == f"{PUBLIC_URL}{METADATA_PATH}"
    assert "error=" not in response.headers["WWW-Authenticate"]  # RFC 6750 §3.1: no token
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        followed = await http.get(urlsplit(metadata_url).path)
        liveness = await http.get("/healthz")  # Fly's probe carries no token
    assert followed.json()["resource"] == f"{PUBLIC_URL}/mcp"
    await refused(server, None, idp)
    assert api.requests == 0
    assert liveness.status_code == 200
    assert liveness.json()["auth_mode"] == "passthrough"


async def test_token_for_another_audience_is_refused_before_the_api(
    idp: IdP, api: ApiServer, start_mcp: ServerFactory
) -> None:
    """The token is one the API itself accepts; the MCP server expects another audience."""
    server = protected(start_mcp, idp, oauth_audience=OTHER_AUDIENCE)
    token = mint_token(idp)
    api.reset_counters()
    response = await post_tool_call(server, (f"Bearer {token}",))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert challenge_metadata_url(response) == f"{PUBLIC_URL}{METADATA_PATH}"
    assert token not in response.text
    await refused(server, token, idp)
    assert api.requests == 0


@pytest.mark.parametrize("kind", ["foreign issuer", "tampered", "expired", "not a JWT"])
async def test_bad_tokens_are_refused_before_the_api(
    kind: str,
    idp: IdP,
    api: ApiServer,
    start_mcp: ServerFactory,
    foreign_idp: IdP,
    logs: LogCapture,
) -> None:
    server = protected(start_mcp, idp)
    if kind == "foreign issuer":
        token = mint_token(foreign_idp)
    elif kind == "tampered":
        header, claims, signature = mint_token(idp).split(".")
        token = f"{header}.{claims}.{signature[::-1]}"
    elif kind == "expired":
        idp.script(Reply(expires_in=-120))
        token = mint_token(idp)
    else:
        token = "opaque-token-value"
    api.reset_counters()
    response = await post_tool_call(server, (f"Bearer {token}",))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    await refused(server, token, idp)
    assert api.requests == 0
    assert token not in logs.text()  # the shared check knows only tokens of the main IdP


async def test_unreachable_jwks_refuses_tokens_instead_of_trusting_them(
    idp: IdP, api: ApiServer, start_mcp: ServerFactory
) -> None:
    """An explicit TOOLBRIDGE_OAUTH_JWKS_URL replaces the issuer's default location."""
    server = protected(start_mcp, idp, oauth_jwks_url=f"{idp.base_url}/no-keys-here.json")
    token = mint_token(idp)
    api.reset_counters()
    response = await post_tool_call(server, (f"Bearer {token}",))
    assert response.status_code == 401
    assert api.requests == 0


async def test_verified_callers_act_as_themselves_at_the_api(
    idp: IdP, api: ApiServer, start_mcp: ServerFactory
) -> None:
    server = protected(start_mcp, idp)
    alice = mint_token(idp)
    bob = mint_token(idp, "nasty-client", NASTY_SECRET)
    tag = uuid.uuid4().hex
    async with (
        Client(server.url, auth=alice) as as_alice,
        Client(server.url, auth=bob, mode="legacy") as as_bob,
    ):
        assert as_bob.protocol_version == "2025-11-25"
        mine = await call(as_alice, idp, "create_note", title=f"alice's {tag}")
        theirs = await call(as_bob, idp, "create_note", title=f"bob's {tag}")
        alice_sees = await call(as_alice, idp, "list_notes", limit=1000)
        message = await call_error(as_bob, idp, "get_note", uid=mine["uid"])
        health = await call(as_alice, idp, "health_check")
    assert [n["uid"] for n in alice_sees["items"]].count(theirs["uid"]) == 0
    assert mine["uid"] in [n["uid"] for n in alice_sees["items"]]
    assert "not found" in message
    assert health["auth_mode"] == "passthrough"

    alice_has, bob_has = titles(api, f"{CLIENT_ID}@clients"), titles(api, "nasty-client@clients")
    assert f"alice's {tag}" in alice_has
    assert f"alice's {tag}" not in bob_has
    assert f"bob's {tag}" in bob_has
    assert f"bob's {tag}" not in alice_has


async def test_a_second_authorization_header_is_not_what_gets_forwarded(
    idp: IdP, api: ApiServer, start_mcp: ServerFactory
) -> None:
    """The endpoint verifies the first header; the API must get that one, not another."""
    server = protected(start_mcp, idp)
    alice = mint_token(idp)
    bob = mint_token(idp, "nasty-client", NASTY_SECRET)
    title = f"whose? {uuid.uuid4().hex}"
    response = await post_tool_call(
        server, (f"Bearer {alice}", f"Bearer {bob}"), "create_note", title=title
    )
    assert response.status_code == 200
    assert '"isError":false' in response.text.replace(" ", "")
    assert title in titles(api, f"{CLIENT_ID}@clients")
    assert title not in titles(api, "nasty-client@clients")


def titles(api: ApiServer, user: str) -> list[str]:
    """The titles of a user's notes, as the API stored them."""
    page = api.run(
        lambda store: store.list_items(
            Principal(TENANT_ID, user), "notes", after=None, limit=1000, include_deleted=True
        )
    )
    return [str(item.payload.get("title")) for item in page]


def oauth_env(idp: IdP, api: ApiServer, **variables: str) -> dict[str, str]:
    """A per-user server's environment, as an operator would write it."""
    return server_env(
        TOOLBRIDGE_GO_API_BASE_URL=api.url,
        TOOLBRIDGE_TENANT_ID=TENANT_ID,
        TOOLBRIDGE_TENANT_HEADER_SECRET=TENANT_SECRET,
        TOOLBRIDGE_OAUTH_ISSUER=f"{idp.base_url}/",
        TOOLBRIDGE_OAUTH_AUDIENCE=AUDIENCE,
        **variables,
    )


async def test_served_from_the_environment_on_its_default_public_url(
    idp: IdP, api: ApiServer, tmp_path: Path
) -> None:
    """No TOOLBRIDGE_PUBLIC_URL: the challenge names http://{host}:{port}, reachable as is."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    stderr = tmp_path / "stderr.log"
    with stderr.open("w") as log:
        process = await asyncio.create_subprocess_exec(
            *cli_command(),
            "serve",
            env=oauth_env(idp, api, TOOLBRIDGE_PORT=str(port)),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            async with httpx.AsyncClient() as http:
                for _ in range(600):
                    assert process.returncode is None, stderr.read_text()
                    try:
                        challenge = await http.post(f"{base}/mcp", json={})
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.05)
                assert challenge.status_code == 401
                metadata_url = challenge_metadata_url(challenge)
                assert metadata_url == f"{base}{METADATA_PATH}"
                metadata = (await http.get(metadata_url)).json()
            assert metadata["resource"] == f"{base}/mcp"
            assert metadata["authorization_servers"] == [f"{idp.base_url}/"]
            async with Client(f"{base}/mcp", auth=mint_token(idp)) as client:
                note = await call(client, idp, "create_note", title="verified, over http")
            assert note["version"] == 1
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), timeout=10)
    output = stderr.read_text()
    assert "MCP callers must present tokens issued by" in output
    assert_no_secrets(output, idp)


async def test_stdio_is_unaffected(idp: IdP, api: ApiServer, tmp_path: Path) -> None:
    """stdio carries no token to verify: the server starts and says what to configure."""
    command = cli_command()
    transport = StdioTransport(
        command=command[0],
        args=[*command[1:], "serve", "--transport", "stdio"],
        env=oauth_env(idp, api),
        cwd=str(tmp_path),
        keep_alive=False,
        log_file=tmp_path / "stderr.log",
    )
    async with Client(transport) as client:
        message = await call_error(client, idp, "list_notes")
    assert "Missing authentication" in message
    assert "stdio" in message
