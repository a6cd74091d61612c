"""The MCP server end to end: the real API and the fake IdP on 127.0.0.1, the server over
streamable HTTP (in a thread, lifespan run) or stdio (a subprocess), a real MCP client. The
helpers (server, settings, tool calls) are in ``tests.support.mcp_server`` and
``tests.support.mcp_calls``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")
os.environ.setdefault("FASTMCP_SHOW_SERVER_BANNER", "false")

import pytest
from fastmcp import Client

from tests.conftest import AUDIENCE, LogCapture
from tests.support.api import ApiServer
from tests.support.idp import IdP
from tests.support.mcp_server import TENANT_SECRET, McpHttpServer, ServerFactory, mcp_settings
from toolbridge_mcp.server import create_server


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


@pytest.fixture(autouse=True)
def _no_tenant_secret_in_logs(logs: LogCapture) -> Iterator[None]:
    """The shared log check knows the client secrets and tokens; add the tenant secret."""
    yield
    assert TENANT_SECRET not in logs.text(), "the tenant secret appeared in the logs"
