"""The MCP server as an OAuth resource server in per-user mode (the MCP authorization spec):
RFC 9728 metadata naming this resource, its authorization server and the required scope; only
tokens of that issuer issued for this server's own URL get in — a missing one is a 401 with
``WWW-Authenticate`` pointing at the metadata, a token for another audience, an expired one,
one of another issuer or a forged one a 401 ``invalid_token``, one without the required scope
a 403 ``insufficient_scope`` — all before anything reaches the API. Real HTTP, real MCP
client. Then the legacy passthrough, only when explicitly enabled and warned about."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport
from mcp.shared.exceptions import MCPError

from tests.conftest import AUDIENCE, CLIENT_ID, NASTY_SECRET, LogCapture
from tests.support.api import ApiServer
from tests.support.idp import IdP
from tests.support.jwks import leaked
from tests.support.mcp_calls import assert_no_secrets, call, call_error, mint_token
from tests.support.mcp_server import (
    TENANT_ID,
    TENANT_SECRET,
    McpHttpServer,
    ServerFactory,
    cli_command,
    server_env,
)
from tests.support.per_user import (
    API_AUDIENCE,
    SCOPE,
    PerUserStack,
    start_stack,
)
from toolbridge_api.security import Principal
from toolbridge_common.signing_keys import SigningKey

METADATA_PATH = "/.well-known/oauth-protected-resource/mcp"
PUBLIC_URL = "https://mcp.toolbridge.test"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PerUserStack]:
    yield from start_stack(tmp_path_factory.mktemp("resource-server"))


@pytest.fixture
def fresh(stack: PerUserStack, logs: LogCapture) -> Iterator[PerUserStack]:
    stack.seen.clear()
    stack.api.reset_counters()
    stack.tokens.clear()
    yield stack
    found = leaked(logs.text(), stack.tokens)
    assert not found, f"{len(found)} token(s) appeared in the logs"


async def post_tool_call(
    url: str, authorization: tuple[str, ...] = (), tool: str = "list_notes", **arguments: Any
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
        return await http.post(url, content=json.dumps(body), headers=headers)


def challenge(response: httpx.Response) -> dict[str, str]:
    """The ``WWW-Authenticate: Bearer`` parameters."""
    header = response.headers["WWW-Authenticate"]
    assert header.startswith("Bearer")
    params: dict[str, str] = {}
    for part in header.removeprefix("Bearer").split('",'):
        name, _, value = part.strip().partition("=")
        params[name] = value.strip('"')
    return params


async def refused(url: str, token: str | None) -> None:
    """The real MCP client cannot even connect with ``token`` (or without one)."""
    with pytest.raises(MCPError):
        async with Client(url, auth=token) as client:
            await client.call_tool("list_notes", {})


def test_metadata_names_this_resource_its_issuer_and_the_scope(fresh: PerUserStack) -> None:
    response = httpx.get(f"{fresh.mcp.base_url}{METADATA_PATH}")
    assert response.status_code == 200
    metadata = response.json()
    assert metadata["resource"] == fresh.resource
    assert metadata["authorization_servers"] == [fresh.issuer.issuer_url]
    assert metadata["scopes_supported"] == [SCOPE]
    assert metadata["bearer_methods_supported"] == ["header"]
    assert metadata["resource_name"] == "ToolBridge"


async def test_no_token_gets_401_pointing_at_the_metadata(fresh: PerUserStack) -> None:
    response = await post_tool_call(fresh.resource)
    assert response.status_code == 401
    params = challenge(response)
    assert params["resource_metadata"] == f"{fresh.mcp.base_url}{METADATA_PATH}"
    assert params["scope"] == SCOPE  # what to ask the authorization server for
    assert "error" not in params  # RFC 6750 §3.1: no token, no error code
    async with httpx.AsyncClient(base_url=fresh.mcp.base_url) as http:
        followed = await http.get(urlsplit(params["resource_metadata"]).path)
        liveness = await http.get("/healthz")  # Fly's probe carries no token
    assert followed.json()["resource"] == fresh.resource
    await refused(fresh.resource, None)
    assert fresh.seen == []
    assert liveness.status_code == 200
    assert liveness.json()["auth_mode"] == "token_exchange"


@pytest.mark.parametrize(
    "kind",
    [
        "the API's audience",
        "another MCP server's audience",
        "expired",
        "another issuer",
        "the issuer's name, another key",
        "tampered",
        "not a JWT",
    ],
)
async def test_tokens_not_issued_for_this_server_get_401_before_the_api(
    fresh: PerUserStack, kind: str
) -> None:
    other_key = SigningKey.generate()
    token = {  # type: ignore[no-untyped-call]
        "the API's audience": lambda: fresh.mint(audience=API_AUDIENCE),
        "another MCP server's audience": lambda: fresh.mint(audience="https://other.test/mcp"),
        "expired": lambda: fresh.mint(lifetime=-120),
        "another issuer": lambda: fresh.mint(key=other_key, issuer="https://other-idp.test/"),
        "the issuer's name, another key": lambda: fresh.mint(key=other_key),
        "tampered": lambda: _tampered(fresh.mint()),
        "not a JWT": lambda: "opaque-token-value",
    }[kind]()
    response = await post_tool_call(fresh.resource, (f"Bearer {token}",))
    assert response.status_code == 401
    params = challenge(response)
    assert params["error"] == "invalid_token"
    assert params["resource_metadata"] == f"{fresh.mcp.base_url}{METADATA_PATH}"
    assert token not in response.text
    await refused(fresh.resource, token)
    assert fresh.seen == []  # neither an exchange nor a call reached the API


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"exp": None}, "no exp"),
        ({"sub": None}, "no sub"),
        ({"sub": ""}, "empty sub"),
        ({"iat": 3600}, "iat an hour ahead"),
    ],
)
async def test_tokens_without_exp_or_sub_or_issued_in_the_future_get_401(
    fresh: PerUserStack, change: dict[str, int | None], kind: str
) -> None:
    """Issue 12: FastMCP's verifier takes a token without exp as never expiring and leaves
    sub and iat unchecked; the server's verifier refuses them."""
    claims = jwt.decode(fresh.mint(), options={"verify_signature": False})
    for name, value in change.items():
        if value is None:
            claims.pop(name)
        elif name == "iat":
            claims[name] = int(time.time()) + value
        else:
            claims[name] = value
    assert fresh.issuer.key is not None
    token = fresh.issuer.key.sign(claims)
    response = await post_tool_call(fresh.resource, (f"Bearer {token}",))
    assert response.status_code == 401, kind
    assert challenge(response)["error"] == "invalid_token"
    assert fresh.seen == []
    ok = await post_tool_call(fresh.resource, (f"Bearer {fresh.mint()}",))
    assert ok.status_code == 200


