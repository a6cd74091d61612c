"""The ToolBridge MCP server: built by :func:`create_server`, run by ``python -m``.

Nothing happens at import and nothing touches the network while the server is built; the
lifespan opens the one pooled API client and starts the token manager, and closes both.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")
os.environ.setdefault("FASTMCP_SHOW_SERVER_BANNER", "false")

import mcp_types as mt
from fastmcp import FastMCP
from fastmcp.server.lifespan import lifespan
from fastmcp.tools import Tool
from loguru import logger
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from toolbridge_common import contract
from toolbridge_mcp.backend.runtime import Backend
from toolbridge_mcp.config import Settings, get_settings
from toolbridge_mcp.http_guard import GuardConfig, GuardedFastMCP
from toolbridge_mcp.metrics import ServerMetrics
from toolbridge_mcp.tools.entities import entity_tools
from toolbridge_mcp.tools.exact import ExactTool
from toolbridge_mcp.tools.health import HealthReport, health_report

_ENTITIES = ", ".join(name.replace("_", " ") for name in contract.ENTITY_NAMES)
INSTRUCTIONS = f"""\
Tools for the user's ToolBridge data: {_ENTITIES}.
Each has list_, get_, create_, update_ (replace the whole item), patch_ (change some fields),
delete_ (soft delete), archive_ and process_ (actions such as pin or complete) tools.
Items are addressed by uid; pass the version you read as if_match to update or patch only
that version (a version conflict names the current one).
Call health_check if calls fail with authentication or availability errors."""


def create_server(settings: Settings | None = None) -> FastMCP[Any]:
    """The server for ``settings`` (default: from the environment). No I/O here."""
    settings = settings or get_settings()
    metrics = ServerMetrics()
    backend = Backend(settings, transport=metrics.api_transport())
    metrics.watch_tokens(backend)
    backend.auth.log_startup()

    @lifespan
    async def resources(server: FastMCP[Any]) -> AsyncIterator[dict[str, Any]]:
        await backend.open()
        logger.info(
            "ToolBridge MCP server ready: API {}, auth mode {}", backend.api_url, backend.mode
        )
        try:
            yield {"backend": backend}
        finally:
            await backend.close()

    async def health_check() -> HealthReport:
        """Health of the ToolBridge connection: auth mode, tenant, API URL, token expiry,
        last refresh and failure count; status is ok or degraded."""
        return health_report(backend)

    tools: list[Tool] = [
        *entity_tools(backend),
        ExactTool.from_function(health_check, annotations=mt.ToolAnnotations(read_only_hint=True)),
    ]
    mcp: FastMCP[Any] = GuardedFastMCP(  # Host/Origin checked on every HTTP transport
        "ToolBridge",
        guard=GuardConfig.from_settings(settings),
        stateless_http=settings.stateless_http,  # replicas behind a balancer (ADR 0005)
        instructions=INSTRUCTIONS,
        lifespan=resources,
        auth=backend.auth.mcp_auth(),
        mask_error_details=True,
        middleware=[metrics.middleware],
    )
    for tool in tools:
        mcp.add_tool(tool)

    @mcp.custom_route("/healthz", methods=["GET"])
    async def healthz(request: Request) -> Response:
        """Liveness for Fly.io: 200 while the process serves, even if degraded (a restart
        would not bring the identity provider back); the body says which."""
        return JSONResponse(health_report(backend).model_dump(mode="json"))

    mcp.custom_route("/metrics", methods=["GET"])(metrics.endpoint)

    return mcp


def main() -> None:
    """``python -m toolbridge_mcp.server``: ``toolbridge-mcp serve`` with the settings' defaults
    (streamable HTTP on TOOLBRIDGE_HOST:TOOLBRIDGE_PORT, 127.0.0.1:8001)."""
    from toolbridge_mcp.cli import app

    app(["serve", "--transport", "http"], prog_name="python -m toolbridge_mcp.server")


if __name__ == "__main__":
    main()
