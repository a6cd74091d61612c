"""The only code that reads and writes rows. Every statement is scoped by the caller's
(tenant_id, user_id), so no route can reach another tenant's or user's data."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, delete, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from toolbridge_api.db.models import EntityRow, SyncSession, UserEpoch
from toolbridge_api.security import Principal

FIRST_EPOCH = 1
_CAS_ATTEMPTS = 20

Change = Callable[[dict[str, Any], datetime], dict[str, Any]]
"""Computes an item's new payload from its current one and the time of the change."""


class StoreError(Exception):
    """A request the data cannot satisfy; mapped to an HTTP status in one place."""


class NotFound(StoreError):
    """No such item for this caller (also what other users' items look like)."""


class Gone(StoreError):
    """The item was soft-deleted."""


class VersionMismatch(StoreError):
    """``If-Match`` named a version other than the current one."""

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(f"version mismatch: If-Match is {expected}, current version is {current}")
        self.current = current


class Contended(StoreError):
    """Concurrent writers kept winning; the client should retry."""


@dataclass(frozen=True, slots=True)
class Item:
    uid: str
    version: int
    updated_at: datetime
    deleted_at: datetime | None
    payload: dict[str, Any]


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


def utcnow() -> datetime:
    return datetime.now(UTC)


_ITEM_COLUMNS = (
    EntityRow.uid,
    EntityRow.version,
    EntityRow.updated_at,
    EntityRow.deleted_at,
    EntityRow.payload,
)


def _item(row: Any) -> Item:
    return Item(row.uid, row.version, row.updated_at, row.deleted_at, dict(row.payload))


def _owned(principal: Principal, entity: str) -> ColumnElement[bool]:
    return and_(
        EntityRow.tenant_id == principal.tenant_id,
        EntityRow.user_id == principal.user_id,
        EntityRow.entity == entity,
    )


def _epoch_of(tenant_id: Any, user_id: Any) -> Any:
    return (
        select(func.coalesce(func.max(UserEpoch.epoch), FIRST_EPOCH))
        .where(UserEpoch.tenant_id == tenant_id, UserEpoch.user_id == user_id)
        .scalar_subquery()
    )


class Store:
    """Rows, sessions and epochs on one async engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine, *, session_ttl: timedelta) -> None:
        self.engine = engine
        self.session_ttl = session_ttl
        self._write_lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction. SQLite allows one writer at a time and makes the others poll
        with growing sleeps, so this process queues its own writers instead; the busy
        timeout still covers writers in other processes."""
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock, self.engine.begin() as conn:
            yield conn

    @staticmethod
    async def _serialise_inserts(conn: AsyncConnection, principal: Principal) -> None:
        """PostgreSQL hands out ``seq`` values at insert but transactions may commit in
        another order, so a client paging by ``seq`` could pass a row that commits later
        with a lower number. Holding a per-user lock until commit makes each user's rows
        commit in ``seq`` order; lists are per user, so that is the order that matters.
        A hash collision only serialises two users' inserts. (SQLite has one writer at a
        time.)"""
        if conn.dialect.name == "postgresql":
            tenant, user = func.hashtext(principal.tenant_id), func.hashtext(principal.user_id)
            await conn.execute(select(func.pg_advisory_xact_lock(tenant, user)))

    async def ping(self) -> None:
        """Raises if the database cannot answer a trivial query."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def epoch(self, principal: Principal) -> int:
        async with self.engine.connect() as conn:
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
        async with self._writing() as conn:
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
        async with self.engine.connect() as conn:
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
        async with self._writing() as conn:
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
        async with self.engine.connect() as conn:
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
        async with self._writing() as conn:
            result = await conn.execute(statement)
        return int(result.rowcount)

    async def bump_epoch(self, principal: Principal) -> int:
        """Increments the caller's epoch, so every client must resynchronise; the new epoch."""
        async with self._writing() as conn:
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
        async with self._writing() as conn:
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
        async with self.engine.connect() as conn:
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

    async def list_items(
        self,
        principal: Principal,
        entity: str,
        *,
        after: int,
        limit: int,
        include_deleted: bool,
    ) -> tuple[Sequence[Item], int | None]:
        """One page in insertion order and, if more follow, the position to continue after."""
        statement = (
            select(EntityRow.seq, *_ITEM_COLUMNS)
            .where(_owned(principal, entity), EntityRow.seq > after)
            .order_by(EntityRow.seq)
            .limit(limit + 1)
        )
        if not include_deleted:
            statement = statement.where(EntityRow.deleted_at.is_(None))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        page = rows[:limit]
        more = len(rows) > limit
        return [_item(row) for row in page], (page[-1].seq if more else None)

    async def create_item(self, principal: Principal, entity: str, payload: dict[str, Any]) -> Item:
        now = utcnow()
        item = Item(str(uuid.uuid4()), 1, now, None, payload)
        async with self._writing() as conn:
            await self._serialise_inserts(conn, principal)
            await conn.execute(
                insert(EntityRow).values(
                    tenant_id=principal.tenant_id,
                    user_id=principal.user_id,
                    entity=entity,
                    uid=item.uid,
                    version=item.version,
                    payload=payload,
                    created_at=now,
                    updated_at=now,
                    deleted_at=None,
                )
            )
        return item

    async def get_item(self, principal: Principal, entity: str, uid: str) -> Item | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(*_ITEM_COLUMNS).where(_owned(principal, entity), EntityRow.uid == uid)
                )
            ).one_or_none()
        return None if row is None else _item(row)

    async def change_item(
        self,
        principal: Principal,
        entity: str,
        uid: str,
        change: Change | None,
        *,
        expected_version: int | None = None,
    ) -> Item:
        """Applies ``change`` to a live item, or soft-deletes it when ``change`` is None.

        Compare-and-set on the version read, so concurrent writers each bump it by exactly
        one: with ``expected_version`` (If-Match) a lost race is a :class:`VersionMismatch`,
        without it the change is recomputed on the newer payload.
        """
        for _ in range(_CAS_ATTEMPTS):
            current = await self.get_item(principal, entity, uid)
            if current is None:
                raise NotFound
            if current.deleted_at is not None:
                raise Gone
            if expected_version is not None and current.version != expected_version:
                raise VersionMismatch(expected_version, current.version)
            now = utcnow()
            values: dict[str, Any] = {"version": current.version + 1, "updated_at": now}
            if change is None:
                values["deleted_at"] = now
            else:
                values["payload"] = change(current.payload, now)
            async with self._writing() as conn:
                row = (
                    await conn.execute(
                        update(EntityRow)
                        .where(
                            _owned(principal, entity),
                            EntityRow.uid == uid,
                            EntityRow.version == current.version,
                            EntityRow.deleted_at.is_(None),
                        )
                        .values(**values)
                        .returning(*_ITEM_COLUMNS)
                    )
                ).one_or_none()
            if row is not None:
                return _item(row)
        raise Contended("the item is being changed by many writers at once; retry")


def _as_utc(value: datetime) -> datetime:
    """Aggregates bypass the column type on some drivers; normalise to aware UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
