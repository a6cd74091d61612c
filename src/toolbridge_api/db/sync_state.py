"""Sync sessions, per-user epochs, wipe and the sync state: what a sync client sets up and
checks before it touches items. Like :mod:`toolbridge_api.db.store`, every statement is
scoped by the caller's (tenant_id, user_id), except the lookups of a session by its id, whose
owner the caller of those checks compares."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from toolbridge_api.db.models import EntityRow, IdempotencyRecord, SyncSession, UserEpoch
from toolbridge_api.db.store import Store, utcnow
from toolbridge_api.security import Principal
from toolbridge_common.contract import ENTITIES

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
class Wiped:
    """What a wipe did: the new epoch, and how many rows it deleted per entity (keyed by the
    contract's ``Entity.table``, as the original's response names them)."""

    epoch: int
    deleted: dict[str, int]


@dataclass(frozen=True, slots=True)
class EpochState:
    """A user's epoch and their last wipe, if any."""

    epoch: int
    last_wipe_at: datetime | None
    last_wipe_by: str | None


def _epoch_of(tenant_id: Any, user_id: Any) -> Any:
    return (
        select(func.coalesce(func.max(UserEpoch.epoch), FIRST_EPOCH))
        .where(UserEpoch.tenant_id == tenant_id, UserEpoch.user_id == user_id)
        .scalar_subquery()
    )


_CHECK_SESSION = select(
    SyncSession.tenant_id,
    SyncSession.user_id,
    SyncSession.expires_at,
    _epoch_of(SyncSession.tenant_id, SyncSession.user_id),
).where(SyncSession.id == bindparam("session_id"))
"""Built once: building it took more CPU than running it, on every entity request."""


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

    async def find_session(self, session_id: str) -> Session | None:
        """The live session with this id, whoever owns it (the caller compares the owner)."""
        async with self.store.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(SyncSession).where(
                        SyncSession.id == session_id, SyncSession.expires_at > utcnow()
                    )
                )
            ).one_or_none()
        if row is None:
            return None
        return Session(
            row.id, row.tenant_id, row.user_id, row.created_at, row.expires_at, row.epoch
        )

    async def delete_session(self, principal: Principal, session_id: str) -> bool:
        """Ends one of the caller's sessions; False if they have no such session."""
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
        async with self.store.reader.connect() as conn:
            row = (await conn.execute(_CHECK_SESSION, {"session_id": session_id})).one_or_none()
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

    async def _bump_epoch(self, conn: AsyncConnection, principal: Principal, **also: Any) -> int:
        """The new epoch (an absent row counts as epoch 1, so it becomes 2); ``also`` sets
        more columns of the row in the same statement."""
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        statement = (
            dialect.insert(UserEpoch)
            .values(
                tenant_id=principal.tenant_id,
                user_id=principal.user_id,
                epoch=FIRST_EPOCH + 1,
                **also,
            )
            .on_conflict_do_update(
                index_elements=[UserEpoch.tenant_id, UserEpoch.user_id],
                set_={"epoch": UserEpoch.epoch + 1, **also},
            )
            .returning(UserEpoch.epoch)
        )
        return int((await conn.execute(statement)).scalar_one())

    async def wipe(self, principal: Principal) -> Wiped:
        """In one transaction: bumps the caller's epoch and records the wipe, deletes all
        their items and remembered idempotency keys for good and ends all their sessions (the
        caller's too)."""
        owned = (EntityRow.tenant_id == principal.tenant_id) & (
            EntityRow.user_id == principal.user_id
        )
        deleted: dict[str, int] = {}
        async with self.store.writing() as conn:
            # After any push of this user in flight, so none lands after the wipe.
            await self.store.serialise_user(conn, principal)
            epoch = await self._bump_epoch(
                conn, principal, last_wipe_at=utcnow(), last_wipe_by=principal.user_id
            )
            for entity in ENTITIES:
                result = await conn.execute(
                    delete(EntityRow).where(owned, EntityRow.entity == entity.name)
                )
                deleted[entity.table] = int(result.rowcount)
            await conn.execute(delete(EntityRow).where(owned))  # any entity no longer served
            # A remembered write would otherwise answer a retry with an item that is gone.
            await conn.execute(
                delete(IdempotencyRecord).where(
                    IdempotencyRecord.tenant_id == principal.tenant_id,
                    IdempotencyRecord.user_id == principal.user_id,
                )
            )
            await conn.execute(
                delete(SyncSession).where(
                    SyncSession.tenant_id == principal.tenant_id,
                    SyncSession.user_id == principal.user_id,
                )
            )
        return Wiped(epoch, dict(sorted(deleted.items())))

    async def state(self, principal: Principal) -> EpochState:
        """The caller's epoch and last wipe (epoch 1 and none if they never wiped)."""
        async with self.store.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(UserEpoch.epoch, UserEpoch.last_wipe_at, UserEpoch.last_wipe_by).where(
                        UserEpoch.tenant_id == principal.tenant_id,
                        UserEpoch.user_id == principal.user_id,
                    )
                )
            ).one_or_none()
        if row is None:
            return EpochState(FIRST_EPOCH, None, None)
        return EpochState(int(row[0]), row[1], row[2])
