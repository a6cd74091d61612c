"""Run the real ToolBridge API on 127.0.0.1 for tests of other components (the MCP server).

``ApiServer`` serves :func:`toolbridge_api.app.create_app` over real HTTP with its lifespan
run (database opened and migrated, authenticator built), counts the HTTP requests and TCP
connections it served, and can expire sessions or bump epochs behind the clients' backs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, Self, TypeVar

import asyncpg
from fastapi import FastAPI
from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.support.process import ServiceProcess, free_port
from tests.support.server import ServerThread
from toolbridge_api.app import create_app
from toolbridge_api.config import ApiSettings
from toolbridge_api.db.store import Store
from toolbridge_api.db.sync_state import SyncState
from toolbridge_api.security import Principal

T = TypeVar("T")

POSTGRES_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
_LIFESPAN_TIMEOUT = 30.0


class RequestCounter:
    """ASGI wrapper counting HTTP requests (optionally by path) and TCP connections.

    A connection is identified by the client's (host, port): uvicorn gives each TCP
    connection its own ephemeral port, so distinct pairs are distinct connections.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._paths: list[tuple[str, str]] = []
        self._clients: set[tuple[str, int]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            with self._lock:
                self._paths.append((scope["method"], scope["path"]))
                client = scope.get("client")
                if client is not None:
                    self._clients.add((client[0], client[1]))
        await self.app(scope, receive, send)

    @property
    def requests(self) -> int:
        with self._lock:
            return len(self._paths)

    @property
    def paths(self) -> list[tuple[str, str]]:
        """(method, path) of every request so far, in arrival order."""
        with self._lock:
            return list(self._paths)

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._clients)

    def reset(self) -> None:
        with self._lock:
            self._paths.clear()
            self._clients.clear()


class ApiServer:
    """The real API over HTTP on 127.0.0.1, in a background thread with its own loop.

    ``database_url`` defaults to a fresh SQLite file in a temporary folder. Keyword
    ``settings`` override :class:`ApiSettings` fields (e.g. ``rate_limit_burst``); the rate
    limits (all groups) default high here so that tests of other components never trip them
    by accident.
    """

    def __init__(
        self,
        jwks_url: str | None,
        issuer: str | None,
        audience: str | None,
        *,
        tenant_secret: str | None = None,
        database_url: str | None = None,
        **settings: Any,
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if database_url is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="toolbridge-api-")
            database_url = f"sqlite+aiosqlite:///{Path(self._tmp.name, 'api.db')}"
        fields: dict[str, Any] = {
            "jwks_url": jwks_url,
            "issuer": issuer,
            "audience": audience,
            "database_url": database_url,
            "tenant_secret": None if tenant_secret is None else SecretStr(tenant_secret),
            "rate_limit_requests": 1_000_000,
            "rate_limit_burst": 1_000_000,
            "auth_rate_limit_requests": 1_000_000,
            "auth_rate_limit_burst": 1_000_000,
        }
        fields.update(settings)
        self.settings = ApiSettings(_env_file=None, **fields)  # type: ignore[call-arg]
        self.app: FastAPI = create_app(self.settings)
        self.counter = RequestCounter(self.app)
        self._server = ServerThread(self.counter, name="toolbridge-api")
        self._lifespan: contextlib.AsyncExitStack | None = None

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:54321``."""
        return self._server.url

    @property
    def requests(self) -> int:
        """HTTP requests served since start (or the last ``reset_counters()``)."""
        return self.counter.requests

    @property
    def connections(self) -> int:
        """Distinct TCP connections that carried those requests."""
        return self.counter.connections

    def reset_counters(self) -> None:
        self.counter.reset()

    @property
    def store(self) -> Store:
        store: Store = self.app.state.store
        return store

    @property
    def sync_state(self) -> SyncState:
        sync_state: SyncState = self.app.state.sync_state
        return sync_state

    def run(self, work: Callable[[Store], Awaitable[T]]) -> T:
        """Run ``work(store)`` on the server's loop (the engine lives there) and return."""
        future = asyncio.run_coroutine_threadsafe(_call(work, self.store), self._server.loop)
        return future.result(timeout=_LIFESPAN_TIMEOUT)

    def expire_sessions(self, tenant_id: str | None = None, user_id: str | None = None) -> int:
        """Expire every session now (or only one user's); entity calls then get 428."""
        who = None if user_id is None else Principal(tenant_id or "default", user_id)
        return self.run(lambda _store: self.sync_state.expire_sessions(who))

    def bump_epoch(self, user_id: str, tenant_id: str = "default") -> int:
        """Increment a user's epoch (like another device's wipe, without deleting data)."""
        return self.run(lambda _store: self.sync_state.bump_epoch(Principal(tenant_id, user_id)))

    def start(self) -> Self:
        self._server.start()
        try:
            self._lifespan = contextlib.AsyncExitStack()
            future = asyncio.run_coroutine_threadsafe(self._enter(), self._server.loop)
            future.result(timeout=_LIFESPAN_TIMEOUT)
        except BaseException:
            self._server.stop()
            raise
        return self

    def stop(self) -> None:
        if self._lifespan is not None and self._server.running:
            future = asyncio.run_coroutine_threadsafe(self._lifespan.aclose(), self._server.loop)
            future.result(timeout=_LIFESPAN_TIMEOUT)
        self._lifespan = None
        self._server.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _enter(self) -> None:
        assert self._lifespan is not None
        await self._lifespan.enter_async_context(self.app.router.lifespan_context(self.app))


