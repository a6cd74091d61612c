"""Engine creation and schema migration (Alembic, run programmatically)."""

from __future__ import annotations

import json
import logging
import os
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from loguru import logger
from pydantic_core import from_json
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).with_name("migrations")
HEAD = "head"
_MIGRATION_LOCK = 0x7B5C_A9E1  # PostgreSQL advisory lock: one migrator at a time


DEFAULT_TIMEOUT_SECONDS = 5.0
"""How long a connection, a lock or SQLite's busy wait may take (``database_timeout_seconds``)."""

_DRIVER_LOGGERS = ("aiosqlite",)
"""Drivers that log each call at DEBUG with its SQL parameters (aiosqlite: every statement)."""


def create_engine(
    database_url: str,
    *,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    log_parameters: bool = False,
) -> AsyncEngine:
    """An async engine whose waits are bounded by ``timeout_seconds``: the pool checkout, and
    PostgreSQL's connect and lock waits (SQLite's busy timeout, for readers; writers get the
    remainder of their own deadline, :meth:`Store.writing`).

    SQL parameters (user payloads, session ids) never reach a log line or an error message
    unless ``log_parameters``. A SQLite file gets its folder created (0700) and is created
    0600 (its ``-wal`` and ``-shm`` files inherit that), WAL mode and a busy timeout."""
    url = make_url(database_url)
    if not log_parameters:
        for name in _DRIVER_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO)
    timeout_ms = max(1, round(timeout_seconds * 1000))
    common: dict[str, Any] = {
        "hide_parameters": not log_parameters,
        "pool_timeout": timeout_seconds,
        "json_deserializer": read_json,
    }
    if url.get_backend_name() != "sqlite":
        return create_async_engine(
            url,
            pool_pre_ping=True,
            pool_size=10,
            max_overflow=10,
            connect_args={
                "timeout": timeout_seconds,
                "server_settings": {"lock_timeout": str(timeout_ms)},
            },
            **common,
        )
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        _create_private_file(Path(url.database).expanduser())
    # A pool as large as PostgreSQL's: with SQLAlchemy's default (5), requests beyond five in
    # flight opened and closed a SQLite connection each (its thread, file and pragmas).
    engine = create_async_engine(url, pool_size=10, max_overflow=10, **common)

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # The busy timeout first: switching a new file to WAL waits for other writers too.
        cursor.execute(f"PRAGMA busy_timeout={timeout_ms}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def read_json(text: str | bytes) -> Any:
    """A stored JSON value (the payload of every item read). pydantic's parser is ~2.5x faster
    than the standard library's and reads every value the same, except that it refuses a lone
    surrogate escape (``"\\ud800"``), which the standard library then reads as before."""
    try:
        return from_json(text)
    except ValueError:
        return json.loads(text)


def _create_private_file(path: Path) -> None:
    """The database file, created empty with mode 0600 (and its folder 0700) if missing, so
    SQLite never creates it world-readable; SQLite gives ``-wal`` and ``-shm`` the main file's
    mode. An existing file readable by others is left as the operator made it, with a
    warning."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            logger.warning(
                "database file {} has mode {:o}: other users may read it (chmod 600 {})",
                path,
                mode,
                path,
            )


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


@cache
def head_revision() -> str | None:
    """The newest revision shipped with this package."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def _upgrade(connection: Connection, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        # A migration may rewrite big tables and wait for other migrators: no request limits.
        connection.execute(text("SET LOCAL lock_timeout = 0"))
        connection.execute(text("SET LOCAL statement_timeout = 0"))
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    if revision == HEAD and _current(connection) == head_revision():
        return
    config = _config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def migrate(engine: AsyncEngine, revision: str = HEAD) -> None:
    """Bring the schema to ``revision`` (default: the latest) without touching existing rows.

    PostgreSQL: an advisory lock makes processes starting together migrate one at a time.
    """
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade, revision)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The schema revision the database is at (None for an empty database)."""
    async with engine.connect() as connection:
        return await connection.run_sync(_current)
