"""Health of the server (seed §5): auth mode, tenant, API URL and token state, no secrets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from toolbridge_mcp.auth.modes import static_token_expiry
from toolbridge_mcp.backend.runtime import Backend
from toolbridge_mcp.config import AuthMode


class HealthReport(BaseModel):
    """What an operator needs to see whether calls can succeed; never a token or secret."""

    status: Literal["ok", "degraded"] = Field(
        description="degraded: no usable token, or token refreshes are failing"
    )
    auth_mode: AuthMode
    tenant_id: str | None
    api_url: str
    token_expires_at: datetime | None = None
    token_expires_in_seconds: float | None = None
    last_refresh_at: datetime | None = None
    last_refresh_success: bool | None = None
    failure_count: int = 0
    last_error: str | None = None
    detail: str


def health_report(backend: Backend) -> HealthReport:
    """The current health; degraded in auth0 mode when tokens are not coming, in static
    mode when the token has expired (every call would then fail with 401)."""
    manager = backend.manager
    report = HealthReport(
        status="ok",
        auth_mode=backend.mode,
        tenant_id=backend.settings.tenant_id,
        api_url=backend.api_url,
        detail={
            "auth0": "tokens from Auth0 client credentials, refreshed automatically",
            "static": "static TOOLBRIDGE_JWT_TOKEN (deprecated: it is never refreshed)",
            "passthrough": "per-user mode: each MCP request's own Authorization is used",
        }[backend.mode],
    )
    if backend.mode == "static":
        return _static_token_health(report, backend)
    if backend.mode != "auth0":
        return report
    if manager is None:
        return report.model_copy(update={"status": "degraded", "detail": "server not started"})
    expires_at = manager.expires_at
    report = report.model_copy(
        update={
            "token_expires_at": expires_at,
            "token_expires_in_seconds": None
            if expires_at is None
            else round((expires_at - datetime.now(UTC)).total_seconds(), 1),
            "last_refresh_at": manager.last_refresh_at,
            "last_refresh_success": manager.last_refresh_success,
            "failure_count": manager.failure_count,
            "last_error": manager.last_error,
        }
    )
    if expires_at is None:
        return report.model_copy(
            update={"status": "degraded", "detail": "no access token yet: " + report.detail}
        )
    if manager.last_refresh_success is False:
        return report.model_copy(
            update={
                "status": "degraded",
                "detail": "token refresh failing; current token still served until it expires",
            }
        )
    return report


def _static_token_health(report: HealthReport, backend: Backend) -> HealthReport:
    assert backend.settings.jwt_token is not None
    expires_at = static_token_expiry(backend.settings.jwt_token)
    if expires_at is None:
        return report
    seconds = round((expires_at - datetime.now(UTC)).total_seconds(), 1)
    report = report.model_copy(
        update={"token_expires_at": expires_at, "token_expires_in_seconds": seconds}
    )
    if seconds > 0:
        return report
    return report.model_copy(
        update={
            "status": "degraded",
            "detail": "static TOOLBRIDGE_JWT_TOKEN has expired: replace it, or configure "
            "Auth0 client credentials so tokens refresh automatically",
        }
    )
