"""``toolbridge-mcp check``: every link a tool call depends on, tried once, in order.

A token, the API's liveness, a sync session and one page of notes — through the server's own
backend client and its one error mapping, so a failure here reads exactly as the tool error a
user would get, naming the setting to fix and never showing a secret.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import httpx

from toolbridge_mcp.auth.modes import MissingAuthenticationError
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
from toolbridge_mcp.oauth import TokenError

Status = Literal["pass", "warn", "fail", "skip"]
_MARKS: dict[Status, str] = {"pass": "✓", "warn": "!", "fail": "✗", "skip": "-"}
_GOOD: tuple[Status, ...] = ("pass", "warn")
_BACKEND_ERRORS = (BackendError, MissingAuthenticationError, TokenError)


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


async def check_token(backend: Backend) -> CheckResult:
    """A token for the configured mode (after ``backend.open()``): fetched (``auth0``, with
    a warning for an opaque token or scopes not granted), decoded (``static``), or why
    per-user mode has none to check with; the mode decides."""
    result = await backend.auth.check()
    return CheckResult("token", result.status, result.detail)


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
            f"auth mode {backend.auth.name}, API {backend.api_url}, tenant {tenant}",
        )
    ]
    await backend.open()
    try:
        token = await check_token(backend)
        api = await check_api(backend.api_url, backend.error_context())
        results += [token, api]
        if token.status not in _GOOD or api.status != "pass":
            reason = "no token" if token.status not in _GOOD else "API not reachable"
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
    """0 when every step passed (a warning included: it says what may go wrong, and the
    later steps show whether it did), else 1."""
    return 0 if all(result.status in _GOOD for result in results) else 1
