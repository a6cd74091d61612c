"""The MCP server end to end: the real API and the fake IdP on 127.0.0.1, the server over
streamable HTTP (in a thread, lifespan run) or stdio (a subprocess), a real MCP client."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")
os.environ.setdefault("FASTMCP_SHOW_SERVER_BANNER", "false")

import pytest
from fastmcp import Client, FastMCP
from fastmcp.client.client import CallToolResult
from starlette.applications import Starlette

from tests.conftest import AUDIENCE, CLIENT_ID, CLIENT_SECRET, KNOWN_SECRETS, LogCapture
from tests.support.api import ApiServer
from tests.support.idp import IdP
from tests.support.server import ServerThread
from toolbridge_mcp.config import Settings
from toolbridge_mcp.server import create_server

TENANT_ID = "tenant-a"
TENANT_SECRET = "tenant-secret-0123456789"
SERVICE_USER = f"{CLIENT_ID}@clients"
SECRETS = (*KNOWN_SECRETS, TENANT_SECRET)
_LIFESPAN_TIMEOUT = 30.0


class McpHttpServer:
    """The MCP server's streamable-HTTP app under uvicorn on 127.0.0.1, lifespan entered on
    the server's loop (as ``uvicorn`` would), so the backend lives where requests run."""

    def __init__(self, server: FastMCP[Any]) -> None:
        self.mcp = server
        self.app: Starlette = server.http_app()
        self._thread = ServerThread(self.app, name="toolbridge-mcp")
        self._held: concurrent.futures.Future[None] | None = None
        self._ready = threading.Event()
        self._release = asyncio.Event()

    @property
    def url(self) -> str:
        return f"{self._thread.url}/mcp"

    @property
    def base_url(self) -> str:
        return self._thread.url

    def start(self) -> McpHttpServer:
        self._thread.start()
        self._ready = threading.Event()
        self._held = asyncio.run_coroutine_threadsafe(self._hold(), self._thread.loop)
        if not self._ready.wait(_LIFESPAN_TIMEOUT) or self._held.done():
            self._thread.stop()
            self._held.result(timeout=0)  # raises the lifespan's failure
            raise RuntimeError("MCP server lifespan did not start")
        return self

    def stop(self) -> None:
        if self._held is not None and self._thread.running:
            self._thread.call_soon(self._release.set)
            self._held.result(timeout=_LIFESPAN_TIMEOUT)
        self._held = None
        self._thread.stop()

    async def _hold(self) -> None:
        """Enter and leave the lifespan in one task: FastMCP keeps context variables."""
        self._release = asyncio.Event()
        async with self.app.router.lifespan_context(self.app):
            self._ready.set()
            await self._release.wait()


@pytest.fixture(scope="session")
def api_server(idp_server: IdP) -> Iterator[ApiServer]:
    """The real API, trusting the fake IdP's keys, requiring tenant headers."""
    with ApiServer(
        f"{idp_server.base_url}/.well-known/jwks.json",
        f"{idp_server.base_url}/",
        AUDIENCE,
        tenant_secret=TENANT_SECRET,
    ) as server:
        yield server


@pytest.fixture
def api(api_server: ApiServer, idp: IdP) -> ApiServer:
    api_server.reset_counters()
    return api_server


def mcp_settings(api_url: str, idp: IdP | None, mode: str = "auth0", **overrides: Any) -> Settings:
    """Settings as the environment would give them, without reading it."""
    fields: dict[str, Any] = {
        "go_api_base_url": api_url,
        "tenant_id": TENANT_ID,
        "tenant_header_secret": TENANT_SECRET,
    }
    if mode == "auth0":
        assert idp is not None
        fields |= {
            "auth0_client_id": CLIENT_ID,
            "auth0_client_secret": CLIENT_SECRET,
            "auth0_token_url": idp.token_url,
            "auth0_audience": AUDIENCE,
        }
    elif mode == "passthrough" and not {"auth0_client_id", "jwt_token"} & set(overrides):
        fields["oauth_passthrough"] = True  # the legacy mode is only ever chosen explicitly
    fields |= overrides
    return Settings(_env_file=None, **fields)  # type: ignore[call-arg]


ServerFactory = Callable[..., McpHttpServer]


@pytest.fixture
def start_mcp(api: ApiServer, idp: IdP) -> Iterator[ServerFactory]:
    """Starts MCP servers over HTTP (settings as for :func:`mcp_settings`); stops them after."""
    started: list[McpHttpServer] = []

    def factory(mode: str = "auth0", **overrides: Any) -> McpHttpServer:
        overrides.setdefault("api_url", api.url)
        api_url = overrides.pop("api_url")
        server = McpHttpServer(create_server(mcp_settings(api_url, idp, mode, **overrides)))
        started.append(server.start())
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def mcp(start_mcp: ServerFactory) -> McpHttpServer:
    """An auth0-mode MCP server with tenant headers."""
    return start_mcp()


@pytest.fixture
async def client(mcp: McpHttpServer) -> AsyncIterator[Client[Any]]:
    async with Client(mcp.url) as connected:
        yield connected


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


@pytest.fixture(autouse=True)
def _no_tenant_secret_in_logs(logs: LogCapture) -> Iterator[None]:
    """The shared log check knows the client secrets and tokens; add the tenant secret."""
    yield
    assert TENANT_SECRET not in logs.text(), "the tenant secret appeared in the logs"


def cli_command() -> list[str]:
    """``toolbridge-mcp`` from this environment."""
    script = Path(sys.executable).with_name("toolbridge-mcp")
    return [str(script)] if script.exists() else [sys.executable, "-m", "toolbridge_mcp.cli"]


def server_env(**variables: str) -> dict[str, str]:
    """A clean environment for a server subprocess: no inherited TOOLBRIDGE_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLBRIDGE_")}
    env |= {"FASTMCP_CHECK_FOR_UPDATES": "off", "FASTMCP_SHOW_SERVER_BANNER": "false"}
    return env | variables
