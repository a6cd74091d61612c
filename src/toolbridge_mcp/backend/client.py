"""The API client: one pooled connection set, every header the API wants, and recovery.

One tool call is one HTTP request in steady state: the connection is kept alive, the token
is cached, the sync session is reused. The extra requests happen only when the API asks for
them — a new session (428), a new epoch (409 ``epoch_mismatch``), a new token (401, through
the auth), or a short ``Retry-After`` (429) — and each is retried once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from loguru import logger

from toolbridge_mcp.auth.modes import BackendAuth
from toolbridge_mcp.auth.oauth import parse_retry_after
from toolbridge_mcp.auth.tenant import TenantSigner
from toolbridge_mcp.backend.errors import ApiError, ApiUnavailableError
from toolbridge_mcp.backend.sessions import SessionPool, SyncSession

SESSIONS_PATH = "/v1/sync/sessions"
MAX_RETRY_AFTER_WAIT = 5.0
"""Longest ``Retry-After`` waited out inside a tool call; longer ones become an error."""

DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
DEFAULT_LIMITS = httpx.Limits(
    max_connections=100, max_keepalive_connections=50, keepalive_expiry=60.0
)


class ApiClient:
    """Calls the ToolBridge API on one pooled ``httpx.AsyncClient``."""

    def __init__(
        self,
        base_url: str,
        auth: BackendAuth,
        tenant: TenantSigner | None = None,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        limits: httpx.Limits = DEFAULT_LIMITS,
        transport: httpx.AsyncBaseTransport | None = None,
        max_retry_after_wait: float = MAX_RETRY_AFTER_WAIT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self._tenant = tenant
        self._max_retry_after_wait = max_retry_after_wait
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            auth=auth,
            timeout=timeout,
            limits=limits,
            transport=transport,
            headers={"Accept": "application/json", "User-Agent": "toolbridge-mcp"},
        )
        self.sessions = SessionPool(self._open_session)

    async def aclose(self) -> None:
        """Close the pooled connections."""
        self.sessions.forget()
        await self._http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Send one entity request with its session; the decoded JSON body (``None`` if
        empty). Raises :class:`ApiError` or :class:`ApiUnavailableError`."""
        principal = self.auth.principal()
        session = await self.sessions.get(principal)
        recovered: set[str] = set()
        while True:
            response = await self._send(
                method,
                path,
                params=params,
                json=json,
                headers={**(headers or {}), **session.headers()},
            )
            retry = await self._recover(response, principal, session, recovered)
            if retry is None:
                return _decode(response)
            session = retry

    async def _recover(
        self, response: httpx.Response, principal: str, session: SyncSession, done: set[str]
    ) -> SyncSession | None:
        """The session to retry with if the API asked for a recovery not yet tried, else
        ``None`` (then the response stands, error or not)."""
        status = response.status_code
        if status == 428 and "session" not in done:
            done.add("session")
            logger.info("Sync session expired or unknown; opening a new one")
            return await self.sessions.renew(principal, session)
        if status == 409 and "epoch" not in done:
            body = _json_or_none(response)
            if isinstance(body, dict) and body.get("error") == "epoch_mismatch":
                done.add("epoch")
                epoch = body.get("epoch", response.headers.get("X-Sync-Epoch"))
                logger.info("Sync epoch changed; continuing at epoch {}", epoch)
                try:
                    return self.sessions.adopt_epoch(principal, session, int(epoch))
                except (TypeError, ValueError):
                    return await self.sessions.renew(principal, session)
        if status == 429 and "rate" not in done:
            wait = parse_retry_after(response.headers.get("Retry-After"))
            if wait is not None and wait <= self._max_retry_after_wait:
                done.add("rate")
                logger.info("Rate limited by the API; retrying in {:.1f}s", wait)
                await asyncio.sleep(wait)
                return session
        if status >= 400:
            raise _api_error(response)
        return None

    async def _open_session(self, principal: str) -> SyncSession:
        """``POST /v1/sync/sessions`` for the current principal."""
        del principal  # the request's own credentials say whom the session is for
        response = await self._send("POST", SESSIONS_PATH)
        if response.status_code in (404, 405):
            # The API always has this route: the base URL points elsewhere. Mapped by status,
            # it would read as "note not found" and send the user hunting for a uid.
            raise ApiUnavailableError(
                f"POST {SESSIONS_PATH} answered HTTP {response.status_code}: not the ToolBridge API"
            )
        if response.status_code >= 400:
            raise _api_error(response)
        body = _json_or_none(response)
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise ApiError(response.status_code, "the sync session response has no id")
        epoch = body.get("epoch", response.headers.get("X-Sync-Epoch", 0))
        logger.debug("Opened sync session at epoch {}", epoch)
        return SyncSession(body["id"], int(epoch))

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        request_headers = dict(headers or {})
        if self._tenant is not None:
            request_headers |= self._tenant.headers()
        try:
            return await self._http.request(
                method, path, params=params, json=json, headers=request_headers
            )
        except httpx.TimeoutException as exc:
            raise ApiUnavailableError(f"timed out: {type(exc).__name__}") from None
        except httpx.TransportError as exc:
            raise ApiUnavailableError(type(exc).__name__) from None


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _decode(response: httpx.Response) -> Any:
    if not response.content:
        return None
    body = _json_or_none(response)
    if body is None:
        raise ApiError(response.status_code, "the API answered with a body that is not JSON")
    return body


def _api_error(response: httpx.Response) -> ApiError:
    body = _json_or_none(response)
    message = response.reason_phrase or "error"
    correlation_id = None
    if isinstance(body, dict):
        if isinstance(body.get("error"), str):
            message = body["error"]
        if isinstance(body.get("correlation_id"), str):
            correlation_id = body["correlation_id"]
    return ApiError(
        response.status_code,
        message,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
        correlation_id=correlation_id,
    )