def _tampered(token: str) -> str:
    header, claims, signature = token.split(".")
    return f"{header}.{claims}.{signature[::-1]}"


async def test_a_token_without_the_required_scope_gets_403_insufficient_scope(
    fresh: PerUserStack,
) -> None:
    token = fresh.mint(scope="offline_access")
    response = await post_tool_call(fresh.resource, (f"Bearer {token}",))
    assert response.status_code == 403
    params = challenge(response)
    assert params["error"] == "insufficient_scope"
    assert params["scope"] == SCOPE
    assert fresh.seen == []
    with_scope = await post_tool_call(fresh.resource, (f"Bearer {fresh.mint()}",))
    assert with_scope.status_code == 200


async def test_an_unreachable_jwks_refuses_tokens_instead_of_trusting_them(
    fresh: PerUserStack, tmp_path: Path
) -> None:
    """An explicit TOOLBRIDGE_OAUTH_JWKS_URL replaces the issuer's default location."""
    from tests.support.per_user import OwnUrlMcpServer

    server = OwnUrlMcpServer()
    try:
        server.serve(
            fresh.settings(
                public_url=fresh.mcp.base_url,
                oauth_jwks_url=f"{fresh.issuer.url}/no-keys-here.json",
            )
        )
        response = await post_tool_call(server.url, (f"Bearer {fresh.mint()}",))
    finally:
        server.stop()
    assert response.status_code == 401
    assert fresh.seen == []


