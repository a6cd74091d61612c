"""``auth0`` mode: OAuth2 client-credentials tokens from a :class:`TokenManager` (Auth0 or
any OAuth2 server; the mode keeps the seed's name)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, Self

import httpx
from loguru import logger

from toolbridge_mcp.auth.bearer import BearerAuth
from toolbridge_mcp.auth.modes.base import AuthCheck, AuthHealth, OutboundAuth
from toolbridge_mcp.config import env_name
from toolbridge_mcp.oauth import TokenError, unverified_claims
from toolbridge_mcp.oauth.client_auth import SECRET_METHODS
from toolbridge_mcp.tokens import CacheState, RefreshSchedule, TokenManager
from toolbridge_mcp.tokens.cache import MemoryTokenCache, token_cache_from_settings

if TYPE_CHECKING:
    from toolbridge_mcp.config import Settings
    from toolbridge_mcp.tokens.redis_cache import RedisTokenCache

CLIENT_CREDENTIALS_SETTINGS = (
    f"{env_name('auth0_client_id')}, {env_name('auth0_client_secret')} and "
    f"{env_name('auth0_token_url')} (or {env_name('auth0_issuer')}, or "
    f"{env_name('auth0_domain')} with {env_name('auth0_audience')})"
)
"""The settings that select client credentials, for messages recommending them."""
JWT_NEEDED = (
    "the token is not a JWT, but the ToolBridge API accepts only JWTs: ask for one with "
    f"{env_name('auth0_resource')} (RFC 8707: the API's URI; e.g. oidc-provider issues opaque "
    f"tokens without it) or {env_name('auth0_audience')} (Auth0)"
)
"""The warning of ``check`` and ``token`` for an opaque token."""


def scope_report(asked: str | None, granted: str | None) -> tuple[str, str | None]:
    """``(report, warning)`` on the scopes asked for (``TOOLBRIDGE_AUTH0_SCOPE``) and
    granted (the token response's ``scope``, else the token's claim)."""
    wanted, got = (asked or "").split(), (granted or "").split()
    report = f"scopes granted: {' '.join(got) or '-'}"
    if wanted:
        report += f" (asked: {' '.join(wanted)})"
    missing = [scope for scope in wanted if scope not in got] if granted is not None else []
    if not missing:
        return report, None
    return report, (
        f"the identity provider did not grant {' '.join(missing)} of the scopes asked for "
        f"({env_name('auth0_scope')}): allow them for the client there, or ask for fewer"
    )


def granted_scope(response_scope: str | None, claims: dict[str, object]) -> str | None:
    """The scopes granted: the token response's ``scope``, else the token's ``scope``,
    ``scp`` or Auth0 ``permissions`` claim."""
    if response_scope is not None:
        return response_scope
    for name in ("scope", "scp", "permissions"):
        value = claims.get(name)
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            return " ".join(str(item) for item in value)
    return None


class ClientCredentialsAuth(OutboundAuth):
    """Tokens from the :class:`TokenManager` (started with the server), sent as
    ``Authorization: Bearer``; a 401 refetches once (:class:`BearerAuth`)."""

    name = "auth0"
    selected_by = "auth0_client_id"
    error_hint = (
        "check TOOLBRIDGE_AUTH0_AUDIENCE or TOOLBRIDGE_AUTH0_RESOURCE (the API's audience) and "
        "TOOLBRIDGE_AUTH0_DOMAIN, TOOLBRIDGE_AUTH0_TOKEN_URL or TOOLBRIDGE_AUTH0_ISSUER "
        "(the issuer the API trusts)"
    )
    caches_tokens = True

    def __init__(self, settings: Settings, *, refetch_cooldown: float = 60.0) -> None:
        self._settings = settings
        self._refetch_cooldown = refetch_cooldown
        self._manager: TokenManager | None = None
        self._bearer: BearerAuth | None = None
        self._cache: MemoryTokenCache | RedisTokenCache | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(settings)

    @classmethod
    def cache_secret(cls, settings: Settings) -> str | None:
        secret = settings.auth0_client_secret
        if secret is None or settings.auth0_client_auth_method not in SECRET_METHODS:
            return None
        return secret.get_secret_value()

    async def start(self) -> None:
        """A fresh token manager (a closed one cannot restart) on the token cache (Redis in
        fleet mode), and its first token (the fleet's, if one is stored)."""
        if self._manager is not None:
            return
        cache = token_cache_from_settings(self._settings, secret=self.cache_secret(self._settings))
        await cache.start()
        manager = TokenManager.from_settings(self._settings, cache=cache)
        self._cache, self._manager = cache, manager
        self._bearer = BearerAuth(manager, refetch_cooldown=self._refetch_cooldown)
        await manager.start()

    async def aclose(self) -> None:
        manager, self._manager, self._bearer = self._manager, None, None
        cache, self._cache = self._cache, None
        if manager is not None:
            await manager.close()
        if cache is not None:
            await cache.aclose()

    @property
    def token_cache(self) -> CacheState | None:
        return None if self._cache is None else self._cache.state

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

    def _source_text(self) -> str:
        """Where tokens come from, as health output says it: Auth0 only when it is."""
        settings = self._settings
        if settings.auth0_domain and not settings.auth0_token_url:
            return f"Auth0 client credentials ({settings.auth0_domain})"
        manager = self._manager
        endpoint = manager.token_url if manager is not None else settings.auth0_issuer
        return f"OAuth client credentials from {endpoint}"

    def health(self) -> AuthHealth:
        manager = self._manager
        if manager is None:
            return AuthHealth("degraded", "server not started")
        stats, expires_at = manager.stats, manager.expires_at
        status: Literal["ok", "degraded"] = "degraded"
        source = self._source_text()
        next_refresh = manager.next_refresh_at
        when = (
            ""
            if next_refresh is None
            else f"; next refresh at {next_refresh.isoformat(timespec='seconds')}"
        )
        if expires_at is None or expires_at <= datetime.now(UTC):
            detail = f"no usable access token: {source}, retrying{when}"
        elif stats.last_refresh_success is False:
            detail = (
                f"token refresh failing ({source}); the current token is served until it "
                f"expires{when}"
            )
        else:
            status, detail = "ok", f"tokens from {source}, refreshed on a timer{when}"
        return AuthHealth(
            status,
            detail,
            token_expires_at=expires_at,
            last_refresh_at=stats.last_refresh_at,
            last_refresh_success=stats.last_refresh_success,
            failure_count=stats.failure_count,
            last_error=stats.last_error,
            token_cache=self.token_cache,
        )

    async def check(self) -> AuthCheck:
        manager = self._started()
        try:
            token = await manager.get_token()  # the cached one if start fetched it
        except TokenError as exc:
            return AuthCheck("fail", self._with_setting(str(exc)))
        expiry = manager.expires_at
        expires = (
            ""
            if expiry is None
            else f", expires in {(expiry - datetime.now(UTC)).total_seconds():.0f}s"
        )
        claims = unverified_claims(token)
        scopes, scope_warning = scope_report(
            self._settings.auth0_scope, granted_scope(manager.scope, claims)
        )
        warnings = [w for w in (None if claims else JWT_NEEDED, scope_warning) if w]
        detail = (
            f"from {manager.token_url}{expires} (audience {manager.audience or '-'}; "
            f"{'JWT' if claims else 'opaque'}; {scopes})"
        )
        if warnings:
            return AuthCheck("warn", f"{detail}. WARNING: {'; '.join(warnings)}")
        return AuthCheck("pass", detail)

    def log_startup(self) -> None:
        logger.info("Auth0 automatic token refresh enabled")  # the seed's words (§5)
        schedule = RefreshSchedule.from_settings(self._settings)
        logger.info(
            "OAuth client credentials from {}; tokens living {:.0f}s or more are refreshed "
            "after {:.0%} of their lifetime, shorter ones {:.0f}s before expiry, on a timer",
            self._settings.auth0_token_url
            or self._settings.auth0_issuer
            or self._settings.auth0_domain,
            schedule.long_lived_threshold,
            schedule.refresh_fraction,
            schedule.refresh_buffer,
        )

    def _started(self) -> TokenManager:
        if self._manager is None:
            raise RuntimeError("the client-credentials auth is not started")
        return self._manager

    def _with_setting(self, message: str) -> str:
        """A token failure that names no setting (the endpoint unreachable or too slow)
        points at the one that chose the endpoint."""
        if "TOOLBRIDGE_AUTH0_" in message:
            return message
        settings = self._settings
        chosen_by = (
            "auth0_token_url"
            if settings.auth0_token_url
            else "auth0_domain"
            if settings.auth0_domain
            else "auth0_issuer"
        )
        return f"{message}; check {env_name(chosen_by)} and that the identity provider is reachable"
