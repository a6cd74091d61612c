"""``static`` mode: the deprecated ``TOOLBRIDGE_JWT_TOKEN``, sent as is."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Self

from loguru import logger
from pydantic import SecretStr

from toolbridge_mcp.auth.modes.base import AuthCheck, AuthHealth, OutboundAuth
from toolbridge_mcp.auth.modes.client_credentials import CLIENT_CREDENTIALS_SETTINGS
from toolbridge_mcp.config import env_name
from toolbridge_mcp.oauth import unverified_claims

if TYPE_CHECKING:
    from toolbridge_mcp.config import Settings

_DETAIL = "static TOOLBRIDGE_JWT_TOKEN (deprecated: it is never refreshed)"


class StaticTokenAuth(OutboundAuth):
    """One token for every request, never refreshed: it works until it expires."""

    name = "static"
    selected_by = "jwt_token"
    error_hint = (
        "TOOLBRIDGE_JWT_TOKEN is expired or not valid for this API; replace it, or better "
        "configure OAuth client credentials (TOOLBRIDGE_AUTH0_CLIENT_ID, _CLIENT_SECRET and "
        "_TOKEN_URL, or _DOMAIN and _AUDIENCE for Auth0) so tokens refresh automatically"
    )

    def __init__(self, token: SecretStr) -> None:
        self._token = token

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        if settings.jwt_token is None:
            raise ValueError(f"static mode needs {env_name('jwt_token')}")
        return cls(settings.jwt_token)

    async def get_auth_header(self) -> str:
        value = self._token.get_secret_value()
        return value if value.lower().startswith("bearer ") else f"Bearer {value}"

    def health(self) -> AuthHealth:
        expires_at = static_token_expiry(self._token)
        if expires_at is None or round((expires_at - datetime.now(UTC)).total_seconds(), 1) > 0:
            return AuthHealth("ok", _DETAIL, token_expires_at=expires_at)
        return AuthHealth(
            "degraded",
            "static TOOLBRIDGE_JWT_TOKEN has expired: replace it, or configure OAuth client "
            "credentials so tokens refresh automatically",
            token_expires_at=expires_at,
        )

    async def check(self) -> AuthCheck:
        deprecated = (
            f"{env_name('jwt_token')} (deprecated: never refreshed; set "
            f"{CLIENT_CREDENTIALS_SETTINGS})"
        )
        expires_at = static_token_expiry(self._token)
        if expires_at is None:
            return AuthCheck("pass", f"static {deprecated}; expiry unknown")
        when = expires_at.isoformat(timespec="seconds")
        left = (expires_at - datetime.now(UTC)).total_seconds()
        if left <= 0:
            return AuthCheck(
                "fail",
                f"{env_name('jwt_token')} expired at {when}; replace it or set "
                f"{CLIENT_CREDENTIALS_SETTINGS} so tokens refresh automatically",
            )
        return AuthCheck("pass", f"static {deprecated}; expires in {left:.0f}s ({when})")

    def log_startup(self) -> None:
        logger.warning(
            "Using static JWT token (deprecated). "
            "Switch to Auth0 client credentials for automatic refresh."
        )


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
