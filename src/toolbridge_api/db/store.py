"""The only code that reads and writes rows. Every statement is scoped by the caller's
(tenant_id, user_id), so no route can reach another tenant's or user's data."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from toolbridge_api.db.models import EntityRow
from toolbridge_api.security import Principal

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


class Store:
    """Rows on one async engine (SQLite or PostgreSQL); sessions and epochs are in
    :mod:`toolbridge_api.db.sync_state`, on the same engine and writer queue."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._write_lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None

    def writing(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """A write transaction in this store's writer queue, for other modules on the engine."""
        return self._writing()

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
