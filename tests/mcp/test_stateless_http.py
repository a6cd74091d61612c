"""``TOOLBRIDGE_STATELESS_HTTP``: streamable HTTP with no server-held MCP session, so that any
replica answers any request (ADR 0005).

A real MCP client talks to real servers on 127.0.0.1; "replicas" are MCP servers built from the
same settings in front of one real API, and a round-robin transport under the client sends each
of its HTTP requests to the next one, as a load balancer without sticky sessions does. Each
replica keeps its own sync session with the API for the same principal; the API holds both.

Clients of the handshake era (protocol 2024-11-05 to 2025-11-25: ``initialize``, then
``Mcp-Session-Id``; ``Client(mode="legacy")``, as the MCP Inspector and Claude Desktop speak
today) are the ones that need the setting; 2026-07-28 clients (``mode="auto"``) send
self-contained requests whatever the server's mode.
"""

from __future__ import annotations

import itertools
import subprocess
from typing import Any

import httpx
import httpx2
import pytest
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport
from mcp.shared.exceptions import MCPError

from tests.support.api import ApiServer
from tests.support.idp import IdP
from tests.support.mcp_calls import call
from tests.support.mcp_server import (
    SERVICE_USER,
    TENANT_ID,
    McpHttpServer,
    ServerFactory,
    cli_command,
    server_env,
)

SESSIONS = ("POST", "/v1/sync/sessions")
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "probe", "version": "0"},
    },
}
MCP_HEADERS = {"accept": "application/json, text/event-stream"}


class RoundRobin(httpx2.AsyncBaseTransport):
    """Sends each request to the next of ``ports`` (Host rewritten to match), as a load
    balancer without sticky sessions does; ``ports_used`` records where each one went."""

    def __init__(self, ports: list[int]) -> None:
        self._next = itertools.cycle(ports)
        self._inner = httpx2.AsyncHTTPTransport()
        self.ports_used: list[int] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        port = next(self._next)
        request.url = request.url.copy_with(port=port)
        request.headers["host"] = f"127.0.0.1:{port}"
        self.ports_used.append(port)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _port(server: McpHttpServer) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


def round_robin_client(
    servers: list[McpHttpServer], mode: str = "legacy"
) -> tuple[Client[Any], RoundRobin]:
    """A fastmcp client whose consecutive HTTP requests go to ``servers`` in turn."""
    balancer = RoundRobin([_port(server) for server in servers])

    def factory(
        headers: dict[str, str] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
        **kwargs: Any,
    ) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            transport=balancer,
            headers=headers,
            timeout=timeout or httpx2.Timeout(30.0, read=300.0),
            auth=auth,
            **kwargs,
        )

    transport = StreamableHttpTransport(servers[0].url, httpx_client_factory=factory)
    return Client(transport, mode=mode), balancer


async def test_a_stateless_server_serves_a_client_without_a_session(
    start_mcp: ServerFactory, idp: IdP
) -> None:
    server = start_mcp(stateless_http=True)
    async with Client(server.url, mode="legacy") as client:
        note = await call(client, idp, "create_note", title="stateless")
        got = await call(client, idp, "get_note", uid=note["uid"])
    assert got["payload"]["title"] == "stateless"
    async with httpx.AsyncClient() as http:
        initialized = await http.post(server.url, json=INITIALIZE, headers=MCP_HEADERS)
        stream = await http.get(server.url, headers=MCP_HEADERS)
    assert initialized.status_code == 200
    assert "mcp-session-id" not in initialized.headers  # nothing held to come back to
    assert stream.status_code == 405  # no GET stream for server-initiated messages


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_client_moving_between_stateless_replicas_keeps_working(
    start_mcp: ServerFactory, idp: IdP, api: ApiServer, mode: str
) -> None:
    replicas = [start_mcp(stateless_http=True) for _ in range(2)]
    api.reset_counters()
    client, balancer = round_robin_client(replicas, mode)
    async with client:
        note = await call(client, idp, "create_note", title="made on one replica")
        for _ in range(3):
            got = await call(client, idp, "get_note", uid=note["uid"])
            assert got["version"] == note["version"]
        listed = await call(client, idp, "list_notes", limit=1000)
    assert note["uid"] in {item["uid"] for item in listed["items"]}
    assert set(balancer.ports_used) == {_port(r) for r in replicas}
    pairs = zip(balancer.ports_used, balancer.ports_used[1:], strict=False)
    assert all(a != b for a, b in pairs)  # every request went to the other replica
    # One sync session per replica for the same principal, both live at the API.
    assert api.counter.paths.count(SESSIONS) == 2


async def test_a_stateful_server_refuses_a_handshake_era_client_that_moves(
    start_mcp: ServerFactory,
) -> None:
    """Why stateless mode exists: a session lives in the process that opened it."""
    replicas = [start_mcp() for _ in range(2)]
    client, _ = round_robin_client(replicas)
    with pytest.raises(MCPError, match="Session not found"):
        async with client:
            await client.list_tools()


async def test_replicas_recover_from_a_moved_epoch_and_expired_sessions_each_alone(
    start_mcp: ServerFactory, idp: IdP, api: ApiServer
) -> None:
    """Each replica's own sync session obeys the API's epoch check and expiry: a wipe on
    another device (epoch moved) or expiry is recovered by each replica alone."""
    replicas = [start_mcp(stateless_http=True) for _ in range(2)]
    client, _ = round_robin_client(replicas)
    api.reset_counters()
    async with client:
        note = await call(client, idp, "create_note", title="survives")
        for _ in range(3):
            await call(client, idp, "get_note", uid=note["uid"])
        assert api.counter.paths.count(SESSIONS) == 2  # each replica has its own
        api.bump_epoch(SERVICE_USER, TENANT_ID)
        api.reset_counters()
        for _ in range(4):
            await call(client, idp, "get_note", uid=note["uid"])
        assert api.counter.paths.count(SESSIONS) == 0  # the epoch is adopted, per replica
        api.expire_sessions(TENANT_ID, SERVICE_USER)
        api.reset_counters()
        for _ in range(4):
            await call(client, idp, "get_note", uid=note["uid"])
        assert api.counter.paths.count(SESSIONS) == 2  # one new session per replica


def test_stateless_mode_is_refused_for_the_sse_transport() -> None:
    done = subprocess.run(  # noqa: S603 - our own console script
        [*cli_command(), "serve", "--transport", "sse"],
        env=server_env(TOOLBRIDGE_STATELESS_HTTP="true", TOOLBRIDGE_JWT_TOKEN="x"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "TOOLBRIDGE_STATELESS_HTTP=true is for streamable HTTP" in done.stderr
