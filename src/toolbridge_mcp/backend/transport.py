"""The API client's connection pool: httpx's transport interface over httpcore2's pool.

httpx 0.28 sends through httpcore 1, whose pool re-examines every pooled connection — a
socket probe through anyio's typed attributes for each — whenever a request is added or
removed. With 20 requests in flight that is ~700 connection checks per request and ~1.3 ms
of CPU for one GET on this machine, against ~0.55 ms with httpcore2 (the maintained fork
that FastMCP's own HTTP client, httpx2, sends through), which checks each connection once
per pass. The client keeps httpx's API (auth flows, event hooks, timeouts, errors); only
the pool underneath changes.

Build a :class:`PooledTransport` off the event loop or before serving: its TLS context
loads the certificate store (~20 ms of CPU).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from typing import cast

import httpcore2
import httpx

DEFAULT_LIMITS = httpx.Limits(
    max_connections=100, max_keepalive_connections=50, keepalive_expiry=60.0
)

# Most specific first: the first match is the one raised.
_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore2.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore2.ReadTimeout, httpx.ReadTimeout),
    (httpcore2.WriteTimeout, httpx.WriteTimeout),
    (httpcore2.PoolTimeout, httpx.PoolTimeout),
    (httpcore2.TimeoutException, httpx.TimeoutException),
    (httpcore2.ConnectError, httpx.ConnectError),
    (httpcore2.ReadError, httpx.ReadError),
    (httpcore2.WriteError, httpx.WriteError),
    (httpcore2.NetworkError, httpx.NetworkError),
    (httpcore2.ProxyError, httpx.ProxyError),
    (httpcore2.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore2.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore2.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore2.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _as_httpx_errors() -> Iterator[None]:
    """httpcore2's exceptions as the httpx ones callers catch (as httpx maps httpcore's)."""
    try:
        yield
    except Exception as exc:
        for source, target in _ERRORS:
            if isinstance(exc, source):
                raise target(str(exc)) from exc
        raise


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            with _as_httpx_errors():
                await close()


class PooledTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over one httpcore2 connection pool, verified against the certificates
    httpx would use (``SSL_CERT_FILE``/``SSL_CERT_DIR``, else certifi)."""

    def __init__(
        self, limits: httpx.Limits = DEFAULT_LIMITS, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=ssl_context if ssl_context is not None else httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        core = httpcore2.Request(
            method=request.method,
            url=httpcore2.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx_errors():
            response = await self._pool.handle_async_request(core)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(cast(AsyncIterable[bytes], response.stream)),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()
