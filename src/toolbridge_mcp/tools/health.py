"""Health of the server (seed §5): auth mode, tenant, API URL and token state, no secrets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from toolbridge_mcp.backend.runtime import Backend
from toolbridge_mcp.config import AuthMode


class TokenCacheHealth(BaseModel):
    """Where tokens are cached: shared by the fleet (Redis), or this process's own."""

    backend: Literal["memory", "redis"]
    shared: bool = Field(
        description="whether the fleet shares this server's tokens (false while Redis is down)"
    )
    since: datetime | None = Field(default=None, description="when shared last changed")


class HealthReport(BaseModel):
    """What an operator needs to see whether calls can succeed; never a token or secret."""

    status: Literal["ok", "degraded"] = Field(
        description="degraded: no usable token (none, or expired), or token refreshes are failing"
    )
    auth_mode: AuthMode = Field(description="how the server authenticates to the API")
    tenant_id: str | None
    api_url: str
    token_expires_at: datetime | None = None
    token_expires_in_seconds: float | None = None
    token_expired_seconds_ago: float | None = Field(
        default=None, description="set when the current token has expired: seconds since"
    )
    last_refresh_at: datetime | None = None
    last_refresh_success: bool | None = None
    failure_count: int = 0
    last_error: str | None = None
    token_cache: TokenCacheHealth | None = Field(
        default=None, description="modes that fetch tokens: where they are cached"
    )
    detail: str


def health_report(backend: Backend) -> HealthReport:
    """The current health; the auth mode says whether its token is usable (degraded in
    auth0 mode when tokens are not coming, in static mode when the token has expired)."""
    auth = backend.auth.health()
    expires_at = auth.token_expires_at
    left = None if expires_at is None else (expires_at - datetime.now(UTC)).total_seconds()
    status, detail, expired_ago = auth.status, auth.detail, None
    if left is not None and left <= 0:
        # Whatever the mode says: an expired token cannot make a call succeed (an idle
        # server whose identity provider is down never tried to refresh).
        expired_ago = round(-left, 1)
        status = "degraded"
        detail = f"the access token expired {expired_ago:g} s ago; {detail}"
    cache = auth.token_cache
    return HealthReport(
        status=status,
        auth_mode=backend.auth.name,
        tenant_id=backend.settings.tenant_id,
        api_url=backend.api_url,
        token_expires_at=expires_at,
        token_expires_in_seconds=None if left is None else round(left, 1),
        token_expired_seconds_ago=expired_ago,
        last_refresh_at=auth.last_refresh_at,
        last_refresh_success=auth.last_refresh_success,
        failure_count=auth.failure_count,
        last_error=auth.last_error,
        token_cache=None
        if cache is None
        else TokenCacheHealth(backend=cache.backend, shared=cache.shared, since=cache.since),
        detail=detail,
    )
