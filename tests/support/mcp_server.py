"""The MCP server for end-to-end tests: its settings as the environment would give them, the
streamable-HTTP app under uvicorn on 127.0.0.1 (lifespan run), and the ``toolbridge-mcp``
command with a clean environment for subprocesses."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")
os.environ.setdefault("FASTMCP_SHOW_SERVER_BANNER", "false")

from fastmcp import FastMCP
from starlette.applications import Starlette

from tests.conftest import AUDIENCE, CLIENT_ID, CLIENT_SECRET, KNOWN_SECRETS
from tests.support.idp import IdP
from tests.support.server import ServerThread
from toolbridge_mcp.config import Settings

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
"""What the ``start_mcp`` fixture yields: settings as for :func:`mcp_settings`, started."""


def cli_command() -> list[str]:
    """``toolbridge-mcp`` from this environment."""
    script = Path(sys.executable).with_name("toolbridge-mcp")
    return [str(script)] if script.exists() else [sys.executable, "-m", "toolbridge_mcp.cli"]


def server_env(**variables: str) -> dict[str, str]:
    """A clean environment for a server subprocess: no inherited TOOLBRIDGE_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLBRIDGE_")}
    env |= {"FASTMCP_CHECK_FOR_UPDATES": "off", "FASTMCP_SHOW_SERVER_BANNER": "false"}
    return env | variables
