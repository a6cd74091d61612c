"""How ``toolbridge-api serve`` runs uvicorn, with limits on what a client may make it hold.

uvicorn's default HTTP parser (httptools, when installed) accepts request headers of any size
and keeps them in memory until the request is complete: a 64 MB header grew a server by tens
of megabytes that it never gave back. The API is therefore served by uvicorn's h11 protocol,
whose parser refuses a request line plus headers larger than ``max_header_bytes`` as soon as
its buffer passes that size, with these additions (:class:`LimitedH11Protocol`):

- the refusal is a ``431 Request Header Fields Too Large`` with the API's JSON error body
  (uvicorn answers a bare 400), and the connection is closed without reading the rest;
- a request's line and headers must arrive within ``header_timeout`` of its first byte (or of
  connecting), else ``408`` and the connection is closed: a client sending a header a byte at
  a time cannot hold a connection open (uvicorn's keep-alive timer restarts with every byte).

The body's size and time, and the header count, are limited by the app's middleware
(:mod:`toolbridge_api.middleware`), so they hold under any server.

``serve --workers N`` runs N processes on one socket with uvicorn's supervisor, which hands
each spawned worker the server's configuration pickled: so the protocol is a class of this
module reading its limits from that configuration (:class:`ApiServerConfig`), and the app is
built in each worker by :func:`toolbridge_api.cli.worker_app`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import h11
from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import Server, ServerState
from uvicorn.supervisors import Multiprocess

from toolbridge_api.config import DEFAULT_MAX_HEADER_BYTES, ApiSettings
from toolbridge_api.middleware import new_correlation_id
from toolbridge_common.contract import HEADER_CORRELATION_ID, error_body

_HEADERS_TOO_LARGE = 431


class ApiServerConfig(Config):
    """uvicorn's configuration plus the header timeout :class:`LimitedH11Protocol` reads (the
    header size limit is uvicorn's ``h11_max_incomplete_event_size``)."""

    def __init__(self, app: Any, *, header_timeout: float, **options: Any) -> None:
        super().__init__(app, **options)
        self.header_timeout = header_timeout


class _Connection(h11.Connection):
    """An h11 connection that remembers why it refused the client's bytes."""

    refused: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.refused = exc
            raise


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a JSON 431 for oversized headers and a header timeout,
    both read from its :class:`ApiServerConfig`; uvicorn creates one per connection."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not isinstance(config, ApiServerConfig):
            raise TypeError("LimitedH11Protocol is served with an ApiServerConfig (server_config)")
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout = config.header_timeout
        self.max_header_bytes = config.h11_max_incomplete_event_size or DEFAULT_MAX_HEADER_BYTES
        self._limited = _Connection(h11.SERVER, max_incomplete_event_size=self.max_header_bytes)
        self.conn = self._limited
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes_seen = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._between_requests():
            if self._header_timer is None:
                self._arm_header_timer()
            self._header_bytes_seen = True
        super().data_received(data)
        if not self._between_requests():
            self._disarm_header_timer()

    def send_400_response(self, msg: str) -> None:
        refused = self._limited.refused
        if refused is None or refused.error_status_hint != _HEADERS_TOO_LARGE:
            super().send_400_response(msg)
            return
        message = (
            f"request headers too large: the request line and headers may have at most "
            f"{self.max_header_bytes} bytes"
        )
        self._answer_and_close(_HEADERS_TOO_LARGE, message, via_h11=True)

    def _between_requests(self) -> bool:
        """No request is underway: waiting for (the rest of) the next request's headers."""
        return self.cycle is None or self.cycle.response_complete

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_bytes_seen = False
        self._header_timer = self.loop.call_later(self.header_timeout, self._on_header_timeout)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._between_requests():
            return
        if not self._header_bytes_seen:  # an idle connection: nothing to answer
            self.transport.close()
            return
        self.logger.warning(
            "Request headers not received within %g s; connection closed", self.header_timeout
        )
        message = f"request headers not received within {self.header_timeout:g} s"
        self._answer_and_close(408, message, via_h11=False)

    def _answer_and_close(self, status: int, message: str, *, via_h11: bool) -> None:
        cid = new_correlation_id()
        body = json.dumps(error_body(message, cid)).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            (HEADER_CORRELATION_ID.lower().encode(), cid.encode()),
        ]
        if via_h11:
            output = self.conn.send(h11.Response(status_code=status, headers=headers))
            self.transport.write((output or b"") + body)
        else:  # mid-headers h11 cannot answer yet; the connection ends with this response
            reason = {408: b"Request Timeout"}.get(status, b"")
            head = b"HTTP/1.1 %d %s\r\n" % (status, reason)
            lines = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
            self.transport.write(head + lines + b"\r\n" + body)
        self.transport.close()


def server_config(app: Any, settings: ApiSettings, **options: Any) -> ApiServerConfig:
    """uvicorn's configuration of the API: its address, the limited h11 protocol, no
    WebSockets, and no uvicorn access log (the app writes its own, without query strings:
    :class:`toolbridge_api.middleware.AccessLogMiddleware`). ``app``: the app, or for
    ``workers`` > 1 the import string of a factory (with ``factory=True``); ``options``: more
    of uvicorn's, or other values for these."""
    return ApiServerConfig(
        app,
        header_timeout=settings.header_timeout_seconds,
        **uvicorn_options(settings) | options,
    )


def run_server(config: ApiServerConfig) -> None:
    """Serve until stopped, as ``uvicorn.run`` does: in this process, or with ``workers`` > 1
    in that many spawned processes sharing one socket (uvicorn's supervisor restarts a worker
    that dies). Exits with uvicorn's start-failure code if the server never started."""
    if config.workers > 1:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    server = Server(config)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def uvicorn_options(settings: ApiSettings) -> dict[str, Any]:
    """uvicorn's settings of the API, for :func:`server_config`."""
    return {
        "host": settings.host,
        "port": settings.port,
        "http": LimitedH11Protocol,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "ws": "none",
        "log_config": None,
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
    }
