"""Request limits of the DEVELOPMENT ONLY issuer, as ASGI middleware: at most
``max_header_count`` request headers (431), a body of at most ``max_body_bytes`` that arrives
within ``body_timeout_seconds`` (413, 408), read whole before any route runs. Errors are
OAuth-shaped (``invalid_request`` with a description). The size of the request line and
headers is bounded by uvicorn's h11 parser (``toolbridge-dev-issuer serve``)."""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RequestLimitMiddleware:
    """Refuses too many headers and oversized or slow bodies before the issuer sees them."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_header_count: int,
        max_body_bytes: int,
        body_timeout_seconds: float,
    ) -> None:
        self.app = app
        self.max_header_count = max_header_count
        self.max_body_bytes = max_body_bytes
        self.body_timeout_seconds = body_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", [])
        if len(headers) > self.max_header_count:
            await _refuse(
                send, 431, f"too many request headers (the limit is {self.max_header_count})"
            )
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in headers:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                await _refuse(send, 413, self._too_large())
                return
        try:
            async with asyncio.timeout(self.body_timeout_seconds):
                body = await self._read(receive)
        except TimeoutError:
            message = f"request body not received within {self.body_timeout_seconds:g} s"
            await _refuse(send, 408, message)
            return
        except _Gone:
            return
        if body is None:
            await _refuse(send, 413, self._too_large())
            return
        await self.app(scope, _replay(body, receive), send)

    def _too_large(self) -> str:
        return f"request body too large (the limit is {self.max_body_bytes} bytes)"

    async def _read(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Gone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class _Gone(Exception):
    """The client went away before sending its whole body."""


async def _refuse(send: Send, status: int, description: str) -> None:
    body = json.dumps({"error": "invalid_request", "error_description": description}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
