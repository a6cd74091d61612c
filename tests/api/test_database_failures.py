"""Every way the database can fail is a 503 with ``Retry-After``, never a 500; a write that
waits too long for its turn is refused within the database timeout and never applied later;
SQL parameters never reach a log line or an error message; the SQLite file is private."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncTransaction

from tests.api.conftest import SQLITE_ONLY, Api, User
from tests.conftest import LogCapture
from toolbridge_api.db.schema import create_engine, migrate
from toolbridge_api.db.store import CommitUncertain, DatabaseBusy, Store

TIMEOUT = 0.5
"""The database timeout of these tests (seconds): short, so refusals come quickly."""


def _store(api: Api) -> Store:
    store: Store = api.app.state.store
    return store


async def _notes(user: User) -> list[dict[str, Any]]:
    response = await user.request("GET", "/v1/notes", params={"includeDeleted": "true"})
    assert response.status_code == 200, response.text
    listed: list[dict[str, Any]] = response.json()["items"]
    return listed


@contextlib.contextmanager
def sqlite_write_lock(database_url: str) -> Iterator[None]:
    """Holds SQLite's write lock from another connection, as another process would."""
    path = database_url.removeprefix("sqlite+aiosqlite:///")
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        yield
        connection.execute("ROLLBACK")
    finally:
        connection.close()


@contextlib.asynccontextmanager
async def postgres_user_lock(database_url: str, user: User) -> Any:
    """Holds the per-user write lock (the advisory lock every write of this user takes)."""
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "SELECT pg_advisory_lock(hashtext($1), hashtext($2))", user.tenant_id, user.user_id
        )
        yield
    finally:
        await connection.close()


async def test_a_write_that_cannot_get_its_turn_is_refused_in_time_and_never_applied(
    make_api: Any, database_url: str, backend: str
) -> None:
    """The fault of issue 12: SQLite locked by another process (PostgreSQL: the user's write
    lock held), so writes queue. Each is refused with 503 within the database timeout,
    while the client still waits; none is stored once the lock is released; a retry with
    the same Idempotency-Key then writes exactly once."""
    api: Api = await make_api(database_timeout_seconds=TIMEOUT)
    alice = await api.user()
    held = (
        sqlite_write_lock(database_url)
        if backend == "sqlite"
        else postgres_user_lock(database_url, alice)
    )
    started = time.monotonic()
    if backend == "sqlite":
        with held:  # type: ignore[union-attr]
            responses = await _queued_creates(alice)
            elapsed = time.monotonic() - started
            await asyncio.sleep(3 * TIMEOUT)  # any write still waiting would land now
    else:
        async with held:  # type: ignore[union-attr]
            responses = await _queued_creates(alice)
            elapsed = time.monotonic() - started
            await asyncio.sleep(3 * TIMEOUT)
    assert [response.status_code for response in responses] == [503] * len(responses)
    for response in responses:
        body = response.json()
        assert body["database"] == "busy", body
        assert body["error"] == (
            f"database busy: the request waited {TIMEOUT:g} s for its turn; nothing was "
            "written; retry"
        )
        assert response.headers["Retry-After"] == "1"
    assert elapsed < 3 * TIMEOUT, f"refused after {elapsed:.2f} s"
    await asyncio.sleep(TIMEOUT)
    assert await _notes(alice) == [], "a write reported as failed was applied later"

    retried = [
        await alice.request(
            "POST", "/v1/notes", json={"n": n}, headers={"Idempotency-Key": f"k{n}"}
        )
        for n in range(len(responses))
    ]
    assert [r.status_code for r in retried] == [201] * len(responses)
    assert sorted(item["payload"]["n"] for item in await _notes(alice)) == list(
        range(len(responses))
    )


async def _queued_creates(alice: User, count: int = 4) -> list[Any]:
    return list(
        await asyncio.gather(
            *(
                alice.request(
                    "POST", "/v1/notes", json={"n": n}, headers={"Idempotency-Key": f"k{n}"}
                )
                for n in range(count)
            )
        )
    )


