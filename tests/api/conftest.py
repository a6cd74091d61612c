"""Fixtures for the API tests: the app on SQLite and on PostgreSQL, users with real RS256
tokens from a JWKS served over HTTP, and sync sessions.

``api`` runs the app in-process over ``httpx.ASGITransport`` (fast); ``tests/support/api.py``
runs it over real HTTP for the end-to-end tests.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from tests.conftest import LogCapture
from tests.support.api import (
    postgres_available,
    postgres_database_sync,
    run_blocking,
)
from tests.support.jwks import AUDIENCE, JWKSServer
from toolbridge_api.app import create_app
from toolbridge_api.config import ApiSettings

BACKENDS = ("sqlite", "postgres")

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
"""For tests of request parsing that never reach the database: one backend is enough."""

# The drivers log every statement at DEBUG; the log capture of every test would format them all.
for _name in ("aiosqlite", "asyncpg", "sqlalchemy.engine"):
    logging.getLogger(_name).setLevel(logging.INFO)
_TABLES = ("entity_rows", "sync_sessions", "user_epochs", "idempotency_keys")


def services_required() -> bool:
    """CI sets TOOLBRIDGE_TEST_REQUIRE_SERVICES=1: a missing PostgreSQL fails, never skips."""
    return os.environ.get("TOOLBRIDGE_TEST_REQUIRE_SERVICES") == "1"


_pg_problem: list[str | None] = []


def require_postgres() -> None:
    """Skip (or, in CI, fail) the calling test when PostgreSQL is not reachable."""
    if not _pg_problem:
        _pg_problem.append(run_blocking(postgres_available()))
    problem = _pg_problem[0]
    if problem is not None:
        if services_required():
            pytest.fail(f"{problem} (TOOLBRIDGE_TEST_REQUIRE_SERVICES=1)")
        pytest.skip(problem)


@pytest.fixture(scope="session")
def api_jwks() -> Iterator[JWKSServer]:
    """A JWKS over real HTTP; ``api_jwks.mint(sub=...)`` makes a user's access token."""
    with JWKSServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _tokens_never_logged(request: pytest.FixtureRequest, logs: LogCapture) -> Iterator[None]:
    """Fails a test whose logs contain any access token minted for the API tests."""
    yield
    if "api_jwks" in request.fixturenames:
        text = logs.text()
        leaked = [t for t in request.getfixturevalue("api_jwks").issued if t in text]
        assert not leaked, f"{len(leaked)} access token(s) appeared in the logs"


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """One PostgreSQL database for the session; tests empty its tables (``database_url``)."""
    require_postgres()
    with postgres_database_sync() as url:
        yield url


async def _empty_tables(url: str) -> None:
    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    connection = await asyncpg.connect(dsn)
    try:
        existing = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )
        names = [name for (name,) in existing if name in _TABLES]
        if names:
            await connection.execute(f"TRUNCATE {', '.join(names)}")
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite file for the session; tests empty its tables (``database_url``). Created
    0600, as the API creates its own (else the API warns that others may read it)."""
    path = tmp_path_factory.mktemp("sqlite") / "api.db"
    path.touch(mode=0o600)
    return f"sqlite+aiosqlite:///{path}"


def _empty_sqlite(url: str) -> None:
    path = url.removeprefix("sqlite+aiosqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        existing = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        for table in _TABLES:
            if table in existing:
                connection.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed names


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest) -> str:
    """An empty database of each kind: the session's SQLite file or PostgreSQL database, with
    their tables emptied (the schema stays, so the app's start skips migrating)."""
    if request.param == "sqlite":
        url: str = request.getfixturevalue("sqlite_database")
        _empty_sqlite(url)
        return url
    url = request.getfixturevalue("pg_database")
    await _empty_tables(url)
    return url


def api_settings(api_jwks: JWKSServer, database_url: str, **overrides: Any) -> ApiSettings:
    """Settings for tests: the JWKS server's issuer and audience, a generous rate limit."""
    fields: dict[str, Any] = {
        "jwks_url": api_jwks.jwks_url,
        "issuer": api_jwks.issuer,
        "audience": AUDIENCE,
        "database_url": database_url,
        "rate_limit_requests": 1_000_000,
        "rate_limit_burst": 1_000_000,
        "auth_rate_limit_requests": 1_000_000,
        "auth_rate_limit_burst": 1_000_000,
    }
    fields.update(overrides)
    return ApiSettings(_env_file=None, **fields)  # type: ignore[call-arg]


@dataclass
class User:
    """One caller: an HTTP client with their token and tenant, plus their sync session."""

    http: httpx.AsyncClient
    user_id: str
    tenant_id: str
    session_id: str = ""
    epoch: int = 0
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def sync(self) -> dict[str, str]:
        """The sync headers entity routes need."""
        return {"X-Sync-Session": self.session_id, "X-Sync-Epoch": str(self.epoch)}

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **self.sync, **kwargs.pop("headers", {})}
        return await self.http.request(method, url, headers=headers, **kwargs)

    async def start_session(self) -> dict[str, Any]:
        response = await self.http.post("/v1/sync/sessions", headers=self.headers)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        self.session_id, self.epoch = body["id"], body["epoch"]
        return body

    async def create(self, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        response = await self.request("POST", f"/v1/{entity}", json=payload)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body


@dataclass
class Api:
    """The app under test and a way to make users of it."""

    app: FastAPI
    http: httpx.AsyncClient
    jwks: JWKSServer

    async def user(self, user_id: str = "auth0|alice", tenant_id: str = "default") -> User:
        """A user with a valid token and a live sync session."""
        token = self.jwks.mint(sub=user_id)
        headers = {"Authorization": f"Bearer {token}", "X-TB-Tenant-ID": tenant_id}
        user = User(self.http, user_id, tenant_id, headers=headers)
        await user.start_session()
        return user


_apps: dict[str, FastAPI] = {}


def _app_for(settings: ApiSettings) -> FastAPI:
    """One app per distinct settings for the whole run: building the routes costs more than
    most tests. Each test still runs its own lifespan (engine, authenticator) on its loop."""
    key = repr(
        sorted(
            (name, value.get_secret_value() if isinstance(value, SecretStr) else value)
            for name, value in settings
        )
    )
    if key not in _apps:
        _apps[key] = create_app(settings)
    return _apps[key]


@pytest.fixture
async def make_api(api_jwks: JWKSServer, database_url: str) -> AsyncIterator[Callable[..., Any]]:
    """``await make_api(**settings)``: the app with its lifespan running, over ASGI."""
    stack: list[tuple[Any, httpx.AsyncClient]] = []

    async def factory(**overrides: Any) -> Api:
        app = _app_for(api_settings(api_jwks, database_url, **overrides))
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test")
        stack.append((lifespan, http))
        return Api(app, http, api_jwks)

    yield factory
    for lifespan, http in reversed(stack):
        await http.aclose()
        await lifespan.__aexit__(None, None, None)


@pytest.fixture
async def api(make_api: Callable[..., Any]) -> Api:
    """The app with default test settings on the current backend."""
    made: Api = await make_api()
    return made


@pytest.fixture
def backend(database_url: str) -> str:
    return "postgres" if database_url.startswith("postgresql") else "sqlite"
