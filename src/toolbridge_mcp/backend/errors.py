"""What can go wrong talking to the API, and the one place it becomes a tool error.

:class:`ApiError` keeps what the API said — status, its ``error`` text, ``correlation_id``,
the current ``version`` of a 412, ``Retry-After``, whether it sent a ``WWW-Authenticate``
challenge — so a message can be precise without asking the API again. Every message says
what to do next (which uid, which setting, when to retry) and is built from status codes,
the API's own text and setting *names*, never a header value: no token or secret can reach
a tool result.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import httpx
from fastmcp.exceptions import ToolError

from toolbridge_mcp.auth.bearer import UNKNOWN_KEY_TEXT
from toolbridge_mcp.auth.modes import MissingAuthenticationError
from toolbridge_mcp.oauth import TokenError, parse_retry_after

_MAX_API_MESSAGE = 300
_GO_VERSION_MISMATCH = re.compile(r"actual (\d{1,18})\b")
"""The Go API's 412 text (``version mismatch: ... expected 1, actual 3``) has no field."""


class BackendError(Exception):
    """A request to the API did not succeed."""


class ApiUnavailableError(BackendError):
    """No HTTP answer: connection refused, DNS, timeout, broken connection. ``sent``: the
    request may have reached the API (False only when no connection was ever made, so a
    write certainly was not applied)."""

    def __init__(self, reason: str, *, sent: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent


class ApiError(BackendError):
    """The API answered with an error status (or with a body the client cannot read).

    ``message`` is the API's ``error`` text (or its plain-text body, as the Go API sends for
    authentication failures); ``current_version`` the version a 412 reports.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        retry_after: float | None = None,
        correlation_id: str | None = None,
        current_version: int | None = None,
        challenge: str | None = None,
        deleted_at: str | None = None,
    ) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message[:_MAX_API_MESSAGE]
        self.retry_after = retry_after
        self.correlation_id = correlation_id
        self.current_version = current_version
        self.challenge = challenge
        """The ``WWW-Authenticate`` header, if any (the Go API never sends one)."""
        self.deleted_at = deleted_at

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """The error an API answer describes: JSON ``{"error", "correlation_id", ...}`` or
        a plain-text body."""
        body = json_or_none(response)
        message = ""
        correlation_id = response.headers.get("X-Correlation-ID") or None
        current_version = None
        deleted_at = None
        if isinstance(body, dict):
            if isinstance(body.get("error"), str):
                message = body["error"]
            if isinstance(body.get("correlation_id"), str) and body["correlation_id"]:
                correlation_id = body["correlation_id"]
            current_version = _int_or_none(body.get("version"))
            if isinstance(body.get("deletedAt"), str):
                deleted_at = body["deletedAt"]
        elif body is None and response.content:
            message = _first_line(response.text)
        if response.status_code == 412 and current_version is None:
            found = _GO_VERSION_MISMATCH.search(message)
            current_version = int(found.group(1)) if found else None
        return cls(
            response.status_code,
            message or response.reason_phrase or "error",
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            correlation_id=correlation_id,
            current_version=current_version,
            challenge=response.headers.get("WWW-Authenticate"),
            deleted_at=deleted_at,
        )


def json_or_none(response: httpx.Response) -> Any:
    """The decoded JSON body, or ``None`` if there is none or it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return "".join(ch for ch in line if ch.isprintable())


@dataclass(frozen=True, slots=True)
class ErrorContext:
    """What the failed call was about, for the message."""

    api_url: str
    auth_mode: str
    tenant_configured: bool
    entity: str | None = None
    uid: str | None = None
    get_tool: str | None = None
    list_tool: str | None = None
    auth_hint: str | None = None
    """What to check when the API refuses the token: the auth mode's ``error_hint``."""
    write: str | None = None
    """The write the call made (``create``, ``update``, ...); ``None`` for reads. A write
    without an answer may have been applied: the message says how to check."""


_TENANT_SUSPECT = (
    "check TOOLBRIDGE_TENANT_ID and TOOLBRIDGE_TENANT_HEADER_SECRET (they must match the "
    "API's tenant configuration, and this machine's clock must be within 5 minutes of the "
    "API's)"
)
_TENANT_UNSET = (
    "if the API requires tenant headers, set TOOLBRIDGE_TENANT_ID and "
    "TOOLBRIDGE_TENANT_HEADER_SECRET (both are unset here)"
)


_TOKEN_GENERIC = "its audience and issuer must be the ones the API trusts"  # noqa: S105


def _token_suspect(ctx: ErrorContext) -> str:
    hint = ctx.auth_hint or _TOKEN_GENERIC
    if "issuer" not in hint.lower():
        hint += " (the token's audience and issuer must be the ones the API trusts)"
    return hint


def _subject(ctx: ErrorContext) -> str:
    name = ctx.entity or "item"
    return f"{name} {ctx.uid!r}" if ctx.uid else name


def _mentions_tenant(exc: ApiError) -> bool:
    return any(word in exc.message.lower() for word in ("tenant", "signature"))


def _auth_message(exc: ApiError, ctx: ErrorContext) -> str:
    """401 and 403. A 401 names both suspects, tenant headers and token: the Go API answers
    both failures with a bare 401 (``Unauthorized: invalid tenant headers`` or
    ``unauthorized``, no challenge), and a proxy may even lose that text."""
    token = _token_suspect(ctx)
    tenant = _TENANT_SUSPECT if ctx.tenant_configured else _TENANT_UNSET
    said = f"HTTP {exc.status}: {exc.message}"
    if exc.status == 401 and UNKNOWN_KEY_TEXT in exc.message:
        return (
            f"The ToolBridge API does not know the key the token is signed with ({said}), even "
            "after re-reading the identity provider's keys. If the identity provider has just "
            "rotated its keys, retry in a few seconds; otherwise the token comes from another "
            "identity provider than the API's keys (compare the token endpoint or issuer here "
            "with the API's TOOLBRIDGE_API_JWKS_URL or TOOLBRIDGE_API_ISSUER)."
        )
    if exc.status == 401 and _mentions_tenant(exc):
        return (
            f"The ToolBridge API refused the tenant headers ({said}). First suspect, the "
            f"tenant: {tenant}. Second suspect, the token: {token}."
        )
    if exc.status == 401:
        if exc.challenge is not None and not ctx.tenant_configured:
            return f"The ToolBridge API rejected the credentials ({said}); {token}."
        return (
            f"The ToolBridge API rejected the credentials ({said}). First suspect, the "
            f"token: {token}. Second suspect, the tenant headers: {tenant}."
        )
    if ctx.tenant_configured or _mentions_tenant(exc):
        return f"The ToolBridge API refused access ({said}); {token}; {tenant}."
    return f"The ToolBridge API refused access ({said}); {token}."


def _conflict_message(exc: ApiError, ctx: ErrorContext) -> str:
    subject = _subject(ctx)
    if exc.current_version is None:
        return (
            f"Version conflict: {subject} has changed since you read it. Read it again "
            f"({ctx.get_tool or 'the get tool'}), reapply your change and retry with its "
            "current version as if_match."
        )
    version = exc.current_version
    return (
        f"Version conflict: {subject} is at version {version}, not the version given in "
        f"if_match (someone else changed it). Re-read it with {ctx.get_tool or 'the get tool'}, "
        f"reapply your change and retry with if_match={version}."
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
        when = f" (at {exc.deleted_at})" if exc.deleted_at else ""
        return (
            f"{_subject(ctx).capitalize()} has been deleted{when}. To see it anyway call "
            f"{tool} with include_deleted=true."
        )
    if status == 412:
        return _conflict_message(exc, ctx)
    if status in (400, 422):
        return f"The ToolBridge API rejected the request: {exc.message}"
    if status in (401, 403):
        return _auth_message(exc, ctx)
    if status == 409:
        return f"Conflict: {exc.message}"
    if status == 429:
        wait = f"{math.ceil(exc.retry_after)} s" if exc.retry_after is not None else "a minute"
        return f"The ToolBridge API rate limit was reached; retry in {wait}."
    if status >= 500 and ctx.write is not None:
        said = f"HTTP {status}: {exc.message}"
        if "nothing was written" in exc.message:
            return f"ToolBridge API unavailable at {ctx.api_url} ({said}); try again shortly."
        return f"ToolBridge API failed at {ctx.api_url} ({said}). {_maybe_applied(ctx)}"
    if status >= 500:
        return f"ToolBridge API unavailable at {ctx.api_url} (HTTP {status}); try again shortly."
    if status < 400:
        return (
            f"The ToolBridge API at {ctx.api_url} answered with {exc.message}: is "
            "TOOLBRIDGE_GO_API_BASE_URL the ToolBridge API?"
        )
    return f"The ToolBridge API answered HTTP {status}: {exc.message}"


def _maybe_applied(ctx: ErrorContext) -> str:
    """A write whose answer was lost: what may have happened and how to check, never "try
    again" (a create repeated without its uid would store a second item)."""
    subject = _subject(ctx)
    get_tool = ctx.get_tool or "the get tool"
    if ctx.write == "create" and ctx.uid:
        return (
            f"The create of {subject} may have been applied. Check with "
            f"{get_tool}(uid={ctx.uid!r}); if it is not there, repeat the create with "
            f"uid={ctx.uid!r}, which cannot make a second one."
        )
    if ctx.write == "create":
        return (
            f"The create may have been applied. Check with {ctx.list_tool or 'the list tool'} "
            "before creating it again."
        )
    return (
        f"The {ctx.write} of {subject} may have been applied. Check with {get_tool} "
        "(its version and fields) before repeating it."
    )


def to_tool_error(exc: Exception, ctx: ErrorContext) -> ToolError:
    """The :class:`ToolError` for a failed backend call; re-raises anything unexpected."""
    if isinstance(exc, ApiError):
        message = _api_message(exc, ctx)
        if exc.correlation_id:
            message += f" (correlation id {exc.correlation_id})"
        return ToolError(message)
    if isinstance(exc, ApiUnavailableError) and ctx.write is not None and exc.sent:
        return ToolError(
            f"ToolBridge API did not answer at {ctx.api_url} ({exc.reason}). {_maybe_applied(ctx)}"
        )
    if isinstance(exc, ApiUnavailableError):
        unsent = "; nothing was sent, so nothing was written" if ctx.write is not None else ""
        return ToolError(
            f"ToolBridge API unavailable at {ctx.api_url} ({exc.reason}){unsent}; check that it "
            "is running and TOOLBRIDGE_GO_API_BASE_URL, then try again."
        )
    if isinstance(exc, MissingAuthenticationError):
        return ToolError(str(exc))
    if isinstance(exc, TokenError):
        return ToolError(f"No access token for the ToolBridge API: {exc}")
    raise exc


BACKEND_ERRORS: tuple[type[Exception], ...] = (
    BackendError,
    MissingAuthenticationError,
    TokenError,
)
"""Everything :func:`to_tool_error` maps."""
