"""The three ways the server authenticates to the API (seed §4-5), as ``httpx.Auth``.

``auth0`` signs with managed client-credentials tokens (and heals a revoked token through
:class:`BearerAuth`); ``static`` sends the deprecated ``TOOLBRIDGE_JWT_TOKEN``; ``passthrough``
forwards the MCP caller's own ``Authorization`` header, so each user acts as themselves,
and with ``TOOLBRIDGE_OAUTH_ISSUER`` set the MCP endpoint verifies that token first
(:func:`caller_auth_provider`). Each mode also names the *principal* requests are made for,
which keys sync sessions.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import AsyncGenerator, Generator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar

import httpx
from fastmcp.server.auth import RemoteAuthProvider
from fastmcp.server.auth.providers.jwt import JWTVerifier
from fastmcp.server.dependencies import get_access_token, get_http_headers, get_http_request
from loguru import logger
from pydantic import AnyHttpUrl, SecretStr

from toolbridge_mcp.auth.bearer import BearerAuth
from toolbridge_mcp.auth.oauth import unverified_claims
from toolbridge_mcp.auth.token_manager import TokenManager

if TYPE_CHECKING:
    from toolbridge_mcp.config import AuthMode, Settings

MISSING_AUTHENTICATION = (
    "Missing authentication. Configure TOOLBRIDGE_AUTH0_CLIENT_ID or TOOLBRIDGE_JWT_TOKEN."
)
_STDIO_HINT = (
    " Per-user mode forwards the MCP client's Authorization header, which only the HTTP "
    "transport carries; under stdio configure Auth0 client credentials "
    "(TOOLBRIDGE_AUTH0_CLIENT_ID, _CLIENT_SECRET, _DOMAIN, _AUDIENCE) or a static token "
    "(TOOLBRIDGE_JWT_TOKEN)."
)
SERVICE_PRINCIPAL = "service"


class MissingAuthenticationError(Exception):
    """No credentials for this request; the message says what to configure."""


class BackendAuth(httpx.Auth):
    """Base of the modes: the ``Authorization`` value and the principal of a request."""

    mode: ClassVar[AuthMode]

    async def get_auth_header(self) -> str:
        """The ``Authorization`` header value for the current request (seed §4)."""
        raise NotImplementedError

    def principal(self) -> str:
        """Whom requests are made for now; sessions are created once per principal."""
        return SERVICE_PRINCIPAL

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        raise RuntimeError(f"{type(self).__name__} needs an httpx.AsyncClient")
        yield request  # pragma: no cover - makes this a generator, as httpx expects

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = await self.get_auth_header()
        yield request


class ClientCredentialsAuth(BearerAuth, BackendAuth):
    """``auth0`` mode: tokens from the :class:`TokenManager`; a 401 refetches once.

    If even the freshly fetched token is refused, the API does not accept this client's
    tokens at all (wrong audience or issuer): refetching on every call would only burn the
    identity provider's quota, so 401s are passed through without refetching for a while.
    """

    mode = "auth0"

    def __init__(self, manager: TokenManager, *, refetch_cooldown: float = 60.0) -> None:
        super().__init__(manager)
        self.manager = manager
        self._cooldown = refetch_cooldown
        self._no_refetch_until = float("-inf")

    async def get_auth_header(self) -> str:
        return f"Bearer {await self.manager.get_token()}"

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if time.monotonic() < self._no_refetch_until:
            request.headers["Authorization"] = await self.get_auth_header()
            yield request
            return
        flow = super().async_auth_flow(request)
        response = yield await flow.__anext__()
        try:
            retry = await flow.asend(response)
        except StopAsyncIteration:
            return
        response = yield retry
        if response.status_code == httpx.codes.UNAUTHORIZED:
            self._no_refetch_until = time.monotonic() + self._cooldown
            logger.error(
                "The API rejected a freshly fetched token too: it does not accept this "
                "client's tokens (check TOOLBRIDGE_AUTH0_AUDIENCE and the issuer the API "
                "trusts); not refetching on 401 for {:.0f}s",
                self._cooldown,
            )
        with contextlib.suppress(StopAsyncIteration):
            await flow.asend(response)


class StaticTokenAuth(BackendAuth):
    """``static`` mode: the deprecated ``TOOLBRIDGE_JWT_TOKEN``, sent as is."""

    mode = "static"

    def __init__(self, token: SecretStr) -> None:
        self._token = token

    async def get_auth_header(self) -> str:
        value = self._token.get_secret_value()
        return value if value.lower().startswith("bearer ") else f"Bearer {value}"


def static_token_expiry(token: SecretStr) -> datetime | None:
    """When the static token expires, from its ``exp`` claim; ``None`` when it does not
    say (an opaque token, a JWT without or with an impossible ``exp``)."""
    value = token.get_secret_value().strip()
    if value.lower().startswith("bearer "):
        value = value[len("bearer ") :].strip()
    expiry = unverified_claims(value).get("exp")
    if not isinstance(expiry, int | float) or isinstance(expiry, bool):
        return None
    try:
        return datetime.fromtimestamp(expiry, UTC)
    except (OverflowError, OSError, ValueError):
        return None


class PassthroughAuth(BackendAuth):
    """``passthrough`` mode: the MCP request's own ``Authorization`` header, or rather the
    token the MCP endpoint verified when it verifies callers (should a request carry two
    ``Authorization`` headers, the verified one is forwarded, not the other)."""

    mode = "passthrough"

    async def get_auth_header(self) -> str:
        return self._caller_header()

    def principal(self) -> str:
        """The caller's subject from their token (unverified: it only keys sessions, the
        API verifies the token), else a hash of the token; never the token itself."""
        header = self._caller_header()
        token = header.split(" ", 1)[1] if " " in header else header
        claims = unverified_claims(token)
        subject, issuer = claims.get("sub"), claims.get("iss")
        if isinstance(subject, str) and subject:
            return f"sub:{issuer}|{subject}"
        return "token:" + hashlib.sha256(token.encode()).hexdigest()[:32]

    def _caller_header(self) -> str:
        verified = get_access_token()
        if verified is not None:
            return f"Bearer {verified.token}"
        header = get_http_headers(include={"authorization"}).get("authorization")
        if header:
            return header
        try:
            get_http_request()
        except RuntimeError:
            raise MissingAuthenticationError(MISSING_AUTHENTICATION + _STDIO_HINT) from None
        raise MissingAuthenticationError(
            MISSING_AUTHENTICATION + " Or send 'Authorization: Bearer <token>' with each MCP "
            "request (per-user mode)."
        )


def backend_auth(settings: Settings, manager: TokenManager | None) -> BackendAuth:
    """The auth for ``settings.auth_mode()``; ``manager`` is required in ``auth0`` mode."""
    mode = settings.auth_mode()
    if mode == "auth0":
        if manager is None:
            raise ValueError("auth0 mode needs a TokenManager")
        return ClientCredentialsAuth(manager)
    if mode == "static":
        assert settings.jwt_token is not None
        return StaticTokenAuth(settings.jwt_token)
    return PassthroughAuth()


def caller_auth_provider(settings: Settings) -> RemoteAuthProvider | None:
    """Per-user mode's protection of the MCP endpoint, when ``TOOLBRIDGE_OAUTH_ISSUER`` is
    set: RFC 9728 metadata telling MCP clients where to get a token, and 401 with
    ``WWW-Authenticate`` for a missing or invalid one, so a bad token never reaches the API.
    The audience is always checked: without it a token for any API of the issuer would do."""
    if settings.oauth_issuer is None or settings.oauth_audience is None:
        return None
    verifier = JWTVerifier(
        jwks_uri=settings.jwks_url(),
        issuer=settings.oauth_issuer,
        audience=settings.oauth_audience,
    )
    return RemoteAuthProvider(
        token_verifier=verifier,
        authorization_servers=[AnyHttpUrl(settings.oauth_issuer)],
        base_url=settings.public_base_url(),
        resource_name="ToolBridge",
    )


def log_auth_mode(settings: Settings) -> None:
    """Says once, at startup, how the server authenticates (seed §5 wording)."""
    mode = settings.auth_mode()
    if mode == "auth0":
        logger.info("Auth0 automatic token refresh enabled")
    elif mode == "static":
        logger.warning(
            "Using static JWT token (deprecated). "
            "Switch to Auth0 client credentials for automatic refresh."
        )
    else:
        logger.info("No backend authentication configured (per-user mode)")
        if settings.oauth_issuer is not None:
            logger.info(
                "MCP callers must present tokens issued by {} for audience {}; OAuth metadata "
                "at {}/.well-known/oauth-protected-resource/mcp (/sse for the SSE transport)",
                settings.oauth_issuer,
                settings.oauth_audience,
                settings.public_base_url(),
            )


async def get_auth_header(auth: BackendAuth) -> str:
    """The ``Authorization`` header value for the API under the configured mode (seed §4).

    Raises :class:`MissingAuthenticationError` in per-user mode without a caller token.
    """
    return await auth.get_auth_header()
