"""The server as users start it: ``toolbridge-mcp serve --transport stdio`` under an MCP
client, ``python -m toolbridge_mcp.server`` over HTTP, and the half-configured startup."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport

from tests.conftest import AUDIENCE, CLIENT_ID, CLIENT_SECRET
from tests.support.api import ApiServer
from tests.support.idp import IdP
from tests.support.mcp_calls import call, call_error
from tests.support.mcp_server import SECRETS, TENANT_ID, TENANT_SECRET, cli_command, server_env
from toolbridge_common import contract


def _auth0_env(idp: IdP, api: ApiServer) -> dict[str, str]:
    return {
        "TOOLBRIDGE_GO_API_BASE_URL": api.url,
        "TOOLBRIDGE_AUTH0_CLIENT_ID": CLIENT_ID,
        "TOOLBRIDGE_AUTH0_CLIENT_SECRET": CLIENT_SECRET,
        "TOOLBRIDGE_AUTH0_TOKEN_URL": idp.token_url,
        "TOOLBRIDGE_AUTH0_AUDIENCE": AUDIENCE,
        "TOOLBRIDGE_TENANT_ID": TENANT_ID,
        "TOOLBRIDGE_TENANT_HEADER_SECRET": TENANT_SECRET,
    }


def _stdio(env: dict[str, str], cwd: Path, log: Path) -> StdioTransport:
    command = cli_command()
    return StdioTransport(
        command=command[0],
        args=[*command[1:], "serve", "--transport", "stdio"],
        env=server_env(**env),
        cwd=str(cwd),
        keep_alive=False,
        log_file=log,
    )


def _assert_clean(text: str, idp: IdP) -> None:
    leaked = [s for s in (*SECRETS, *idp.issued) if s in text]
    assert not leaked, f"{len(leaked)} secret(s) or token(s) in the server's output"


async def test_stdio_server_in_auth0_mode(idp: IdP, api: ApiServer, tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    async with Client(_stdio(_auth0_env(idp, api), tmp_path, log)) as client:
        assert len(await client.list_tools()) == 8 * len(contract.ENTITIES) + 1
        note = await call(client, idp, "create_note", title="over stdio", tags="a, b")
        got = await call(client, idp, "get_note", uid=note["uid"])
        health = await call(client, idp, "health_check")
    assert got["payload"]["title"] == "over stdio"
    assert got["payload"]["tags"] == ["a", "b"]
    assert health["status"] == "ok"
    stderr = log.read_text()
    assert "Auth0 automatic token refresh enabled" in stderr
    _assert_clean(stderr, idp)


async def test_stdio_in_per_user_mode_says_to_configure_another_mode(
    idp: IdP, api: ApiServer, tmp_path: Path
) -> None:
    env = {"TOOLBRIDGE_GO_API_BASE_URL": api.url}
    async with Client(_stdio(env, tmp_path, tmp_path / "stderr.log")) as client:
        message = await call_error(client, idp, "list_notes")
    assert (
        "Missing authentication. Configure TOOLBRIDGE_AUTH0_CLIENT_ID or TOOLBRIDGE_JWT_TOKEN."
        in message
    )
    assert "stdio" in message
    assert "TOOLBRIDGE_AUTH0_CLIENT_ID" in message


@pytest.mark.parametrize(
    "command",
    [
        [*cli_command(), "serve", "--transport", "stdio"],
        [sys.executable, "-m", "toolbridge_mcp.server"],
    ],
    ids=["serve", "python-m"],
)
def test_half_configured_auth0_stops_startup_naming_what_is_missing(
    command: list[str], tmp_path: Path
) -> None:
    env = server_env(
        TOOLBRIDGE_AUTH0_CLIENT_ID=CLIENT_ID, TOOLBRIDGE_AUTH0_CLIENT_SECRET=CLIENT_SECRET
    )
    done = subprocess.run(  # noqa: S603 - our own entry points
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "TOOLBRIDGE_AUTH0_DOMAIN" in done.stderr
    assert "TOOLBRIDGE_AUTH0_AUDIENCE" in done.stderr
    assert CLIENT_SECRET not in done.stderr + done.stdout


async def test_python_m_server_serves_streamable_http(
    idp: IdP, api: ApiServer, tmp_path: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = server_env(**_auth0_env(idp, api), TOOLBRIDGE_PORT=str(port))
    log = (tmp_path / "stderr.log").open("w")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "toolbridge_mcp.server",
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        health: dict[str, Any] = {}
        async with httpx.AsyncClient() as http:
            for _ in range(600):
                assert process.returncode is None, (tmp_path / "stderr.log").read_text()
                try:
                    health = (await http.get(f"{base}/healthz")).json()
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
        assert health["status"] == "ok"
        async with Client(f"{base}/mcp") as client:
            note = await call(client, idp, "create_note", title="over http")
        assert note["version"] == 1
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=10)
        log.close()
    _assert_clean((tmp_path / "stderr.log").read_text(), idp)
