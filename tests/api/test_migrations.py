"""Schema migrations keep data; ``toolbridge-api migrate`` and first start create the schema."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import JSON, Connection, Integer, String, column, insert, inspect, table, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from typer.testing import CliRunner

from tests.api.conftest import require_postgres
from tests.support.api import (
    create_postgres_database,
    drop_postgres_database,
    run_api_cli,
    run_blocking,
)
from toolbridge_api.cli import app as cli
from toolbridge_api.db.models import Base, UTCDateTime
from toolbridge_api.db.schema import (
    MIGRATIONS,
    create_engine,
    current_revision,
    head_revision,
    migrate,
)
from toolbridge_api.db.store import Store
from toolbridge_api.db.sync_state import EpochState, SyncState
from toolbridge_api.security import Principal
from toolbridge_common.contract import format_ms

OLDEST = "0001"
HEAD_REVISION = head_revision()


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
        assert item.version == 3
        assert item.updated_ms == 1_767_312_000_000  # 2026-01-02T00:00:00Z
        assert item.payload == {
            "title": "kept",
            "uid": "0b0d5a7e-7a51-4f5e-9a57-6a4f1b0d2c11",
            "updatedTs": "2026-01-02T00:00:00Z",
            "sync": {"version": 3, "isDeleted": False},
        }
        session = await sync_state.find_session("5f0c7a4e-2b7d-4a51-8f43-0d7f4c7e9b21")
        assert session is not None
        assert (session.user_id, session.epoch) == ("u", 4)
        assert await sync_state.epoch(who) == 4
        assert await sync_state.state(who) == EpochState(4, None, None), "0004: no wipe yet"
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


# --- 0003: delta sync -------------------------------------------------------------------

_OLD_ROWS: list[tuple[str, str, str, str | None, dict[str, Any]]] = [
    # (entity, uid, updated_at, deleted_at, payload written with this API's former values)
    (
        "tasks",
        "00000000-0000-4000-8000-000000000001",
        "2026-01-02 00:00:00.123456",
        None,
        {"title": "a", "status": "done", "completedAt": "2026-01-01T00:00:00Z"},
    ),
    (
        "tasks",
        "00000000-0000-4000-8000-000000000002",
        "2026-01-02 00:00:01",
        None,
        {
            "status": "todo",
            "archived": True,
        },
    ),
    (
        "tasks",
        "00000000-0000-4000-8000-000000000003",
        "2026-01-02 00:00:02",
        None,
        {
            "status": "in_progress",
            "archived": False,
            "lastAction": "start",
        },
    ),
    (
        "notes",
        "00000000-0000-4000-8000-000000000004",
        "2026-01-02 00:00:03",
        None,
        {
            "archived": True,
            "pinned": True,
            "uid": "00000000-0000-4000-8000-000000000004".upper(),
        },
    ),
    (
        "notes",
        "00000000-0000-4000-8000-000000000005",
        "2026-01-02 00:00:04",
        "2026-01-02 00:00:04",
        {"archived": False, "uid": "someone else's"},
    ),
    (
        "comments",
        "00000000-0000-4000-8000-000000000006",
        "2026-01-02 00:00:05",
        None,
        {
            "status": "resolved",
            "resolvedAt": "2026-01-01T00:00:00Z",
            "archived": True,
        },
    ),
    (
        "chats",
        "00000000-0000-4000-8000-000000000007",
        "2026-01-02 00:00:06",
        None,
        {
            "status": "open",
            "archived": True,
        },
    ),
    (
        "chat_messages",
        "00000000-0000-4000-8000-000000000008",
        "2026-01-02 00:00:07",
        None,
        {
            "readAt": "2026-01-01T00:00:00Z",
            "deliveredAt": "2026-01-01T00:00:00Z",
        },
    ),
    (
        "chat_messages",
        "00000000-0000-4000-8000-000000000009",
        "2026-01-02 00:00:08",
        None,
        {
            "readAt": None,
            "archived": True,
            "status": "open",
        },
    ),
]

_CONVERTED: dict[str, dict[str, Any]] = {
    "00000000-0000-4000-8000-000000000001": {
        "title": "a",
        "status": "completed",
        "completedAt": "2026-01-01T00:00:00Z",
    },
    "00000000-0000-4000-8000-000000000002": {"status": "archived"},
    "00000000-0000-4000-8000-000000000003": {"status": "in_progress", "lastAction": "start"},
    "00000000-0000-4000-8000-000000000004": {"status": "archived", "pinned": True},
    "00000000-0000-4000-8000-000000000005": {},
    "00000000-0000-4000-8000-000000000006": {
        "status": "archived",
        "resolvedAt": "2026-01-01T00:00:00Z",
    },
    "00000000-0000-4000-8000-000000000007": {"status": "active", "archived": True},
    "00000000-0000-4000-8000-000000000008": {
        "readAt": "2026-01-01T00:00:00Z",
        "deliveredAt": "2026-01-01T00:00:00Z",
        "read": True,
        "delivered": True,
    },
    "00000000-0000-4000-8000-000000000009": {"readAt": None, "archived": True, "status": "open"},
}


_OLD_TABLE = table(
    "entity_rows",
    column("tenant_id", String()),
    column("user_id", String()),
    column("entity", String()),
    column("uid", String()),
    column("version", Integer()),
    column("payload", JSON()),
    column("created_at", UTCDateTime()),
    column("updated_at", UTCDateTime()),
    column("deleted_at", UTCDateTime()),
)


def _utc(text_time: str) -> datetime:
    return datetime.fromisoformat(text_time).replace(tzinfo=UTC)


async def _seed_old_rows(url: str) -> None:
    engine = create_engine(url)
    try:
        await migrate(engine, "0002")
        async with engine.begin() as conn:
            for entity, uid, updated, deleted, payload in _OLD_ROWS:
                await conn.execute(
                    insert(_OLD_TABLE).values(
                        tenant_id="t",
                        user_id="u",
                        entity=entity,
                        uid=uid,
                        version=2,
                        payload=payload,
                        created_at=_utc("2026-01-01 00:00:00"),
                        updated_at=_utc(updated),
                        deleted_at=None if deleted is None else _utc(deleted),
                    )
                )
        await migrate(engine, "0003")
    finally:
        await engine.dispose()


async def _indexes(conn: AsyncConnection) -> set[str]:
    if conn.dialect.name == "postgresql":
        query = "SELECT indexname FROM pg_indexes WHERE tablename = 'entity_rows'"
    else:
        query = "SELECT name FROM sqlite_master WHERE tbl_name = 'entity_rows' AND type='index'"
    return {row[0] for row in (await conn.execute(text(query))).all()}


async def _check_converted(url: str) -> None:
    engine = create_engine(url)
    try:
        store = Store(engine)
        who = Principal("t", "u")
        for entity, uid, updated, deleted, _payload in _OLD_ROWS:
            item = await store.get_item(who, entity, uid)
            assert item is not None
            updated_ms = _ms(updated)
            assert item.updated_ms == updated_ms
            assert item.deleted_ms == (None if deleted is None else _ms(deleted))
            assert item.version == 2, "a migration is no mutation"
            sync: dict[str, Any] = {"version": 2, "isDeleted": deleted is not None}
            if deleted is not None:
                sync["deletedAt"] = format_ms(_ms(deleted))
            own_uid = uid.upper() if uid.endswith("4") else uid
            assert item.payload == {
                **_CONVERTED[uid],
                "uid": own_uid,
                "updatedTs": format_ms(updated_ms),
                "sync": sync,
            }, entity
        assert item.payload["sync"]["deletedAt"] if item.deleted else True  # type: ignore[union-attr]
        tasks = await store.list_items(who, "tasks", after=None, limit=10, include_deleted=True)
        assert [task.uid for task in tasks] == [row[1] for row in _OLD_ROWS[:3]]
        async with engine.connect() as conn:
            indexes = await _indexes(conn)
            assert "ix_entity_rows_tenant_id_user_id_entity_updated_at_ms_uid" in indexes
            assert "ix_entity_rows_tenant_id_user_id_entity_seq" not in indexes
            assert "ix_entity_rows_tenant_id_user_id_entity_uid" in indexes
            if conn.dialect.name == "postgresql":
                collation = await conn.execute(
                    text(
                        "SELECT collation_name FROM information_schema.columns"
                        " WHERE table_name = 'entity_rows' AND column_name = 'uid'"
                    )
                )
                assert collation.scalar_one() == "C"
    finally:
        await engine.dispose()


def _ms(text_time: str) -> int:
    moment = _utc(text_time)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


async def _down_and_up_again(url: str) -> None:
    engine = create_engine(url)
    try:
        await migrate_down(engine, "0002")
        async with engine.connect() as conn:
            indexes = await _indexes(conn)
            assert "ix_entity_rows_tenant_id_user_id_entity_seq" in indexes
            columns = await conn.run_sync(
                lambda sync: {c["name"] for c in inspect(sync).get_columns("entity_rows")}
            )
            assert "updated_at_ms" not in columns
        await migrate(engine, "0003")
    finally:
        await engine.dispose()


async def migrate_down(engine: AsyncEngine, revision: str) -> None:
    def downgrade(connection: Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    async with engine.begin() as conn:
        await conn.run_sync(downgrade)


def test_0003_converts_rows_written_with_former_values(empty_database: str) -> None:
    """Every row gets its millisecond times and the original's values, stamped like a REST
    write; versions stay; the sync order index replaces the seq one; down and up again works."""
    run_blocking(_seed_old_rows(empty_database))
    run_blocking(_check_converted(empty_database))
    run_blocking(_down_and_up_again(empty_database))
    run_blocking(_check_converted(empty_database))


async def _schema_differences(url: str) -> list[Any]:
    engine = create_engine(url)
    try:
        await migrate(engine)
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
    finally:
        await engine.dispose()


def test_migrations_build_the_schema_the_models_describe(empty_database: str) -> None:
    """The app creates its schema by migrating (db/schema.py), the code reads and writes by
    the models: they must describe the same tables, columns and indexes."""
    assert run_blocking(_schema_differences(empty_database)) == []
