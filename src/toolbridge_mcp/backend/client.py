"""The typed API client: entity and session calls in, typed items and pages out.

Paths, query names, ``If-Match`` and the session headers are built here from the wire
contract (:mod:`toolbridge_common.contract`); the tools never see HTTP. Errors keep what the
API said (:class:`~toolbridge_mcp.backend.errors.ApiError`).

One tool call is one HTTP request in steady state: the connection is kept alive, the token
is cached, the sync session is reused. The extra requests happen only when the API asks for
them — a new session (428), a new epoch (409 ``epoch_mismatch``), a new token (401, through
the auth), or a short ``Retry-After`` (429) — and each is retried once. Tenant headers are
signed in a request hook, so every attempt, retries included, carries its own signature.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
from loguru import logger
from pydantic import BaseModel, ValidationError
from typing_extensions import TypeVar

from toolbridge_common import contract
from toolbridge_common.contract import Entity
from toolbridge_mcp.auth.modes import OutboundAuth
from toolbridge_mcp.auth.tenant import TenantSigner
from toolbridge_mcp.backend.errors import ApiError, ApiUnavailableError, json_or_none
from toolbridge_mcp.backend.models import Item, Page, SessionInfo
from toolbridge_mcp.backend.sessions import SessionPool, SyncSession
from toolbridge_mcp.backend.transport import DEFAULT_LIMITS
from toolbridge_mcp.oauth import parse_retry_after

SESSIONS_PATH = "/v1/sync/sessions"
INFO_PATH = "/v1/sync/info"
MAX_RETRY_AFTER_WAIT = 5.0
"""Longest ``Retry-After`` waited out inside a tool call; longer ones become an error."""

DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
IDEMPOTENCY_KEY = "Idempotency-Key"
"""Sent with every write; the API answers a repeated key with the first result."""
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TRANSPORT_RETRY_DELAY = 0.5
"""Wait before the one retry of a request whose connection failed (refused or broken)."""

Model = TypeVar("Model", bound=BaseModel)
ItemT = TypeVar("ItemT", bound=Item, default=Item)
PageT = TypeVar("PageT", bound=Page, default=Page)
_ITEM: Any = Item  # the defaults of ``model=``, typed so that mypy takes them for any ItemT
_PAGE: Any = Page
Json = Mapping[str, Any]


class ApiClient:
    """Calls the ToolBridge API on one pooled ``httpx.AsyncClient``."""

    def __init__(
        self,
        base_url: str,
        auth: OutboundAuth,
        tenant: TenantSigner | None = None,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        limits: httpx.Limits = DEFAULT_LIMITS,
        transport: httpx.AsyncBaseTransport | None = None,
        max_retry_after_wait: float = MAX_RETRY_AFTER_WAIT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self._max_retry_after_wait = max_retry_after_wait
        self._transport = transport
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            auth=auth,
            timeout=timeout,
            limits=limits,
            transport=transport,
            headers={"Accept": "application/json", "User-Agent": "toolbridge-mcp"},
            # Runs for every attempt, including the auth's resend with a fresh token.
            event_hooks={"request": [tenant.sign]} if tenant is not None else None,
        )
        self.sessions = SessionPool(self._open_session)

    def prepare(self) -> None:
        """Build the transport's connection pool and TLS context now, if it builds them on
        first use (:class:`~toolbridge_mcp.metrics.CountingTransport`): CPU work to do
        before serving or in a worker thread, not on the event loop at the first call."""
        prepare = getattr(self._transport, "prepare", None)
        if prepare is not None:
            prepare()

    async def aclose(self) -> None:
        """Close the pooled connections."""
        self.sessions.forget()
        await self._http.aclose()

    # --- entities ---------------------------------------------------------------------

    async def list_items(
        self,
        entity: Entity,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        include_deleted: bool = False,
        model: type[PageT] = _PAGE,
    ) -> PageT:
        """``GET /v1/{entity}``: one page, ``limit`` items at most (the API's default when
        ``None``), read as ``model`` (a :class:`Page` or a subclass typing the items)."""
        params: dict[str, str] = {}
        if limit is not None:
            params["limit"] = str(limit)
        if cursor:
            params["cursor"] = cursor
        if include_deleted:
            params["includeDeleted"] = "true"
        response = await self.exchange("GET", entity.path, params=params or None)
        return _read_json(model, response, "page")

    async def get_item(
        self,
        entity: Entity,
        uid: str,
        *,
        include_deleted: bool = False,
        model: type[ItemT] = _ITEM,
    ) -> ItemT:
        """``GET /v1/{entity}/{uid}``; a deleted item only with ``include_deleted``. Every
        item method reads the answer as ``model``: :class:`Item` or a subclass typing the
        payload, validated once, straight from the body."""
        params = {"includeDeleted": "true"} if include_deleted else None
        return await self._item(model, "GET", item_path(entity, uid), params=params)

    async def create_item(
        self, entity: Entity, payload: Json, *, model: type[ItemT] = _ITEM
    ) -> ItemT:
        """``POST /v1/{entity}``; a ``uid`` in the payload is kept (an existing one updated)."""
        return await self._item(model, "POST", entity.path, json=dict(payload))

    async def update_item(
        self,
        entity: Entity,
        uid: str,
        payload: Json,
        *,
        if_match: int | None = None,
        model: type[ItemT] = _ITEM,
    ) -> ItemT:
        """``PUT /v1/{entity}/{uid}``: the payload replaces the stored one."""
        return await self._item(
            model, "PUT", item_path(entity, uid), json=dict(payload), headers=_if_match(if_match)
        )

    async def patch_item(
        self,
        entity: Entity,
        uid: str,
        changes: Json,
        *,
        if_match: int | None = None,
        model: type[ItemT] = _ITEM,
    ) -> ItemT:
        """``PATCH /v1/{entity}/{uid}``: each top-level key of ``changes`` replaces the
        stored one, the others stay."""
        return await self._item(
            model, "PATCH", item_path(entity, uid), json=dict(changes), headers=_if_match(if_match)
        )

    async def delete_item(
        self,
        entity: Entity,
        uid: str,
        *,
        if_match: int | None = None,
        model: type[ItemT] = _ITEM,
    ) -> ItemT:
        """``DELETE /v1/{entity}/{uid}``: a soft delete; the item comes back with
        ``deletedAt``."""
        return await self._item(
            model, "DELETE", item_path(entity, uid), headers=_if_match(if_match)
        )

    async def archive_item(self, entity: Entity, uid: str, *, model: type[ItemT] = _ITEM) -> ItemT:
        """``POST /v1/{entity}/{uid}/archive`` (the effect is ``entity.archive``)."""
        return await self._item(model, "POST", f"{item_path(entity, uid)}/archive", json={})

    async def process_item(
        self,
        entity: Entity,
        uid: str,
        action: str,
        *,
        metadata: Json | None = None,
        model: type[ItemT] = _ITEM,
    ) -> ItemT:
        """``POST /v1/{entity}/{uid}/process`` with one of ``entity.actions``."""
        body: dict[str, Any] = {"action": action}
        if metadata is not None:
            body["metadata"] = dict(metadata)
        return await self._item(model, "POST", f"{item_path(entity, uid)}/process", json=body)

    async def _item(
        self,
        model: type[ItemT],
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> ItemT:
        response = await self.exchange(method, path, params=params, json=json, headers=headers)
        return _read_json(model, response, "item")

    # --- sessions and info ------------------------------------------------------------

    async def session(self) -> SyncSession:
        """The current principal's sync session (opened on first use, then reused)."""
        return await self.sessions.get(self.auth.principal())

    async def open_session(self) -> SessionInfo:
        """``POST /v1/sync/sessions``: a new session for whoever the credentials name."""
        response = await self._send("POST", SESSIONS_PATH)
        if response.status_code in (404, 405):
            # The API always has this route: the base URL points elsewhere. Mapped by status,
            # it would read as "note not found" and send the user hunting for a uid.
            raise ApiUnavailableError(
                f"POST {SESSIONS_PATH} answered HTTP {response.status_code}: not the ToolBridge "
                "API",
                sent=False,  # the call's own request never went out
            )
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        body = json_or_none(response)
        if isinstance(body, dict) and "epoch" not in body:
            body = {**body, "epoch": response.headers.get(contract.HEADER_SYNC_EPOCH, 0)}
        return _read(SessionInfo, body, "sync session")

    async def get_session(self, session_id: str) -> SessionInfo:
        """``GET /v1/sync/sessions/{id}``."""
        response = await self._send("GET", f"{SESSIONS_PATH}/{_segment(session_id)}")
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        return _read(SessionInfo, json_or_none(response), "sync session")

    async def end_session(self, session_id: str) -> None:
        """``DELETE /v1/sync/sessions/{id}``; the pool forgets it if it was in use."""
        response = await self._send("DELETE", f"{SESSIONS_PATH}/{_segment(session_id)}")
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        self.sessions.discard(session_id)

    async def info(self) -> dict[str, Any]:
        """``GET /v1/sync/info``: API version, entities, limits (no session needed)."""
        response = await self._send("GET", INFO_PATH)
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        body = json_or_none(response)
        if not isinstance(body, dict):
            raise ApiError(response.status_code, "an info answer that is not a JSON object")
        return body

    async def _open_session(self, principal: str) -> SyncSession:
        """The session pool's opener."""
        del principal  # the request's own credentials say whom the session is for
        opened = await self.open_session()
        logger.debug("Opened sync session at epoch {}", opened.epoch)
        return SyncSession(opened.id, opened.epoch)

    # --- one request with its session and recovery ------------------------------------

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Send one entity request with the session; the decoded JSON body (``None`` if
        empty). Raises :class:`ApiError` or :class:`ApiUnavailableError`."""
        return _decode(await self.exchange(method, path, params=params, json=json, headers=headers))

    async def exchange(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """:meth:`call`'s request and recoveries; the successful response, body unread by
        any parser (the caller decodes it once)."""
        principal = self.auth.principal()
        try:
            session = await self.sessions.get(principal)
        except ApiUnavailableError as exc:  # before the call's own request: nothing sent
            raise ApiUnavailableError(exc.reason, sent=False) from None
        recovered: set[str] = set()
        sent = False  # whether an attempt may have reached the API (a failed write may apply)
        # One key per call, on every attempt: a write the API applied before the answer was
        # lost is answered from its record on the retry instead of being applied twice.
        once = {IDEMPOTENCY_KEY: str(uuid.uuid4())} if method in WRITE_METHODS else {}
        while True:
            try:
                response = await self._send(
                    method,
                    path,
                    params=params,
                    json=json,
                    headers={**(headers or {}), **once, **session.headers()},
                )
            except ApiUnavailableError as exc:
                sent = sent or exc.sent
                if exc.reason.startswith("timed out") or "transport" in recovered:
                    raise ApiUnavailableError(exc.reason, sent=sent) from None
                recovered.add("transport")  # connection refused or broken: retry once
                logger.info("API connection failed ({}); retrying once", exc.reason)
                await asyncio.sleep(TRANSPORT_RETRY_DELAY)
                continue
            try:
                retry = await self._recover(response, principal, session, recovered)
            except ApiUnavailableError as exc:  # a new session could not be opened
                raise ApiUnavailableError(exc.reason, sent=sent) from None
            if retry is None:
                return response
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
            body = json_or_none(response)
            if isinstance(body, dict) and body.get("error") == contract.EPOCH_MISMATCH:
                done.add("epoch")
                epoch = body.get("epoch", response.headers.get(contract.HEADER_SYNC_EPOCH))
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
            raise ApiError.from_response(response)
        return None

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        try:
            return await self._http.request(method, path, params=params, json=json, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # no connection was made for this request: nothing of it reached the API
            raise ApiUnavailableError(type(exc).__name__, sent=False) from None
        except httpx.TimeoutException as exc:
            raise ApiUnavailableError(f"timed out: {type(exc).__name__}") from None
        except httpx.TransportError as exc:
            raise ApiUnavailableError(type(exc).__name__) from None


def item_path(entity: Entity, uid: str) -> str:
    """``/v1/{entity}/{uid}`` with the uid as exactly one path segment."""
    return f"{entity.path}/{_segment(uid)}"


def _segment(value: str) -> str:
    """``value`` as exactly one path segment. Unescaped, a ``/``, ``?``, ``#`` or dot segment
    would reach another route: ``process_note(uid="../sync/wipe?")`` would wipe the user's
    data, ``delete_note(uid="../tasks/…")`` would delete a task."""
    segment = quote(value, safe="")
    return segment.replace(".", "%2E") if not segment.strip(".") else segment


def _if_match(version: int | None) -> dict[str, str] | None:
    return None if version is None else {contract.HEADER_IF_MATCH: str(version)}


def _decode(response: httpx.Response) -> Any:
    if not response.content:
        return None
    body = json_or_none(response)
    if body is None:
        raise ApiError(response.status_code, "a body that is not JSON")
    return body


def _read(model: type[Model], body: Any, what: str) -> Model:
    """``body`` as ``model``; an answer that is not one is an :class:`ApiError` naming the
    fields that could not be read (another service at the API URL, a broken proxy)."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise _unreadable(exc, what) from None


def _read_json(model: type[Model], response: httpx.Response, what: str) -> Model:
    """The response body as ``model``, parsed and validated in one pass (no ``json.loads``
    and second walk); the errors are :func:`_decode`'s and :func:`_read`'s."""
    content = response.content
    try:
        return model.model_validate_json(content)
    except ValidationError as exc:
        if content.strip() == b"null" or (
            content and any(error["type"] == "json_invalid" for error in exc.errors())
        ):
            raise ApiError(response.status_code, "a body that is not JSON") from None
        raise _unreadable(exc, what) from None


def _unreadable(exc: ValidationError, what: str) -> ApiError:
    fields = sorted({str(error["loc"][0]) for error in exc.errors() if error["loc"]})
    which = f" ({', '.join(fields)})" if fields else ""
    return ApiError(200, f"a {what} this server cannot read{which}")
