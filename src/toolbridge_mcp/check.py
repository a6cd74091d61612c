"""``toolbridge-mcp check``: every link a tool call depends on, tried once, in order.

A token, the API's liveness, a sync session and one page of notes — through the server's own
backend client and its one error mapping, so a failure here reads exactly as the tool error a
user would get, naming the setting to fix and never showing a secret.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Literal

import httpx

from toolbridge_mcp.auth.modes import MissingAuthenticationError, static_token_expiry
from toolbridge_mcp.auth.oauth import TokenError
from toolbridge_mcp.backend.client import DEFAULT_TIMEOUT
from toolbridge_mcp.backend.errors import (
    ApiError,
    ApiUnavailableError,
    BackendError,
    ErrorContext,
    to_tool_error,
)
from toolbridge_mcp.backend.runtime import Backend
from toolbridge_mcp.config import Settings, env_name

Status = Literal["pass", "fail", "skip"]
_MARKS: dict[Status, str] = {"pass": "✓", "fail": "✗", "skip": "-"}
_BACKEND_ERRORS = (BackendError, MissingAuthenticationError, TokenError)
_CREDENTIALS = (
    f"{env_name('auth0_client_id')}, {env_name('auth0_client_secret')}, "
    f"{env_name('auth0_domain')} (or {env_name('auth0_token_url')}) and "
    f"{env_name('auth0_audience')}"
)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One step of the checklist and why it failed or was skipped."""

    step: str
    status: Status
    detail: str

    def line(self) -> str:
        """``✓ token     from https://…, expires in 3600s``."""
        return f"{_MARKS[self.status]} {self.step:<9} {self.detail}"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _elapsed(expires_at: datetime) -> float:
    return (expires_at - datetime.now(UTC)).total_seconds()


async def check_token(backend: Backend) -> CheckResult:
    """A token for the configured mode: fetched (``auth0``), decoded (``static``), or an
    explanation of why per-user mode has none to check with."""
    settings = backend.settings
    if backend.mode == "passthrough":
        return CheckResult(
            "token",
            "skip",
            "per-user mode: the API is called with each MCP client's own token, so there is "
            f"none to check with here; set {_CREDENTIALS} (or {env_name('jwt_token')}) to "
            "check the API end to end",
        )
    if backend.mode == "static":
        assert settings.jwt_token is not None
        deprecated = f"{env_name('jwt_token')} (deprecated: never refreshed; set {_CREDENTIALS})"
        expires_at = static_token_expiry(settings.jwt_token)
        if expires_at is None:
            return CheckResult("token", "pass", f"static {deprecated}; expiry unknown")
        when = expires_at.isoformat(timespec="seconds")
        if _elapsed(expires_at) <= 0:
            return CheckResult(
                "token",
                "fail",
                f"{env_name('jwt_token')} expired at {when}; replace it or set "
                f"{_CREDENTIALS} so tokens refresh automatically",
            )
        return CheckResult(
            "token", "pass", f"static {deprecated}; expires in {_elapsed(expires_at):.0f}s ({when})"
        )
    manager = backend.manager
    assert manager is not None
    try:
        await manager.get_token()  # the cached one if the backend's start fetched it
    except TokenError as exc:
        return CheckResult("token", "fail", _with_setting(str(exc), settings))
    fetched_expiry = manager.expires_at
    expires = "" if fetched_expiry is None else f", expires in {_elapsed(fetched_expiry):.0f}s"
    return CheckResult(
        "token", "pass", f"from {manager.token_url}{expires} (audience {manager.audience or '-'})"
    )


def _with_setting(message: str, settings: Settings) -> str:
    """A token failure that names no Auth0 setting (the endpoint unreachable or too slow)
    points at the one that chose the endpoint."""
    if "TOOLBRIDGE_AUTH0_" in message:
        return message
    endpoint = env_name("auth0_token_url" if settings.auth0_token_url else "auth0_domain")
    return f"{message}; check {endpoint} and that the identity provider is reachable"


async def check_api(api_url: str, context: ErrorContext) -> CheckResult:
    """``GET /healthz``: the API is there and its database answers (no credentials needed)."""
    url = f"{api_url}/healthz"
    try:
        async with httpx.AsyncClient(timeout=DEFAULT_TIMEOUT) as http:
            response = await http.get(url)
    except httpx.TransportError as exc:
        return CheckResult(
            "api", "fail", str(to_tool_error(ApiUnavailableError(type(exc).__name__), context))
        )
    if response.status_code >= 500:
        return CheckResult(
            "api", "fail", str(to_tool_error(ApiError(response.status_code, "error"), context))
        )
    if response.status_code != 200:
        return CheckResult(
            "api",
            "fail",
            f"{url} answered HTTP {response.status_code}: is {env_name('go_api_base_url')} "
            "the ToolBridge API's base URL?",
        )
    return CheckResult("api", "pass", f"{url} answered 200")


async def run_checks(settings: Settings) -> list[CheckResult]:
    """The checklist for ``settings``: settings, token, api, session, notes."""
    backend = Backend(settings)
    tenant = settings.tenant_id or "none"
    results = [
        CheckResult(
            "settings",
            "pass",
            f"auth mode {backend.mode}, API {backend.api_url}, tenant {tenant}",
        )
    ]
    await backend.open()
    try:
        token = await check_token(backend)
        api = await check_api(backend.api_url, backend.error_context())
        results += [token, api]
        if token.status != "pass" or api.status != "pass":
            reason = "no token" if token.status != "pass" else "API not reachable"
            results += [
                CheckResult("session", "skip", f"skipped: {reason}"),
                CheckResult("notes", "skip", f"skipped: {reason}"),
            ]
            return results
        results.append(await _check_session(backend))
        if results[-1].status != "pass":
            results.append(CheckResult("notes", "skip", "skipped: no sync session"))
            return results
        results.append(await _check_notes(backend))
        return results
    finally:
        await backend.close()


async def _check_session(backend: Backend) -> CheckResult:
    client = backend.client
    try:
        session = await client.sessions.get(client.auth.principal())
    except _BACKEND_ERRORS as exc:
        return CheckResult("session", "fail", str(to_tool_error(exc, backend.error_context())))
    return CheckResult("session", "pass", f"sync session opened (epoch {session.epoch})")


async def _check_notes(backend: Backend) -> CheckResult:
    try:
        body = await backend.client.call("GET", "/v1/notes", params={"limit": "1"})
    except _BACKEND_ERRORS as exc:
        context = backend.error_context(entity="notes")
        return CheckResult("notes", "fail", str(to_tool_error(exc, context)))
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        return CheckResult(
            "notes",
            "fail",
            f"GET /v1/notes did not answer with a page of items: is "
            f"{env_name('go_api_base_url')} the ToolBridge API?",
        )
    more = "more exist" if body.get("nextCursor") else "no more"
    return CheckResult(
        "notes", "pass", f"listed one page of notes ({len(body['items'])} shown, {more})"
    )


def exit_code(results: list[CheckResult]) -> int:
    """0 when every step passed, else 1."""
    return 0 if all(result.status == "pass" for result in results) else 1
