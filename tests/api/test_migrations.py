"""Schema migrations keep data; ``toolbridge-api migrate`` and first start create the schema."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from tests.api.conftest import require_postgres
from tests.support.api import (
    create_postgres_database,
    drop_postgres_database,
    run_api_cli,
    run_blocking,
)
from toolbridge_api.cli import app as cli
from toolbridge_api.db.schema import create_engine, current_revision, migrate
from toolbridge_api.db.store import Store
from toolbridge_api.db.sync_state import SyncState
from toolbridge_api.security import Principal

OLDEST = "0001"
HEAD_REVISION = "0002"


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all (PostgreSQL: a new database, dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        return
    require_postgres()
    url = run_blocking(create_postgres_database())
    try:
        yield url
    finally:
        run_blocking(drop_postgres_database(url))


async def _seed_at_oldest_revision(url: str) -> None:
    engine = create_engine(url)
    try:
        await migrate(engine, OLDEST)
        assert await current_revision(engine) == OLDEST
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO entity_rows (tenant_id, user_id, entity, uid, version, payload,"
                    " created_at, updated_at, deleted_at) VALUES ('t', 'u', 'notes',"
                    " '0b0d5a7e-7a51-4f5e-9a57-6a4f1b0d2c11', 3, '{\"title\": \"kept\"}',"
                    " '2026-01-01 00:00:00', '2026-01-02 00:00:00', NULL)"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO sync_sessions (id, tenant_id, user_id, created_at, expires_at,"
                    " epoch) VALUES ('5f0c7a4e-2b7d-4a51-8f43-0d7f4c7e9b21', 't', 'u',"
                    " '2026-01-01 00:00:00', '2099-01-01 00:00:00', 4)"
                )
            )
            await conn.execute(
                text("INSERT INTO user_epochs (tenant_id, user_id, epoch) VALUES ('t', 'u', 4)")
            )
    finally:
        await engine.dispose()


async def _read_back(url: str) -> tuple[str | None, list[str]]:
    engine = create_engine(url)
    try:
        store = Store(engine)
        sync_state = SyncState(store, session_ttl=timedelta(minutes=30))
        who = Principal("t", "u")
        item = await store.get_item(who, "notes", "0b0d5a7e-7a51-4f5e-9a57-6a4f1b0d2c11")
        assert item is not None
        assert (item.version, item.payload) == (3, {"title": "kept"})
        session = await sync_state.get_session(who, "5f0c7a4e-2b7d-4a51-8f43-0d7f4c7e9b21")
        assert session is not None
        assert session.epoch == 4
        assert await sync_state.epoch(who) == 4
        async with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                query = "SELECT indexname FROM pg_indexes WHERE tablename = 'sync_sessions'"
            else:
                query = "SELECT name FROM sqlite_master WHERE tbl_name = 'sync_sessions'"
            indexes = [row[0] for row in (await conn.execute(text(query))).all()]
        return await current_revision(engine), indexes
    finally:
        await engine.dispose()


async def _migrate_again(url: str) -> None:
    engine = create_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


def test_cli_migrate_upgrades_an_old_database_without_losing_rows(
    empty_database: str, tmp_path: Path
) -> None:
    run_blocking(_seed_at_oldest_revision(empty_database))
    result = run_api_cli(tmp_path, "migrate", TOOLBRIDGE_API_DATABASE_URL=empty_database)
    assert result.returncode == 0, result.stderr
    assert f"{OLDEST} -> {HEAD_REVISION}" in result.stdout
    revision, indexes = run_blocking(_read_back(empty_database))
    assert revision == HEAD_REVISION
    assert "ix_sync_sessions_tenant_id_user_id" in indexes

    run_blocking(_migrate_again(empty_database))
    assert run_blocking(_read_back(empty_database))[0] == HEAD_REVISION


def test_cli_migrate_reports_an_unusable_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("toolbridge_api.cli.configure_logging", lambda level: None)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    url = f"sqlite+aiosqlite:///{blocker}/x/api.db"
    result = CliRunner().invoke(cli, ["migrate"], env={"TOOLBRIDGE_API_DATABASE_URL": url})
    assert result.exit_code == 1
    assert "Error: migration failed" in result.output


async def test_first_start_creates_the_sqlite_folder_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "api.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await migrate(engine)
        assert await current_revision(engine) == HEAD_REVISION
    finally:
        await engine.dispose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
