"""Serve an ASGI app over real HTTP (optionally TLS) on 127.0.0.1 from a background thread.

Tests then exercise the client's actual transport, while the server keeps its own event loop
so it is unaffected by (and cannot block) the test's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

import trustme
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

_START_TIMEOUT = 10.0


class DeferredApp:
    """An ASGI app set once the port is known: the app's settings (its own URL) depend on it."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "the server is not built yet"
        await self.app(scope, receive, send)


class ServerThread:
    """Runs ``app`` under uvicorn on a free loopback port in a daemon thread.

    ``stop()`` returns within ~2.5 s even while requests hang: ``on_close`` is first run on
    the server's loop so the app can wake them, then uvicorn is asked to exit, then forced.
    With ``tls_ca`` the server presents a certificate for 127.0.0.1 and localhost from it.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        tls_ca: trustme.CA | None = None,
        on_close: Callable[[], None] | None = None,
        name: str,
    ) -> None:
        self.app = app
        self.tls_ca = tls_ca
        self.name = name
        self._on_close = on_close
        self._port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_error: BaseException | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def running(self) -> bool:
        """Whether ``start()`` has been called without a matching ``stop()``."""
        return self._thread is not None

    @property
    def port(self) -> int:
        """Bound port; fails loudly instead of yielding a URL with port 0."""
        if self._port is None:
            raise RuntimeError(f"{self.name} not started")
        return self._port

    @property
    def scheme(self) -> str:
        return "http" if self.tls_ca is None else "https"

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:54321``."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The server thread's event loop; use ``call_soon_threadsafe`` to act on it."""
        if self._loop is None:
            raise RuntimeError(f"{self.name} not running")
        return self._loop

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the server's loop if it is running; otherwise do nothing,
        so fixtures can release or wake the app unconditionally."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closed by a concurrent stop()
                loop.call_soon_threadsafe(callback)

    def start(self) -> Self:
        """Bind 127.0.0.1 on a free port and return once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already started")
        keyfile = certfile = None
        if self.tls_ca is not None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"{self.name}-")
            cert = self.tls_ca.issue_cert("127.0.0.1", "localhost")
            key_path = Path(self._tmp.name, "key.pem")
            cert_path = Path(self._tmp.name, "cert.pem")
            cert.private_key_pem.write_to_path(str(key_path))
            cert_path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
            keyfile, certfile = str(key_path), str(cert_path)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            log_config=None,
            access_log=False,
            lifespan="off",
            loop="asyncio",
            ws="none",
            timeout_graceful_shutdown=1,
            ssl_keyfile=keyfile,
            ssl_certfile=certfile,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread_error = None
        self._thread = threading.Thread(
            target=self._run, args=(server,), name=self.name, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} failed to start") from self._thread_error
            time.sleep(0.005)
        self._port = server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Stop promptly even with hung requests: ``on_close``, then exit, then force exit."""
        thread, server = self._thread, self._server
        if thread is None or server is None:
            return
        if self._on_close is not None:
            self.call_soon(self._on_close)
        server.should_exit = True
        thread.join(timeout=1.5)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=1.0)
        self._thread = self._server = self._loop = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, server: uvicorn.Server) -> None:
        """Thread body; keeps exceptions for start() rather than letting pytest see them."""
        try:
            asyncio.run(self._serve(server))
        except BaseException as exc:
            self._thread_error = exc

    async def _serve(self, server: uvicorn.Server) -> None:
        self._loop = asyncio.get_running_loop()
        await server.serve()
