"""``auth0`` mode: OAuth2 client-credentials tokens from a :class:`TokenManager`."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, Self

import httpx
from loguru import logger

from toolbridge_mcp.auth.bearer import BearerAuth
from toolbridge_mcp.auth.modes.base import AuthCheck, AuthHealth, OutboundAuth
from toolbridge_mcp.config import env_name
from toolbridge_mcp.oauth import TokenError
from toolbridge_mcp.tokens import TokenManager

if TYPE_CHECKING:
    from toolbridge_mcp.config import Settings

CLIENT_CREDENTIALS_SETTINGS = (
    f"{env_name('auth0_client_id')}, {env_name('auth0_client_secret')}, "
    f"{env_name('auth0_domain')} (or {env_name('auth0_token_url')}) and "
    f"{env_name('auth0_audience')}"
)
"""The settings that select client credentials, for messages recommending them."""
_DETAIL = "tokens from Auth0 client credentials, refreshed automatically"


class ClientCredentialsAuth(OutboundAuth):
    """Tokens from the :class:`TokenManager` (started with the server), sent as
    ``Authorization: Bearer``; a 401 refetches once (:class:`BearerAuth`)."""

    name = "auth0"
    selected_by = "auth0_client_id"
    error_hint = (
        "check TOOLBRIDGE_AUTH0_AUDIENCE (must be the API's audience) and "
        "TOOLBRIDGE_AUTH0_DOMAIN or TOOLBRIDGE_AUTH0_TOKEN_URL (the issuer the API trusts)"
    )

    def __init__(self, settings: Settings, *, refetch_cooldown: float = 60.0) -> None:
        self._settings = settings
        self._refetch_cooldown = refetch_cooldown
        self._manager: TokenManager | None = None
        self._bearer: BearerAuth | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(settings)

    async def start(self) -> None:
        """A fresh token manager (a closed one cannot restart) and its first token."""
        if self._manager is not None:
            return
        manager = TokenManager.from_settings(self._settings)
        self._manager = manager
        self._bearer = BearerAuth(manager, refetch_cooldown=self._refetch_cooldown)
        await manager.start()

    async def aclose(self) -> None:
        manager, self._manager, self._bearer = self._manager, None, None
        if manager is not None:
            await manager.close()

    @property
    def manager(self) -> TokenManager | None:
        return self._manager

    async def get_auth_header(self) -> str:
        return f"Bearer {await self._started().get_token()}"

    def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self._bearer is None:
            raise RuntimeError("the client-credentials auth is not started")
        return self._bearer.async_auth_flow(request)

    def health(self) -> AuthHealth:
        manager = self._manager
        if manager is None:
            return AuthHealth("degraded", "server not started")
        stats, expires_at = manager.stats, manager.expires_at
        status: Literal["ok", "degraded"] = "degraded"
        if expires_at is None:
            detail = f"no access token yet: {_DETAIL}"
        elif stats.last_refresh_success is False:
            detail = "token refresh failing; current token still served until it expires"
        else:
            status, detail = "ok", _DETAIL
        return AuthHealth(
            status,
            detail,
            token_expires_at=expires_at,
            last_refresh_at=stats.last_refresh_at,
            last_refresh_success=stats.last_refresh_success,
            failure_count=stats.failure_count,
            last_error=stats.last_error,
        )

    async def check(self) -> AuthCheck:
        manager = self._started()
        try:
            await manager.get_token()  # the cached one if start fetched it
        except TokenError as exc:
            return AuthCheck("fail", self._with_setting(str(exc)))
        expiry = manager.expires_at
        expires = (
            ""
            if expiry is None
            else f", expires in {(expiry - datetime.now(UTC)).total_seconds():.0f}s"
        )
        return AuthCheck(
            "pass", f"from {manager.token_url}{expires} (audience {manager.audience or '-'})"
        )

    def log_startup(self) -> None:
        logger.info("Auth0 automatic token refresh enabled")

    def _started(self) -> TokenManager:
        if self._manager is None:
            raise RuntimeError("the client-credentials auth is not started")
        return self._manager

    def _with_setting(self, message: str) -> str:
        """A token failure that names no Auth0 setting (the endpoint unreachable or too
        slow) points at the one that chose the endpoint."""
        if "TOOLBRIDGE_AUTH0_" in message:
            return message
        chosen_by = "auth0_token_url" if self._settings.auth0_token_url else "auth0_domain"
        return f"{message}; check {env_name(chosen_by)} and that the identity provider is reachable"
