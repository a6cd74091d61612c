"""The process's connection to the API: settings, token manager and pooled client.

Built without I/O when the server is created; :meth:`Backend.open` (run by the server's
lifespan) starts the token manager and the client, :meth:`Backend.close` releases them.
An unreachable identity provider does not stop :meth:`open`: the server boots and reports
itself degraded until a token arrives.
"""

from __future__ import annotations

import asyncio

import httpx

from toolbridge_mcp.auth.modes import OutboundAuth, outbound_auth
from toolbridge_mcp.auth.tenant import TenantSigner
from toolbridge_mcp.backend.client import ApiClient
from toolbridge_mcp.backend.errors import ErrorContext
from toolbridge_mcp.config import AuthMode, Settings


class Backend:
    """Shared resources of the tools, open between server start and stop."""

    def __init__(
        self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self.auth: OutboundAuth = outbound_auth(settings)
        self.mode: AuthMode = self.auth.name
        self.tenant = TenantSigner.from_settings(settings)
        self._transport = transport
        self._client: ApiClient | None = None

    @property
    def api_url(self) -> str:
        """The API base URL (safe to show: no credentials in it)."""
        return self.settings.go_api_base_url

    @property
    def client(self) -> ApiClient:
        """The open API client."""
        if self._client is None:
            raise RuntimeError("the backend is not open (server lifespan not running)")
        return self._client

    async def open(self) -> None:
        """Start the auth mode (a failed first token fetch only degrades health) and open
        the pooled client."""
        if self._client is not None:
            return
        # In a worker thread: the client, its pool and TLS context take ~20 ms of CPU (more
        # on first import), which on the loop would stall every task the process runs.
        self._client = await asyncio.to_thread(self._new_client)
        await self.auth.start()

    def _new_client(self) -> ApiClient:
        client = ApiClient(self.api_url, self.auth, self.tenant, transport=self._transport)
        client.prepare()
        return client

    async def close(self) -> None:
        """Close the client and stop the auth mode (its token manager, if any)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        await self.auth.aclose()

    def error_context(
        self,
        *,
        entity: str | None = None,
        uid: str | None = None,
        get_tool: str | None = None,
        list_tool: str | None = None,
    ) -> ErrorContext:
        """What an error message needs to know about this backend and the call."""
        return ErrorContext(
            api_url=self.api_url,
            auth_mode=self.mode,
            tenant_configured=self.tenant is not None,
            entity=entity,
            uid=uid,
            get_tool=get_tool,
            list_tool=list_tool,
            auth_hint=self.auth.error_hint,
        )
