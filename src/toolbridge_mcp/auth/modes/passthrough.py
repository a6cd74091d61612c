"""``passthrough`` (per-user, legacy) mode: each MCP caller's own token, forwarded to the API.

Only with ``TOOLBRIDGE_OAUTH_PASSTHROUGH=true``, and warned about at start: the MCP
authorization spec forbids passing a client's token through to an upstream API (the
per-user default is :class:`~toolbridge_mcp.auth.modes.exchange.TokenExchangeAuth`).

With ``TOOLBRIDGE_OAUTH_ISSUER`` set the MCP endpoint verifies that token first
(:func:`caller_auth_provider`). FastMCP is imported only where it is used, so that choosing
a mode (which reading the settings does) stays light.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Self

from loguru import logger

from toolbridge_mcp.auth.modes.base import (
    MISSING_AUTHENTICATION,
    AuthCheck,
    AuthHealth,
    MissingAuthenticationError,
    OutboundAuth,
)
from toolbridge_mcp.auth.modes.client_credentials import CLIENT_CREDENTIALS_SETTINGS
from toolbridge_mcp.config import env_name
from toolbridge_mcp.oauth import unverified_claims

if TYPE_CHECKING:
    from fastmcp.server.auth import RemoteAuthProvider

    from toolbridge_mcp.config import Settings

_STDIO_HINT = (
    " Per-user mode forwards the MCP client's Authorization header, which only the HTTP "
    "transport carries; under stdio configure OAuth client credentials "
    "(TOOLBRIDGE_AUTH0_CLIENT_ID, _CLIENT_SECRET and _TOKEN_URL, or _DOMAIN and _AUDIENCE for "
    "Auth0) or a static token (TOOLBRIDGE_JWT_TOKEN)."
)


class PassthroughAuth(OutboundAuth):
    """The MCP request's own ``Authorization`` header, or rather the token the MCP endpoint
    verified when it verifies callers (should a request carry two ``Authorization``
    headers, the verified one is forwarded, not the other)."""

    name = "passthrough"
    selected_by = "oauth_passthrough"  # =true; the seed's fallback, now explicit
    per_user = True
    error_hint = (
        "the Authorization token your MCP client sent was rejected; sign in again or "
        "get a token for this API"
    )

    @classmethod
    def is_selected(cls, settings: Settings) -> bool:
        return settings.oauth_passthrough

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(settings)

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

    def health(self) -> AuthHealth:
        return AuthHealth("ok", "per-user mode: each MCP request's own Authorization is used")

    async def check(self) -> AuthCheck:
        return AuthCheck(
            "skip",
            "per-user mode: the API is called with each MCP client's own token, so there is "
            f"none to check with here; set {CLIENT_CREDENTIALS_SETTINGS} (or "
            f"{env_name('jwt_token')}) to check the API end to end",
        )

    def log_startup(self) -> None:
        logger.warning(
            "TOOLBRIDGE_OAUTH_PASSTHROUGH=true: each MCP caller's own token is forwarded to "
            "the API as is. This is NOT MCP-spec conformant (the MCP authorization spec "
            "forbids token passthrough: tokens must be issued for this server and never sent "
            "on); unset it to have callers' tokens exchanged for API tokens (RFC 8693)"
        )
        logger.info("No backend authentication configured (per-user mode)")
        settings = self._settings
        if settings is not None and settings.oauth_issuer is not None:
            logger.info(
                "MCP callers must present tokens issued by {} for audience {}; OAuth metadata "
                "at {}/.well-known/oauth-protected-resource/mcp (/sse for the SSE transport)",
                settings.oauth_issuer,
                settings.oauth_audience,
                settings.public_base_url(),
            )

    def mcp_auth(self) -> RemoteAuthProvider | None:
        return None if self._settings is None else caller_auth_provider(self._settings)

    def _caller_header(self) -> str:
        from fastmcp.server.dependencies import (
            get_access_token,
            get_http_headers,
            get_http_request,
        )

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


def caller_auth_provider(settings: Settings) -> RemoteAuthProvider | None:
    """Per-user mode's protection of the MCP endpoint, when ``TOOLBRIDGE_OAUTH_ISSUER`` is
    set: RFC 9728 metadata telling MCP clients where to get a token, and 401 with
    ``WWW-Authenticate`` for a missing or invalid one, so a bad token never reaches the API.
    The audience is always checked: without it a token for any API of the issuer would do.
    Without ``TOOLBRIDGE_OAUTH_JWKS_URL`` the keys are the ``jwks_uri`` of the issuer's
    metadata, fetched here, once, as the server is built."""
    if settings.oauth_issuer is None or settings.oauth_audience is None:
        return None
    from fastmcp.server.auth import RemoteAuthProvider
    from pydantic import AnyHttpUrl

    from toolbridge_mcp.auth.verifier import StrictJWTVerifier

    verifier = StrictJWTVerifier(
        jwks_uri=settings.jwks_url(discover=True),
        issuer=settings.oauth_issuer,
        audience=settings.oauth_audience,
    )
    return RemoteAuthProvider(
        token_verifier=verifier,
        authorization_servers=[AnyHttpUrl(settings.oauth_issuer)],
        base_url=settings.public_base_url(),
        resource_name="ToolBridge",
    )
