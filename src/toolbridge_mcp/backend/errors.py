"""What can go wrong talking to the API, and the one place it becomes a tool error.

Every message says what to do next (which uid, which setting, when to retry) and is built
from status codes, the API's own ``error`` text and setting *names* — never a header value,
so no token or secret can reach a tool result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fastmcp.exceptions import ToolError

from toolbridge_mcp.auth.modes import MissingAuthenticationError
from toolbridge_mcp.auth.oauth import TokenError
from toolbridge_mcp.config import AuthMode

_MAX_API_MESSAGE = 300


class BackendError(Exception):
    """A request to the API did not succeed."""


class ApiUnavailableError(BackendError):
    """No HTTP answer: connection refused, DNS, timeout, broken connection."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ApiError(BackendError):
    """The API answered with an error status; ``message`` is its ``error`` field."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        retry_after: float | None = None,
        correlation_id: str | None = None,
    ) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message[:_MAX_API_MESSAGE]
        self.retry_after = retry_after
        self.correlation_id = correlation_id


@dataclass(frozen=True, slots=True)
class ErrorContext:
    """What the failed call was about, for the message."""

    api_url: str
    auth_mode: AuthMode
    tenant_configured: bool
    entity: str | None = None
    uid: str | None = None
    get_tool: str | None = None
    list_tool: str | None = None
    current_version: int | None = None


_AUTH_HINTS: dict[AuthMode, str] = {
    "auth0": (
        "check TOOLBRIDGE_AUTH0_AUDIENCE (must be the API's audience) and "
        "TOOLBRIDGE_AUTH0_DOMAIN or TOOLBRIDGE_AUTH0_TOKEN_URL (the issuer the API trusts)"
    ),
    "static": (
        "TOOLBRIDGE_JWT_TOKEN is expired or not valid for this API; replace it, or better "
        "configure Auth0 client credentials (TOOLBRIDGE_AUTH0_CLIENT_ID, _CLIENT_SECRET, "
        "_DOMAIN, _AUDIENCE) so tokens refresh automatically"
    ),
    "passthrough": (
        "the Authorization token your MCP client sent was rejected; sign in again or "
        "get a token for this API"
    ),
}
_TENANT_HINT = (
    "check TOOLBRIDGE_TENANT_ID and TOOLBRIDGE_TENANT_HEADER_SECRET (they must match the "
    "API's tenant configuration)"
)


def _subject(ctx: ErrorContext) -> str:
    name = ctx.entity or "item"
    return f"{name} {ctx.uid!r}" if ctx.uid else name


def _auth_message(exc: ApiError, ctx: ErrorContext) -> str:
    verb = "rejected the credentials" if exc.status == 401 else "refused access"
    hints = [_AUTH_HINTS[ctx.auth_mode]]
    if ctx.tenant_configured or any(w in exc.message.lower() for w in ("tenant", "signature")):
        hints.append(_TENANT_HINT)
    return (
        f"The ToolBridge API {verb} (HTTP {exc.status}: {exc.message}). " + "; ".join(hints) + "."
    )


def _api_message(exc: ApiError, ctx: ErrorContext) -> str:
    status = exc.status
    if status == 404:
        return (
            f"{_subject(ctx).capitalize()} not found. Check the uid; "
            f"{ctx.list_tool or 'the list tool'} shows the existing ones."
        )
    if status == 410:
        tool = ctx.get_tool or "the get tool"
        return (
            f"{_subject(ctx).capitalize()} has been deleted. To see it anyway call {tool} "
            "with include_deleted=true."
        )
    if status == 412:
        current = (
            f"its current version is {ctx.current_version}"
            if ctx.current_version is not None
            else "it has changed since you read it"
        )
        retry = (
            f"retry with if_version={ctx.current_version}"
            if ctx.current_version is not None
            else "read it again and retry with its current version"
        )
        return (
            f"Version conflict: {_subject(ctx)} was modified by someone else; {current}. "
            f"Re-read it, reapply your change and {retry}."
        )
    if status in (400, 422):
        return f"The ToolBridge API rejected the request: {exc.message}"
    if status in (401, 403):
        return _auth_message(exc, ctx)
    if status == 409:
        return f"Conflict: {exc.message}"
    if status == 429:
        wait = f"{math.ceil(exc.retry_after)} s" if exc.retry_after is not None else "a minute"
        return f"The ToolBridge API rate limit was reached; retry in {wait}."
    if status >= 500:
        return f"ToolBridge API unavailable at {ctx.api_url} (HTTP {status}); try again shortly."
    return f"The ToolBridge API answered HTTP {status}: {exc.message}"


def to_tool_error(exc: Exception, ctx: ErrorContext) -> ToolError:
    """The :class:`ToolError` for a failed backend call; re-raises anything unexpected."""
    if isinstance(exc, ApiError):
        return ToolError(_api_message(exc, ctx))
    if isinstance(exc, ApiUnavailableError):
        return ToolError(
            f"ToolBridge API unavailable at {ctx.api_url} ({exc.reason}); check that it is "
            "running and TOOLBRIDGE_GO_API_BASE_URL, then try again."
        )
    if isinstance(exc, MissingAuthenticationError):
        return ToolError(str(exc))
    if isinstance(exc, TokenError):
        return ToolError(f"No access token for the ToolBridge API: {exc}")
    raise exc
