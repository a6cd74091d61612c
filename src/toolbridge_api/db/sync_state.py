"""Sync sessions, per-user epochs, wipe and the sync state: what a sync client sets up and
checks before it touches items. Like :mod:`toolbridge_api.db.store`, every statement is
scoped by the caller's (tenant_id, user_id)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from toolbridge_api.db.models import EntityRow, SyncSession, UserEpoch
from toolbridge_api.db.store import Store, utcnow
from toolbridge_api.security import Principal

FIRST_EPOCH = 1


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    tenant_id: str
    user_id: str
    created_at: datetime
    expires_at: datetime
    epoch: int


@dataclass(frozen=True, slots=True)
class SessionCheck:
    """A session as seen by an entity request: its owner, expiry and the owner's epoch now."""

    tenant_id: str
    user_id: str
    expires_at: datetime
    current_epoch: int


@dataclass(frozen=True, slots=True)
class EntityState:
    count: int
    deleted: int
    latest_version: int
    latest_updated_at: datetime | None


def _epoch_of(tenant_id: Any, user_id: Any) -> Any:
    return (
        select(func.coalesce(func.max(UserEpoch.epoch), FIRST_EPOCH))
        .where(UserEpoch.tenant_id == tenant_id, UserEpoch.user_id == user_id)
        .scalar_subquery()
    )


class SyncState:
    """Sessions and epochs on the store's engine (and its SQLite writer queue)."""

    def __init__(self, store: Store, *, session_ttl: timedelta) -> None:
        self.store = store
        self.session_ttl = session_ttl

    async def epoch(self, principal: Principal) -> int:
        async with self.store.engine.connect() as conn:
            result = await conn.execute(select(_epoch_of(principal.tenant_id, principal.user_id)))
            return int(result.scalar_one())

    async def create_session(self, principal: Principal) -> Session:
        """A new session for the caller; their expired sessions are purged on the way."""
        now = utcnow()
        session = Session(
            id=str(uuid.uuid4()),
            tenant_id=principal.tenant_id,
            user_id=principal.user_id,
            created_at=now,
            expires_at=now + self.session_ttl,
            epoch=await self.epoch(principal),
        )
        async with self.store.writing() as conn:
            await conn.execute(
                delete(SyncSession).where(
                    SyncSession.tenant_id == principal.tenant_id,
                    SyncSession.user_id == principal.user_id,
                    SyncSession.expires_at <= now,
                )
            )
            await conn.execute(
                insert(SyncSession).values(
                    id=session.id,
                    tenant_id=session.tenant_id,
                    user_id=session.user_id,
                    created_at=session.created_at,
                    expires_at=session.expires_at,
                    epoch=session.epoch,
                )
            )
        return session

    async def get_session(self, principal: Principal, session_id: str) -> Session | None:
        """The caller's live session, or None (unknown, expired and others' look the same)."""
        async with self.store.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(SyncSession).where(
                        SyncSession.id == session_id,
                        SyncSession.tenant_id == principal.tenant_id,
                        SyncSession.user_id == principal.user_id,
                        SyncSession.expires_at > utcnow(),
                    )
                )
            ).one_or_none()
        if row is None:
            return None
        return Session(
            row.id, row.tenant_id, row.user_id, row.created_at, row.expires_at, row.epoch
        )

    async def delete_session(self, principal: Principal, session_id: str) -> bool:
        async with self.store.writing() as conn:
            result = await conn.execute(
                delete(SyncSession).where(
                    SyncSession.id == session_id,
                    SyncSession.tenant_id == principal.tenant_id,
                    SyncSession.user_id == principal.user_id,
                )
            )
        return bool(result.rowcount)

    async def check_session(self, session_id: str) -> SessionCheck | None:
        """Owner, expiry and the owner's current epoch, in one query (every entity request)."""
        async with self.store.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        SyncSession.tenant_id,
                        SyncSession.user_id,
                        SyncSession.expires_at,
                        _epoch_of(SyncSession.tenant_id, SyncSession.user_id),
                    ).where(SyncSession.id == session_id)
                )
            ).one_or_none()
        return None if row is None else SessionCheck(row[0], row[1], row[2], int(row[3]))

    async def expire_sessions(self, principal: Principal | None = None) -> int:
        """Ends sessions now (all, or one user's); for operators and tests."""
        statement = update(SyncSession).values(expires_at=utcnow() - timedelta(seconds=1))
        if principal is not None:
            statement = statement.where(
                SyncSession.tenant_id == principal.tenant_id,
                SyncSession.user_id == principal.user_id,
            )
        async with self.store.writing() as conn:
            result = await conn.execute(statement)
        return int(result.rowcount)

    async def bump_epoch(self, principal: Principal) -> int:
        """Increments the caller's epoch, so every client must resynchronise; the new epoch."""
        async with self.store.writing() as conn:
            return await self._bump_epoch(conn, principal)

    async def _bump_epoch(self, conn: AsyncConnection, principal: Principal) -> int:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        statement = (
            dialect.insert(UserEpoch)
            .values(tenant_id=principal.tenant_id, user_id=principal.user_id, epoch=FIRST_EPOCH + 1)
            .on_conflict_do_update(
                index_elements=[UserEpoch.tenant_id, UserEpoch.user_id],
                set_={"epoch": UserEpoch.epoch + 1},
            )
            .returning(UserEpoch.epoch)
        )
        return int((await conn.execute(statement)).scalar_one())

    async def wipe(self, principal: Principal) -> tuple[int, int]:
        """Deletes all the caller's items and bumps the epoch, atomically: (epoch, deleted)."""
        async with self.store.writing() as conn:
            result = await conn.execute(
                delete(EntityRow).where(
                    EntityRow.tenant_id == principal.tenant_id,
                    EntityRow.user_id == principal.user_id,
                )
            )
            epoch = await self._bump_epoch(conn, principal)
        return epoch, int(result.rowcount)

    async def state(self, principal: Principal) -> dict[str, EntityState]:
        """Per-entity counts and latest versions of the caller's items."""
        deleted = EntityRow.deleted_at.is_not(None)
        statement = (
            select(
                EntityRow.entity,
                func.sum(case((deleted, 0), else_=1)),
                func.sum(case((deleted, 1), else_=0)),
                func.max(EntityRow.version),
                func.max(EntityRow.updated_at),
            )
            .where(
                EntityRow.tenant_id == principal.tenant_id,
                EntityRow.user_id == principal.user_id,
            )
            .group_by(EntityRow.entity)
        )
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return {
            row[0]: EntityState(
                int(row[1]),
                int(row[2]),
                int(row[3]),
                None if row[4] is None else _as_utc(row[4]),
            )
            for row in rows
        }


def _as_utc(value: datetime) -> datetime:
    """Aggregates bypass the column type on some drivers; normalise to aware UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