async def test_a_second_authorization_header_is_not_whom_the_call_is_for(
    fresh: PerUserStack,
) -> None:
    """The endpoint verifies the first header; the exchange is for that caller alone."""
    title = f"whose? {uuid.uuid4().hex}"
    response = await post_tool_call(
        fresh.resource,
        (f"Bearer {fresh.mint('alice')}", f"Bearer {fresh.mint('mallory')}"),
        "create_note",
        title=title,
    )
    assert response.status_code == 200
    assert '"isError":false' in response.text.replace(" ", "")
    assert title in titles(fresh.api, "alice")
    assert title not in titles(fresh.api, "mallory")


def titles(api: ApiServer, user: str, tenant: str = TENANT_ID) -> list[str]:
    """The titles of a user's notes, as the API stored them."""
    page = api.run(
        lambda store: store.list_items(
            Principal(tenant, user), "notes", after=None, limit=1000, include_deleted=True
        )
    )
    return [str(item.payload.get("title")) for item in page]


async def test_served_from_the_environment_on_its_default_public_url(
    fresh: PerUserStack, tmp_path: Path
) -> None:
    """No TOOLBRIDGE_PUBLIC_URL: the resource is http://{host}:{port}/mcp, reachable as is,
    and the API exchanges tokens for exactly that resource."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    with ApiServer(
        fresh.issuer.jwks_url,
        fresh.issuer.issuer_url,
        API_AUDIENCE,
        tenant_secret=TENANT_SECRET,
        exchange_subject_audience=f"{base}/mcp",
        exchange_signing_key_file=tmp_path / "api-key.pem",
    ) as api:
        env = server_env(
            TOOLBRIDGE_GO_API_BASE_URL=api.url,
            TOOLBRIDGE_TENANT_ID=TENANT_ID,
            TOOLBRIDGE_TENANT_HEADER_SECRET=TENANT_SECRET,
            TOOLBRIDGE_OAUTH_ISSUER=fresh.issuer.issuer_url,
            TOOLBRIDGE_OAUTH_EXCHANGE_AUDIENCE=API_AUDIENCE,
            TOOLBRIDGE_PORT=str(port),
        )
        stderr = tmp_path / "stderr.log"
        with stderr.open("w") as log:
            process = await asyncio.create_subprocess_exec(
                *cli_command(),
                "serve",
                env=env,
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            try:
                async with httpx.AsyncClient() as http:
                    for _ in range(600):
                        assert process.returncode is None, stderr.read_text()
                        try:
                            answer = await http.post(f"{base}/mcp", json={})
                            break
                        except httpx.TransportError:
                            await asyncio.sleep(0.05)
                    assert answer.status_code == 401
                    metadata_url = challenge(answer)["resource_metadata"]
                    assert metadata_url == f"{base}{METADATA_PATH}"
                    metadata = (await http.get(metadata_url)).json()
                assert metadata["resource"] == f"{base}/mcp"
                assert metadata["authorization_servers"] == [fresh.issuer.issuer_url]
                token = fresh.mint("grace", audience=f"{base}/mcp", scope=None)
                async with Client(f"{base}/mcp", auth=token) as client:
                    result = await client.call_tool("create_note", {"title": "over http"})
                assert result.structured_content is not None
                assert result.structured_content["version"] == 1
            finally:
                process.terminate()
                await asyncio.wait_for(process.wait(), timeout=10)
        assert titles(api, "grace") == ["over http"]
    output = stderr.read_text()
    assert "Per-user mode: MCP callers sign in at" in output
    assert "callers' own tokens are never sent to the API" in output
    assert TENANT_SECRET not in output
    assert not leaked(output, fresh.tokens)


async def test_stdio_carries_no_sign_in_and_says_what_to_configure(
    fresh: PerUserStack, tmp_path: Path
) -> None:
    command = cli_command()
    transport = StdioTransport(
        command=command[0],
        args=[*command[1:], "serve", "--transport", "stdio"],
        env=server_env(
            TOOLBRIDGE_GO_API_BASE_URL=fresh.api.url,
            TOOLBRIDGE_OAUTH_ISSUER=fresh.issuer.issuer_url,
            TOOLBRIDGE_OAUTH_EXCHANGE_AUDIENCE=API_AUDIENCE,
        ),
        cwd=str(tmp_path),
        keep_alive=False,
        log_file=tmp_path / "stderr.log",
    )
    async with Client(transport) as client:
        result = await client.call_tool("list_notes", {}, raise_on_error=False)
    assert result.is_error
    text = str(result.content)
    assert "Missing authentication" in text
    assert "stdio" in text


async def test_nothing_configured_starts_but_says_what_to_set(
    start_mcp: ServerFactory, idp: IdP, logs: LogCapture
) -> None:
    """No client credentials, no static token, no sign-in: the server starts (health
    degraded) and every tool call names what to configure."""
    server = start_mcp("none")
    async with Client(server.url) as anonymous:
        message = await call_error(anonymous, idp, "list_notes")
        health = await call(anonymous, idp, "health_check")
    assert "Missing authentication" in message
    assert "TOOLBRIDGE_OAUTH_ISSUER" in message
    assert health["auth_mode"] == "token_exchange"
    assert health["status"] == "degraded"
    assert any("No authentication configured" in m for m in logs.messages("WARNING"))


# --- the legacy passthrough: TOOLBRIDGE_OAUTH_PASSTHROUGH=true ------------------------------


def passthrough(start_mcp: ServerFactory, idp: IdP, **overrides: Any) -> McpHttpServer:
    """A passthrough server that verifies callers' tokens (for the API's audience) against
    the fake IdP, then forwards them."""
    settings = {
        "oauth_issuer": f"{idp.base_url}/",
        "oauth_audience": AUDIENCE,
        "public_url": PUBLIC_URL,
    }
    return start_mcp("passthrough", **(settings | overrides))


async def test_passthrough_is_explicit_warned_about_and_still_verifies(
    idp: IdP, api: ApiServer, start_mcp: ServerFactory, logs: LogCapture
) -> None:
    server = passthrough(start_mcp, idp)
    warnings = [m for m in logs.messages("WARNING") if "TOOLBRIDGE_OAUTH_PASSTHROUGH" in m]
    assert len(warnings) == 1
    assert "NOT MCP-spec conformant" in warnings[0]
    async with httpx.AsyncClient() as http:
        metadata = (await http.get(f"{server.base_url}{METADATA_PATH}")).json()
    assert metadata["resource"] == f"{PUBLIC_URL}/mcp"
    api.reset_counters()
    foreign = await post_tool_call(server.url, ("Bearer opaque-token-value",))
    assert foreign.status_code == 401
    assert api.requests == 0


async def test_passthrough_callers_act_as_themselves_at_the_api(
    idp: IdP, api: ApiServer, start_mcp: ServerFactory
) -> None:
    server = passthrough(start_mcp, idp)
    alice = mint_token(idp)
    bob = mint_token(idp, "nasty-client", NASTY_SECRET)
    tag = uuid.uuid4().hex
    async with (
        Client(server.url, auth=alice) as as_alice,
        Client(server.url, auth=bob, mode="legacy") as as_bob,
    ):
        assert as_bob.protocol_version == "2025-11-25"
        mine = await call(as_alice, idp, "create_note", title=f"alice's {tag}")
        await call(as_bob, idp, "create_note", title=f"bob's {tag}")
        message = await call_error(as_bob, idp, "get_note", uid=mine["uid"])
        health = await call(as_alice, idp, "health_check")
    assert "not found" in message
    assert health["auth_mode"] == "passthrough"
    alice_has = titles(api, f"{CLIENT_ID}@clients", "tenant-a")
    bob_has = titles(api, "nasty-client@clients", "tenant-a")
    assert f"alice's {tag}" in alice_has
    assert f"bob's {tag}" in bob_has
    assert f"bob's {tag}" not in alice_has


async def test_passthrough_forwards_the_verified_header_not_a_second_one(
    idp: IdP, api: ApiServer, start_mcp: ServerFactory
) -> None:
    server = passthrough(start_mcp, idp)
    alice = mint_token(idp)
    bob = mint_token(idp, "nasty-client", NASTY_SECRET)
    title = f"whose? {uuid.uuid4().hex}"
    response = await post_tool_call(
        server.url, (f"Bearer {alice}", f"Bearer {bob}"), "create_note", title=title
    )
    assert response.status_code == 200
    assert title in titles(api, f"{CLIENT_ID}@clients", "tenant-a")
    assert title not in titles(api, "nasty-client@clients", "tenant-a")
    assert_no_secrets(response.text, idp)
