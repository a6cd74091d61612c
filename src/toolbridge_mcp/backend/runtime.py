"""The process's connection to the API: settings, token manager and pooled client.

Built without I/O when the server is created; :meth:`Backend.open` (run by the server's
lifespan) starts the token manager and the client, :meth:`Backend.close` releases them.
An unreachable identity provider does not stop :meth:`open`: the server boots and reports
itself degraded until a token arrives.
"""

from __future__ import annotations

import httpx

from toolbridge_mcp.auth.modes import BackendAuth, backend_auth
from toolbridge_mcp.auth.tenant import TenantSigner
from toolbridge_mcp.auth.token_manager import TokenManager
from toolbridge_mcp.backend.client import ApiClient
from toolbridge_mcp.backend.errors import ErrorContext
from toolbridge_mcp.config import AuthMode, Settings


class Backend:
    """Shared resources of the tools, open between server start and stop."""

    def __init__(
        self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self.mode: AuthMode = settings.auth_mode()
        self.tenant = TenantSigner.from_settings(settings)
        self.manager: TokenManager | None = None
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
        """Start the token manager (a failed first fetch only degrades health) and open
        the pooled client."""
        if self._client is not None:
            return
        if self.mode == "auth0":
            self.manager = TokenManager.from_settings(self.settings)
        auth: BackendAuth = backend_auth(self.settings, self.manager)
        self._client = ApiClient(self.api_url, auth, self.tenant, transport=self._transport)
        if self.manager is not None:
            await self.manager.start()

    async def close(self) -> None:
        """Close the client and stop the token manager."""
        client, manager = self._client, self.manager
        self._client = self.manager = None
        if client is not None:
            await client.aclose()
        if manager is not None:
            await manager.close()

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
        )
