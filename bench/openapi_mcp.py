"""The zero-code alternative: ``FastMCP.from_openapi`` over the API's own OpenAPI document, as
a user would set it up — one token fetched at start, a sync session opened once, both sent as
default headers of the ``httpx2`` client FastMCP asks for, and the tenant headers signed per
request by an event hook (the API requires them, so both servers do the same work).

Used in-process by ``bench.mcp_server`` (in-memory transport) and as a child process for
streamable HTTP: ``python -m bench.openapi_mcp API_URL TOKEN_URL PORT``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")
os.environ.setdefault("FASTMCP_SHOW_SERVER_BANNER", "false")

import httpx2
from fastmcp import FastMCP
from pydantic import SecretStr

from bench.token_manager import AUDIENCE, CLIENT_ID, CLIENT_SECRET
from toolbridge_mcp.auth.tenant import TenantSigner

TENANT_ID = "bench-tenant"
TENANT_SECRET = "bench-tenant-secret-0123456789"


async def openapi_server(api_url: str, token_url: str) -> tuple[FastMCP[Any], httpx2.AsyncClient]:
    """The ``from_openapi`` server and its client (close the client when done)."""
    async with httpx2.AsyncClient() as once:
        answer = await once.post(
            token_url,
            json={
                "grant_type": "client_credentials",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "audience": AUDIENCE,
            },
        )
        answer.raise_for_status()
        token = answer.json()["access_token"]
    signer = TenantSigner(TENANT_ID, SecretStr(TENANT_SECRET))
    http = httpx2.AsyncClient(
        base_url=api_url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30.0,
        event_hooks={"request": [signer.sign]},
    )
    session = (await http.post("/v1/sync/sessions")).json()
    http.headers.update({"X-Sync-Session": session["id"], "X-Sync-Epoch": str(session["epoch"])})
    spec = (await http.get("/openapi.json")).json()
    return FastMCP.from_openapi(spec, client=http, name="ToolBridge (from_openapi)"), http


async def _serve(api_url: str, token_url: str, port: int) -> None:
    server, http = await openapi_server(api_url, token_url)
    try:
        await server.run_http_async(
            show_banner=False, host="127.0.0.1", port=port, log_level="warning"
        )
    finally:
        await http.aclose()


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1], sys.argv[2], int(sys.argv[3])))
