"""DNS rebinding (issue 12): the HTTP transports answer only to this server's Host and Origin,
on the real app the CLI serves, and a refused request never reaches a tool."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastmcp import Client

from tests.support.api import ApiServer
from tests.support.idp import IdP
from tests.support.mcp_calls import call
from tests.support.mcp_server import (
    McpHttpServer,
    ServerFactory,
    cli_command,
    mcp_settings,
    server_env,
)
from tests.support.server import ServerThread
from toolbridge_mcp.http_guard import exposure_problem, exposure_warning
from toolbridge_mcp.server import create_server

_INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "page", "version": "1"},
    },
}
_MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


def _port(server: McpHttpServer) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


async def _post(server: McpHttpServer, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(server.url, json=_INIT, headers={**_MCP_HEADERS, **headers})


async def test_rebound_host_and_foreign_origin_are_refused_before_any_tool(
    start_mcp: ServerFactory, api: ApiServer, idp: IdP
) -> None:
    server = start_mcp()
    port = _port(server)
    api.reset_counters()

    evil_host = await _post(server, Host=f"evil.example:{port}", Origin="http://evil.example")
    assert evil_host.status_code == 421
    assert "'evil.example:" in evil_host.json()["error"]
    assert "TOOLBRIDGE_ALLOWED_HOSTS" in evil_host.json()["error"]

    evil_origin = await _post(server, Origin=f"http://evil.example:{port}")
    assert evil_origin.status_code == 403
    assert "TOOLBRIDGE_ALLOWED_ORIGINS" in evil_origin.json()["error"]

    other_local_port = await _post(server, Origin=f"http://localhost:{port + 1}")
    assert other_local_port.status_code == 403

    # A whole tool call with rebound headers: refused, and the API never asked.
    async with httpx.AsyncClient() as http:
        create = await http.post(
            server.url,
            json={
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "create_note", "arguments": {"title": "rebound"}},
            },
            headers={**_MCP_HEADERS, "Host": "evil.example", "Origin": "http://evil.example"},
        )
        healthz = await http.get(f"{server.base_url}/healthz", headers={"Host": "evil.example"})
    assert create.status_code == 421
    assert healthz.status_code == 421
    assert api.requests == 0

    # Non-browser clients (no Origin) and the server's own origin still work.
    assert (await _post(server)).status_code == 200
    assert (await _post(server, Origin=f"http://localhost:{port}")).status_code == 200
    assert (await _post(server, Host=f"localhost:{port}")).status_code == 200
    async with Client(server.url) as client:
        created = await call(client, idp, "create_note", title="allowed")
        listed = await call(client, idp, "list_notes")
    titles = [item["payload"].get("title") for item in listed["items"]]
    assert "allowed" in titles
    assert "rebound" not in titles
    assert created["uid"]


async def test_configured_hosts_and_origins_and_public_url(start_mcp: ServerFactory) -> None:
    server = start_mcp(
        allowed_hosts="mcp.internal, *.corp.example",
        allowed_origins="http://localhost:6274",
        public_url="https://mcp.example.com",
    )
    port = _port(server)
    for host in ("mcp.internal", f"a.corp.example:{port}", "mcp.example.com"):
        assert (await _post(server, Host=host)).status_code == 200, host
    assert (await _post(server, Host="corp.example.evil")).status_code == 421
    assert (await _post(server, Origin="http://localhost:6274")).status_code == 200
    assert (await _post(server, Origin="https://mcp.example.com")).status_code == 200
    assert (await _post(server, Origin="null")).status_code == 403
    assert (await _post(server, Origin="https://mcp.example.com.evil")).status_code == 403


async def test_sse_transport_is_guarded(api: ApiServer, idp: IdP) -> None:
    mcp = create_server(mcp_settings(api.url, idp))
    thread = ServerThread(mcp.http_app(transport="sse"), name="toolbridge-mcp-sse")
    thread.start()
    try:
        async with httpx.AsyncClient() as http:
            sse = await http.get(f"{thread.url}/sse", headers={"Host": "evil.example"})
            message = await http.post(
                f"{thread.url}/messages/?session_id=0",
                content=json.dumps(_INIT),
                headers={"Origin": "http://evil.example"},
            )
            healthz = await http.get(f"{thread.url}/healthz")
        assert sse.status_code == 421
        assert message.status_code == 403
        assert healthz.status_code == 200
    finally:
        thread.stop()


@pytest.mark.parametrize(
    ("mode", "host", "opt_in", "refused"),
    [
        ("auth0", "0.0.0.0", False, True),
        ("auth0", "::", False, True),
        ("auth0", "127.0.0.1", False, False),
        ("auth0", "0.0.0.0", True, False),
        ("static", "192.0.2.10", False, True),
    ],
)
def test_network_bind_in_service_mode(
    idp: IdP, mode: str, host: str, opt_in: bool, refused: bool
) -> None:
    overrides: dict[str, Any] = {"host": host, "allow_unauthenticated_network": opt_in}
    if mode == "static":
        overrides["jwt_token"] = "opaque-static-token"
    settings = mcp_settings("http://127.0.0.1:9", idp, mode, **overrides)
    problem = exposure_problem(settings)
    assert (problem is not None) is refused
    if problem is not None:
        assert "TOOLBRIDGE_HOST" in problem
        assert "TOOLBRIDGE_ALLOW_UNAUTHENTICATED_NETWORK=true" in problem
    warning = exposure_warning(settings)
    assert (warning is not None) is (host != "127.0.0.1")
    if opt_in:
        assert warning is not None
        assert "WITHOUT authenticating" in warning


def test_serve_refuses_a_network_bind_in_service_mode(tmp_path: Path) -> None:
    """``toolbridge-mcp serve --host 0.0.0.0`` with a static token: exit 2 before listening,
    naming TOOLBRIDGE_HOST and the opt-in."""
    result = subprocess.run(  # noqa: S603 - our own console script
        [*cli_command(), "serve", "--host", "0.0.0.0", "--port", "9"],
        env=server_env(TOOLBRIDGE_JWT_TOKEN="opaque-static-token"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "TOOLBRIDGE_HOST=0.0.0.0" in result.stderr
    assert "TOOLBRIDGE_ALLOW_UNAUTHENTICATED_NETWORK=true" in result.stderr