async def _call(work: Callable[[Store], Awaitable[T]], store: Store) -> T:
    return await work(store)


async def postgres_available(dsn: str = POSTGRES_ADMIN_DSN) -> str | None:
    """None if PostgreSQL answers at ``dsn``, else why not (for a skip reason)."""
    try:
        connection = await asyncpg.connect(dsn, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"PostgreSQL not reachable at {dsn}: {type(exc).__name__}: {exc}"
    await connection.close()
    return None


async def create_postgres_database(dsn: str = POSTGRES_ADMIN_DSN) -> str:
    """Create a fresh, empty database next to ``dsn``'s; its SQLAlchemy URL
    (``postgresql+asyncpg://...``). Parallel test runs never see each other's tables."""
    name = f"tb_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(dsn, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}"


async def drop_postgres_database(url: str, dsn: str = POSTGRES_ADMIN_DSN) -> None:
    """Drop a database made by :func:`create_postgres_database`, closing its connections."""
    name = url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(dsn, timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def postgres_database(dsn: str = POSTGRES_ADMIN_DSN) -> AsyncIterator[str]:
    """A fresh PostgreSQL database for the block, dropped afterwards; yields its URL."""
    url = await create_postgres_database(dsn)
    try:
        yield url
    finally:
        await drop_postgres_database(url, dsn)


def run_blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion from synchronous code, even when the calling thread
    already runs an event loop (a sync fixture requested from an async test)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@contextlib.contextmanager
def postgres_database_sync(dsn: str = POSTGRES_ADMIN_DSN) -> Iterator[str]:
    """:func:`postgres_database` for synchronous (e.g. session-scoped) fixtures."""
    url = run_blocking(create_postgres_database(dsn))
    try:
        yield url
    finally:
        run_blocking(drop_postgres_database(url, dsn))


API_COMMAND = str(Path(sys.executable).parent / "toolbridge-api")


def run_api_cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``toolbridge-api ARGS`` to completion with only ``env`` as TOOLBRIDGE_* settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TOOLBRIDGE_")}
    return subprocess.run(  # noqa: S603 - our own console script
        [API_COMMAND, *args],
        env=base | env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class ApiProcess(ServiceProcess):
    """``toolbridge-api serve`` as a child process on 127.0.0.1 (a free port), as a user runs
    it: settings only through ``TOOLBRIDGE_API_*`` environment variables (``args``: more of
    ``serve``'s options, e.g. ``--workers``). Ready once ``/healthz`` answers 200."""

    def __init__(
        self, env: dict[str, str], *, cwd: Path | None = None, args: tuple[str, ...] = ()
    ) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("TOOLBRIDGE_")}
        port = free_port()
        env = base | {"TOOLBRIDGE_API_HOST": "127.0.0.1"} | env
        env["TOOLBRIDGE_API_PORT"] = str(port)
        argv = [API_COMMAND, "serve", *args]
        super().__init__(argv, env, port=port, ready_path="/healthz", cwd=cwd)
