"""The one place that turns failures into responses: exception handlers.

Every error is ``{"error": ..., "correlation_id": ...}`` (:func:`contract.error_body`) with
its status. Unexpected exceptions become a bare 500 that reveals nothing of the failure. The
correlation id and the body limit are middleware (:mod:`toolbridge_api.middleware`).
"""

from __future__ import annotations

import math
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from loguru import logger
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from toolbridge_api.db.store import Gone, NotFound, StoreError, VersionMismatch
from toolbridge_api.middleware import new_correlation_id
from toolbridge_api.security import AuthError
from toolbridge_common import contract


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
}


_DATABASE_DOWN: tuple[type[Exception], ...] = (
    OSError,
    OperationalError,
    InterfaceError,
    PoolTimeout,
)
"""What an unreachable, locked or exhausted database raises (asyncpg: a bare OSError)."""


def correlation_id(request: Request) -> str:
    """The request's correlation id (set by the correlation id middleware)."""
    return str(getattr(request.state, "correlation_id", "")) or new_correlation_id()


def error_body(message: str, cid: str, **extra: Any) -> dict[str, Any]:
    """The contract's error shape; the message is made encodable, since it may quote input."""
    safe = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return contract.error_body(safe, cid, **extra)


def _response(request: Request, error: ApiError) -> JSONResponse:
    return JSONResponse(
        error_body(error.message, correlation_id(request), **error.extra),
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
    """Registers the handlers that make every error uniform."""

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

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        """The 500 fallback. Starlette runs it outside all middleware, so it adds the
        correlation id itself; the server still logs the traceback after it."""
        cid = correlation_id(request)
        logger.error("unhandled {} (correlation id {})", type(exc).__name__, cid)
        return JSONResponse(
            error_body("internal server error", cid),
            status_code=500,
            headers={contract.HEADER_CORRELATION_ID: cid},
        )

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(AuthError, on_auth_error)
    app.add_exception_handler(StoreError, on_store_error)
    for kind in _DATABASE_DOWN:
        app.add_exception_handler(kind, on_database_down)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


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
