"""The one place that turns failures into responses.

Every error is ``{"error": ..., "correlation_id": ...}`` with its status; every response
carries ``X-Correlation-ID`` (the client's, if sane, else a new one). Oversize bodies are
refused here before any route sees them, and unexpected exceptions become a bare 500.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from loguru import logger
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from toolbridge_api.db.store import Contended, Gone, NotFound, StoreError, VersionMismatch
from toolbridge_api.security import AuthError

CORRELATION_HEADER = "X-Correlation-ID"
_SANE_CORRELATION_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class _ClientGone(Exception):
    """The client disconnected before sending its whole body."""


class ApiError(Exception):
    """An error answer: status, a message that says what to fix, optional extra fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra or {}
        self.headers = headers or {}


_STORE_STATUS: dict[type[StoreError], tuple[int, str]] = {
    NotFound: (404, "not found"),
    Gone: (410, "the item was deleted"),
    VersionMismatch: (412, ""),
    Contended: (409, ""),
}


_DATABASE_DOWN: tuple[type[Exception], ...] = (
    OSError,
    OperationalError,
    InterfaceError,
    PoolTimeout,
)
"""What an unreachable, locked or exhausted database raises (asyncpg: a bare OSError)."""


def correlation_id(request: Request) -> str:
    return str(getattr(request.state, "correlation_id", "")) or uuid.uuid4().hex


def error_body(status: int, message: str, cid: str, **extra: Any) -> dict[str, Any]:
    """The contract's error shape; the message is made encodable, since it may quote input."""
    safe = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return {"error": safe, **extra, "correlation_id": cid}


def _response(request: Request, error: ApiError) -> JSONResponse:
    return JSONResponse(
        error_body(error.status, error.message, correlation_id(request), **error.extra),
        status_code=error.status,
        headers=error.headers,
    )


def _describe_validation(exc: RequestValidationError) -> str:
    """``where: what`` for each problem, without echoing the (possibly secret) input."""
    problems = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        message = str(error.get("msg", "invalid value"))
        if error.get("type") == "json_invalid":
            problems.append(f"request body is not valid JSON: {error.get('ctx', {}).get('error')}")
            continue
        problems.append(f"{'.'.join(loc)}: {message}" if loc else message)
    return "; ".join(problems) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Registers the handlers and the outermost middleware that make every error uniform."""

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _response(request, exc)

    async def on_auth_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AuthError)
        headers = {}
        if exc.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        if exc.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return _response(request, ApiError(exc.status, exc.message, headers=headers))

    async def on_store_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StoreError)
        status, message = _STORE_STATUS.get(type(exc), (500, "internal error"))
        extra = {"version": exc.current} if isinstance(exc, VersionMismatch) else None
        return _response(request, ApiError(status, message or str(exc), extra=extra))

    async def on_database_down(request: Request, exc: Exception) -> Response:
        logger.warning(
            "database unavailable ({}; correlation id {})",
            type(exc).__name__,
            correlation_id(request),
        )
        return _response(request, ApiError(503, "database unavailable; retry later"))

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _response(request, ApiError(400, _describe_validation(exc)))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        message = {404: "no such route", 405: "method not allowed"}.get(
            exc.status_code, str(exc.detail)
        )
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return _response(request, ApiError(exc.status_code, message, headers=headers))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(AuthError, on_auth_error)
    app.add_exception_handler(StoreError, on_store_error)
    for kind in _DATABASE_DOWN:
        app.add_exception_handler(kind, on_database_down)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)


def _allowed_methods(request: Request) -> list[str]:
    """Every method the API documents for this path: Starlette's own ``Allow`` names only
    the first route whose path matched (e.g. GET but not DELETE)."""
    table: list[tuple[re.Pattern[str], list[str]]] | None = getattr(
        request.app.state, "allowed_methods", None
    )
    if table is None:
        table = [
            (compile_path(path)[0], sorted(method.upper() for method in operations))
            for path, operations in request.app.openapi()["paths"].items()
        ]
        request.app.state.allowed_methods = table
    path = request.scope["path"]
    return next((methods for pattern, methods in table if pattern.match(path)), [])


class EnvelopeMiddleware:
    """Outermost ASGI middleware: correlation id, body size limit, and the 500 fallback.

    Bodies are buffered up to ``max_body_bytes`` before the app runs, so an oversize body is
    a 413 whether or not it announced its length, and nothing is ever half-processed.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cid = _incoming_correlation_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["correlation_id"] = cid
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() != b"x-correlation-id"
                ]
                headers.append((b"x-correlation-id", cid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if scope["method"] in _BODY_METHODS:
                try:
                    body = await self._read_body(scope, receive)
                except _ClientGone:
                    return
                if body is None:
                    await self._error(send_with_id, 413, self._too_large(), cid)
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("unhandled error (correlation id {})", cid)
            if not started:
                await self._error(send_with_id, 500, "internal server error", cid)

    def _too_large(self) -> str:
        return f"request body too large: the limit is {self.max_body_bytes} bytes"

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None once it exceeds the limit (declared or actual).

        Raises ``_ClientGone`` if the client leaves mid-body: then nothing runs, as a cut
        body could still parse and be written although the client gave up on the request.
        """
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    @staticmethod
    async def _error(send: Send, status: int, message: str, cid: str) -> None:
        body = json.dumps(error_body(status, message, cid)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _incoming_correlation_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-correlation-id":
            text = value.decode("latin-1").strip()
            return text if _SANE_CORRELATION_ID.fullmatch(text) else None
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that yields the buffered body once, then defers to the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
