"""The API's ASGI middleware, one concern each (outermost first):

- :class:`CorrelationIdMiddleware`: every request gets a correlation id (the client's
  ``X-Correlation-ID`` if sane, else a new one) in ``request.state.correlation_id``, and every
  response carries it back;
- :class:`AccessLogMiddleware`: one INFO line per request (method, path without its query
  string, status, time, correlation id): a token sent as ``?access_token=`` never reaches a
  log;
- :class:`HeaderLimitMiddleware`: more request headers than the limit (or more header bytes,
  under a server that does not bound them itself) is a 431;
- :class:`DeferredHeadersMiddleware`: headers a dependency settled before the outcome was
  known (the rate limit's, :func:`defer_headers`) go on whatever response follows, the
  route's or an error's;
- :class:`BodyLimitMiddleware`: a request body larger than the limit is a 413 before any
  route runs, whether or not it announced its length; one that does not arrive in time is a
  408.

Errors raised by routes become responses in :mod:`toolbridge_api.errors` (exception handlers,
including the 500 fallback), not here.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Mapping

from loguru import logger
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from toolbridge_common.contract import HEADER_CORRELATION_ID, error_body

_CORRELATION_HEADER = HEADER_CORRELATION_ID.lower().encode()
_SANE_CORRELATION_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFERRED = "deferred_headers"


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def scope_correlation_id(scope: Scope) -> str:
    """The correlation id :class:`CorrelationIdMiddleware` gave this request ("" without it)."""
    return str(scope.get("state", {}).get("correlation_id", ""))


class CorrelationIdMiddleware:
    """Names each request with a correlation id and echoes it in ``X-Correlation-ID``.

    A client's id is kept when it is 1-128 characters of ``[A-Za-z0-9._:-]`` (it ends up in
    logs and headers); anything else is replaced by a new id.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cid = _incoming_correlation_id(scope) or new_correlation_id()
        scope.setdefault("state", {})["correlation_id"] = cid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != _CORRELATION_HEADER
                ]
                headers.append((_CORRELATION_HEADER, cid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


def defer_headers(request: Request, headers: Mapping[str, str]) -> None:
    """Put ``headers`` on this request's response, whichever it turns out to be (a route
    that returns its own ``Response``, or an error answer); needs
    :class:`DeferredHeadersMiddleware`."""
    deferred: dict[str, str] | None = request.scope.setdefault("state", {}).get(_DEFERRED)
    if deferred is None:
        deferred = {}
        request.scope["state"][_DEFERRED] = deferred
    deferred.update(headers)


class DeferredHeadersMiddleware:
    """Adds the headers of :func:`defer_headers` to the response (replacing same names)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            deferred: dict[str, str] = scope.get("state", {}).get(_DEFERRED) or {}
            if message["type"] == "http.response.start" and deferred:
                names = {name.lower().encode("latin-1") for name in deferred}
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() not in names
                ]
                headers.extend(
                    (name.lower().encode("latin-1"), value.encode("latin-1"))
                    for name, value in deferred.items()
                )
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _error_response(status: int, message: str, scope: Scope) -> list[Message]:
    """The ASGI messages of an error answer in the contract's shape."""
    body = json.dumps(error_body(message, scope_correlation_id(scope))).encode()
    return [
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        },
        {"type": "http.response.body", "body": body},
    ]


class AccessLogMiddleware:
    """Logs each request once it is answered: client, method, path, status, duration and
    correlation id. The query string is never logged (``?…`` marks that there was one): it
    may carry a token (``?access_token=``) or other secrets. A request that ends in an
    unhandled exception is logged with status 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            client = scope.get("client")
            logger.info(
                '{} - "{} {}{} HTTP/{}" {} {:.1f} ms (correlation id {})',
                f"{client[0]}:{client[1]}" if client else "-",
                scope["method"],
                _printable(scope.get("path", "")),
                "?…" if scope.get("query_string") else "",
                scope.get("http_version", "1.1"),
                status,
                (time.perf_counter() - started) * 1000,
                scope_correlation_id(scope) or "-",
            )


def _printable(path: str, limit: int = 300) -> str:
    """A path as a log can show it: control characters escaped, long paths cut."""
    shown = path.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= limit else shown[:limit] + "…"


class HeaderLimitMiddleware:
    """Refuses a request with more than ``max_header_count`` headers, or more than
    ``max_header_bytes`` of request line and headers, with a 431. ``toolbridge-api serve``
    refuses oversized headers before they are even buffered
    (:mod:`toolbridge_api.serving`); this check holds under any other server too."""

    def __init__(self, app: ASGIApp, *, max_header_count: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_header_count = max_header_count
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", [])
        message = None
        if len(headers) > self.max_header_count:
            message = (
                f"too many request headers: {len(headers)}, the limit is {self.max_header_count}"
            )
        else:
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
            size += sum(len(name) + len(value) + 4 for name, value in headers)
            if size > self.max_header_bytes:
                message = (
                    f"request headers too large: the request line and headers may have at "
                    f"most {self.max_header_bytes} bytes"
                )
        if message is None:
            await self.app(scope, receive, send)
            return
        for answer in _error_response(431, message, scope):
            await send(answer)


class BodyLimitMiddleware:
    """Buffers request bodies up to ``max_body_bytes`` before the app runs.

    An oversize body is a 413 (declared by ``Content-Length`` or found while reading), so
    nothing is ever half-processed; a client that disconnects mid-body gets nothing run at
    all, as a cut body could still parse and be written although the client gave up.
    """

    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, body_timeout_seconds: float = 30.0
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_seconds = body_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        try:
            async with asyncio.timeout(self.body_timeout_seconds):
                body = await self._read_body(scope, receive)
        except _ClientGone:
            return
        except TimeoutError:
            message = f"request body not received within {self.body_timeout_seconds:g} s"
            for answer in _error_response(408, message, scope):
                await send(answer)
            return
        if body is None:
            await self._too_large(scope, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None once it exceeds the limit (declared or actual)."""
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

    async def _too_large(self, scope: Scope, send: Send) -> None:
        message = f"request body too large: the limit is {self.max_body_bytes} bytes"
        for answer in _error_response(413, message, scope):
            await send(answer)


class _ClientGone(Exception):
    """The client disconnected before sending its whole body."""


def _incoming_correlation_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == _CORRELATION_HEADER:
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