class _Orig(Exception):
    """A driver error as SQLAlchemy wraps it, with PostgreSQL's SQLSTATE."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("failure", "database", "message"),
    [
        (
            DBAPIError("COMMIT", None, _Orig("terminating connection", "57P01")),
            "unavailable",
            "database unavailable; nothing was written; retry later",
        ),
        (
            DBAPIError("SELECT", None, _Orig("the database system is starting up", "57P03")),
            "unavailable",
            "database unavailable; nothing was written; retry later",
        ),
        (
            DBAPIError("SELECT", None, _Orig("canceling statement", "57014")),
            "unavailable",
            "database unavailable; nothing was written; retry later",
        ),
        (
            OperationalError("BEGIN", None, sqlite3.OperationalError("disk I/O error")),
            "unavailable",
            "database unavailable; nothing was written; retry later",
        ),
        (ConnectionResetError("reset"), "unavailable", None),
        (TimeoutError(), "unavailable", None),
        (
            DBAPIError("SELECT", None, _Orig("lock timeout", "55P03")),
            "busy",
            f"database busy: the request waited {TIMEOUT:g} s for its turn; nothing was"
            " written; retry",
        ),
        (DatabaseBusy(TIMEOUT), "busy", None),
        (
            CommitUncertain("InterfaceError"),
            "unavailable",
            "the database failed while committing: the write may have been applied. Retry "
            "with the same Idempotency-Key to get its result either way, or read the item to "
            "check",
        ),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
async def test_every_database_failure_is_a_503_with_retry_after(
    make_api: Any,
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
    database: str,
    message: str | None,
) -> None:
    api: Api = await make_api(database_timeout_seconds=TIMEOUT)
    alice = await api.user()

    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise failure

    monkeypatch.setattr(_store(api), "write_item", broken)
    response = await alice.request("POST", "/v1/notes", json={})
    assert response.status_code == 503, response.text
    assert response.json()["database"] == database
    if message is not None:
        assert response.json()["error"] == message
    assert response.headers["Retry-After"] in ("1", "2")


@SQLITE_ONLY
async def test_a_database_error_that_is_our_bug_stays_a_500(
    make_api: Any, monkeypatch: pytest.MonkeyPatch, logs: LogCapture
) -> None:
    api: Api = await make_api()
    alice = await api.user()

    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise ProgrammingError("SELECT nonsense", None, _Orig("syntax error", "42601"))

    monkeypatch.setattr(_store(api), "write_item", broken)
    response = await alice.request("POST", "/v1/notes", json={})
    assert response.status_code == 500
    assert response.json()["error"] == "internal server error"
    assert any(line.startswith("unhandled ProgrammingError") for line in logs.messages("ERROR"))


@SQLITE_ONLY
async def test_a_failed_commit_says_the_write_may_have_been_applied(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await api.user()
    original = AsyncTransaction.commit

    async def lost(self: AsyncTransaction) -> None:
        await original(self)  # applied, but the answer never came back
        raise OperationalError("COMMIT", None, sqlite3.OperationalError("disk I/O error"))

    monkeypatch.setattr(AsyncTransaction, "commit", lost)
    response = await alice.request("POST", "/v1/notes", json={}, headers={"Idempotency-Key": "c"})
    monkeypatch.setattr(AsyncTransaction, "commit", original)
    assert response.status_code == 503
    assert "may have been applied" in response.json()["error"]
    again = await alice.request("POST", "/v1/notes", json={}, headers={"Idempotency-Key": "c"})
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true", "the retry finds the applied write"
    assert len(await _notes(alice)) == 1


@SQLITE_ONLY
@pytest.mark.parametrize("log_sql_parameters", [False, True])
async def test_sql_parameters_reach_no_log_line_unless_asked_for(
    make_api: Any, logs: LogCapture, log_sql_parameters: bool
) -> None:
    """At DEBUG, aiosqlite logs every call with its parameters (user payloads, session
    ids): off unless ``TOOLBRIDGE_API_LOG_SQL_PARAMETERS`` (which shows the test would see
    them)."""
    driver = logging.getLogger("aiosqlite")
    driver.setLevel(logging.NOTSET)  # as in a process that never configured it
    try:
        api: Api = await make_api(log_sql_parameters=log_sql_parameters)
        alice = await api.user()
        await alice.create("notes", {"title": "marker-7f3e9a"})
    finally:
        driver.setLevel(logging.INFO)
    assert ("marker-7f3e9a" in logs.text()) is log_sql_parameters


async def test_database_errors_never_quote_sql_parameters(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            with pytest.raises(DBAPIError) as raised:
                await conn.execute(
                    text("SELECT * FROM no_such_table WHERE x = :x"), {"x": "s3cr3t"}
                )
    finally:
        await engine.dispose()
    assert "s3cr3t" not in str(raised.value)
    assert "parameters hidden" in str(raised.value)


def test_the_sqlite_database_and_its_wal_files_are_private(tmp_path: Path) -> None:
    """Created 0600 (and its folder 0700) whatever the umask; SQLite gives -wal and -shm the
    database file's mode."""
    folder = tmp_path / "state"
    path = folder / "api.db"

    def private(suffix: str) -> bool:
        file = Path(f"{path}{suffix}")
        return file.exists() and stat.S_IMODE(file.stat().st_mode) == 0o600

    modes = {suffix: (lambda s=suffix: private(s)) for suffix in ("-wal", "-shm")}

    async def use() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{path}")
        try:
            await migrate(engine)
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO user_epochs VALUES ('t', 'u', 2, NULL, NULL)"))
            for suffix in ("-wal", "-shm"):
                assert modes[suffix](), suffix
        finally:
            await engine.dispose()

    asyncio.run(use())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_an_existing_database_readable_by_others_is_named_in_a_warning(
    tmp_path: Path, logs: LogCapture
) -> None:
    path = tmp_path / "api.db"
    path.touch(mode=0o644)
    path.chmod(0o644)
    asyncio.run(create_engine(f"sqlite+aiosqlite:///{path}").dispose())
    assert logs.messages("WARNING") == [
        f"database file {path} has mode 644: other users may read it (chmod 600 {path})"
    ]


@SQLITE_ONLY
async def test_the_api_starts_while_sqlite_is_locked_by_another_process(
    make_api: Any, database_url: str, logs: LogCapture
) -> None:
    """Purging expired idempotency keys at start is best effort: a locked database delays
    the start by the database timeout at most, and is named in a warning."""
    await make_api()  # the file exists, in WAL mode, at the latest schema
    with sqlite_write_lock(database_url):
        api: Api = await make_api(database_timeout_seconds=0.2)
    assert logs.messages("WARNING") == [
        "expired idempotency keys not purged at start (OperationalError)"
    ], "SQLite's busy timeout (the rest of the 0.2 s) ran out"
    alice = await api.user()
    assert await _notes(alice) == []
