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
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    NotSupportedError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from toolbridge_api.db.store import (
    CommitUncertain,
    DatabaseBusy,
    Gone,
    NotFound,
    StoreError,
    VersionMismatch,
)
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
    DBAPIError,
    PoolTimeout,
    DatabaseBusy,
    CommitUncertain,
)
"""What an unreachable, shutting down, locked or exhausted database raises: every DBAPI
error (asyncpg's server errors such as ``57P01 admin shutdown`` or ``57P03 cannot connect
now`` arrive as a bare ``DBAPIError``), a bare ``OSError`` (asyncpg connecting, timeouts),
the pool's timeout and our own writer-queue timeout. Each is a 503 with ``Retry-After``,
except :data:`_DATABASE_BUGS`."""

_DATABASE_BUGS: tuple[type[DBAPIError], ...] = (
    IntegrityError,
    ProgrammingError,
    DataError,
    NotSupportedError,
)
"""DBAPI errors that say our SQL or our data is wrong, whatever the database's state: a 500."""

_LOCK_NOT_AVAILABLE = "55P03"
"""PostgreSQL: ``lock_timeout`` expired (the per-user write lock was held too long)."""

RETRY_AFTER_BUSY_SECONDS = 1
RETRY_AFTER_DOWN_SECONDS = 2


def _database_busy(exc: Exception) -> bool:
    """Whether ``exc`` says a write waited for its turn too long (nothing was written)."""
    if isinstance(exc, DatabaseBusy):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
        return True
    return getattr(orig, "sqlite_errorname", "") in {"SQLITE_BUSY", "SQLITE_LOCKED"} or (
        "database is locked" in str(orig)
    )


def database_failure(exc: Exception, timeout_seconds: float, *, writing: bool) -> ApiError:
    """The 503 for a database failure, saying whether a write (``writing``: the request
    could write) may have been applied: only when committing failed, else nothing was
    written, as a failed transaction is rolled back."""
    if isinstance(exc, CommitUncertain):
        return ApiError(
            503,
            "the database failed while committing: the write may have been applied. Retry "
            "with the same Idempotency-Key to get its result either way, or read the item to "
            "check",
            extra={"database": "unavailable"},
            headers={"Retry-After": str(RETRY_AFTER_DOWN_SECONDS)},
        )
    nothing = "nothing was written; " if writing else ""
    if _database_busy(exc):
        return ApiError(
            503,
            f"database busy: the request waited {timeout_seconds:g} s for its turn; {nothing}retry",
            extra={"database": "busy"},
            headers={"Retry-After": str(RETRY_AFTER_BUSY_SECONDS)},
        )
    return ApiError(
        503,
        f"database unavailable; {nothing}retry later",
        extra={"database": "unavailable"},
        headers={"Retry-After": str(RETRY_AFTER_DOWN_SECONDS)},
    )


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
        if isinstance(exc, _DATABASE_BUGS):
            return await on_unexpected(request, exc, traceback=True)
        error = database_failure(
            exc,
            request.app.state.settings.database_timeout_seconds,
            writing=request.method not in ("GET", "HEAD", "OPTIONS"),
        )
        logger.warning(
            "database {} ({}{}; correlation id {})",
            error.extra["database"],
            type(exc).__name__,
            _sqlstate(exc),
            correlation_id(request),
        )
        return _response(request, error)

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

    async def on_unexpected(
        request: Request, exc: Exception, *, traceback: bool = False
    ) -> Response:
        """The 500 fallback. Starlette runs it outside all middleware, so it adds the
        correlation id itself; the server still logs the traceback after it (``traceback``:
        this handler logs it, for exceptions a more specific handler passed on)."""
        cid = correlation_id(request)
        log = logger.opt(exception=exc) if traceback else logger
        log.error("unhandled {} (correlation id {})", type(exc).__name__, cid)
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


def _sqlstate(exc: Exception) -> str:
    """``, SQLSTATE xxxxx`` when the driver named one (never the message: it may quote data)."""
    orig = exc.orig if isinstance(exc, DBAPIError) else None
    code = getattr(orig, "sqlstate", None) or getattr(orig, "sqlite_errorname", None)
    cause = exc.__cause__
    if code is None and isinstance(exc, CommitUncertain) and isinstance(cause, Exception):
        return _sqlstate(cause)
    return f", {code}" if isinstance(code, str) else ""


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
