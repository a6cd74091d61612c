"""The only code that reads and writes rows. Every statement is scoped by the caller's
(tenant_id, user_id), so no route can reach another tenant's or user's data.

Items are kept as the original API keeps them: ordered by (updated milliseconds, uid), a
version that grows by exactly one per change, a tombstone time for soft-deleted items. REST
writes and delta-sync pushes go through the same rows; every write of one user holds that
user's write lock until it commits, so versions stay exact and a user's server-timed writes
commit in time order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from loguru import logger
from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from toolbridge_api.db.models import EntityRow, IdempotencyRecord
from toolbridge_api.db.schema import DEFAULT_TIMEOUT_SECONDS
from toolbridge_api.entities import (
    MAX_PAYLOAD_DEPTH,
    Entity,
    Incoming,
    InvalidItem,
    Parent,
    canonical_uid,
    json_depth,
    parent_of,
)
from toolbridge_api.security import Principal
from toolbridge_common.contract import format_ms, stamp_payload

Change = Callable[[dict[str, Any]], dict[str, Any] | None]
"""An item's new payload (before the server stamps it) from its current one, or None when
nothing changes. It runs inside the write transaction, after the item was found live, and
may raise to refuse the write (nothing is written then)."""

TASK_LIST_KEY = "taskListUid"
"""The key of a task's payload that names its task list (cleared when the list is deleted)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class StoreError(Exception):
    """A request the data cannot satisfy; mapped to an HTTP status in one place."""


class NotFound(StoreError):
    """No such item for this caller (also what other users' items look like)."""


class Gone(StoreError):
    """The item was soft-deleted (at ``deleted_ms``)."""

    def __init__(self, deleted_ms: int = 0) -> None:
        super().__init__("the item was deleted")
        self.deleted_ms = deleted_ms


class VersionMismatch(StoreError):
    """``If-Match`` named a version other than the current one."""

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(f"version mismatch: If-Match is {expected}, current version is {current}")
        self.expected = expected
        self.current = current


class Refused(StoreError):
    """The item cannot be stored as sent (its parent reference is malformed, or it would be
    nested too deep)."""


class ParentMissing(Refused):
    """The parent the item names is not a live item of the caller's."""

    def __init__(self, parent: Parent) -> None:
        super().__init__(
            f"parent {parent.label} not found: {parent.uid} (it must be a live"
            f" {parent.label} of yours)"
        )
        self.parent = parent


class KeyReused(StoreError):
    """An ``Idempotency-Key`` already used (and remembered) for a different request."""

    def __init__(self, key: str) -> None:
        super().__init__(f"Idempotency-Key {key} was already used for a different request")
        self.key = key


class DatabaseBusy(Exception):
    """A write did not get its turn (SQLite's write lock, a writer queue) within the database
    timeout; nothing was written."""

    def __init__(self, waited: float) -> None:
        super().__init__(f"the write waited {waited:.1f} s for its turn and was not applied")
        self.waited = waited


class CommitUncertain(Exception):
    """The database failed while committing: the write may or may not have been applied."""


@dataclass(frozen=True, slots=True)
class Once:
    """An ``Idempotency-Key`` sent with a write: ``fingerprint`` identifies the request (a
    retry must send the same one), ``status`` is what the route answers on success."""

    key: str
    fingerprint: str
    status: int
    ttl: timedelta


@dataclass(frozen=True, slots=True)
class Item:
    uid: str
    version: int
    updated_ms: int
    deleted_ms: int | None
    payload: dict[str, Any]

    @property
    def deleted(self) -> bool:
        return self.deleted_ms is not None


@dataclass(frozen=True, slots=True)
class Written:
    """A REST write's outcome: the item as stored, and whether it is the remembered result of
    an earlier request with the same ``Idempotency-Key`` (nothing was written this time)."""

    item: Item
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class PushResult:
    """One push item's outcome: the row as stored (also for a stale push, which changes
    nothing), or ``error`` and what is known of the item."""

    uid: str
    version: int
    updated_ms: int | None
    error: str | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ms_datetime(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


_ITEM_COLUMNS = (
    EntityRow.uid,
    EntityRow.version,
    EntityRow.updated_at_ms,
    EntityRow.deleted_at_ms,
    EntityRow.payload,
)


# The hot reads as statements built once, their values bound per call: building a select
# and generating its cache key cost more CPU than executing it (~300 µs per query).
_CURRENT = select(*_ITEM_COLUMNS).where(
    EntityRow.tenant_id == bindparam("tenant_id"),
    EntityRow.user_id == bindparam("user_id"),
    EntityRow.entity == bindparam("entity"),
    EntityRow.uid == bindparam("uid"),
)


@functools.cache
def _page(*, after: bool, include_deleted: bool) -> Select[Any]:
    """The list query (``:limit`` items; after ``(:after_ms, :after_uid)`` if ``after``)."""
    statement = (
        select(*_ITEM_COLUMNS)
        .where(
            EntityRow.tenant_id == bindparam("tenant_id"),
            EntityRow.user_id == bindparam("user_id"),
            EntityRow.entity == bindparam("entity"),
        )
        .order_by(EntityRow.updated_at_ms, EntityRow.uid)
        .limit(bindparam("limit", type_=Integer()))
    )
    if after:
        position = tuple_(EntityRow.updated_at_ms, EntityRow.uid)
        statement = statement.where(
            position
            > tuple_(
                bindparam("after_ms", type_=EntityRow.updated_at_ms.type),
                bindparam("after_uid", type_=String()),
            )
        )
    if not include_deleted:
        statement = statement.where(EntityRow.deleted_at_ms.is_(None))
    return statement


def _item(row: Any) -> Item:
    return Item(row.uid, row.version, row.updated_at_ms, row.deleted_at_ms, dict(row.payload))


def _item_record(item: Item) -> dict[str, Any]:
    return {
        "uid": item.uid,
        "version": item.version,
        "updated_ms": item.updated_ms,
        "deleted_ms": item.deleted_ms,
        "payload": item.payload,
    }


def _record_item(record: dict[str, Any]) -> Item:
    return Item(
        record["uid"],
        record["version"],
        record["updated_ms"],
        record["deleted_ms"],
        dict(record["payload"]),
    )


def _owned(principal: Principal, entity: str) -> ColumnElement[bool]:
    return and_(
        EntityRow.tenant_id == principal.tenant_id,
        EntityRow.user_id == principal.user_id,
        EntityRow.entity == entity,
    )


def _payload_uid(payload: dict[str, Any], uid: str) -> str:
    """The uid a stamped payload carries: the client's own spelling when it names this item
    (kept verbatim, as the original does), else the canonical one."""
    own = payload.get("uid")
    return own if isinstance(own, str) and canonical_uid(own) == uid else uid


class Store:
    """Rows on one async engine (SQLite or PostgreSQL); sessions and epochs are in
    :mod:`toolbridge_api.db.sync_state`, on the same engine and writer queue."""

    def __init__(
        self, engine: AsyncEngine, *, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    ) -> None:
        self.engine = engine
        self._reader: tuple[AsyncEngine, AsyncEngine] | None = None
        self.timeout_seconds = timeout_seconds
        self._write_lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None

    @property
    def reader(self) -> AsyncEngine:
        """:attr:`engine` for one-statement reads: a single SELECT is consistent on its own, so
        on PostgreSQL it runs without the BEGIN and ROLLBACK round trips around it (SQLite's
        driver opens no transaction for a read anyway). Same pool, same connections."""
        engine = self.engine
        if engine.dialect.name != "postgresql":
            return engine
        if self._reader is None or self._reader[0] is not engine:
            self._reader = (engine, engine.execution_options(isolation_level="AUTOCOMMIT"))
        return self._reader[1]

    def writing(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """A write transaction in this store's writer queue, for other modules on the engine."""
        return self._writing()

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction that waits at most ``timeout_seconds`` for its turn, then
        raises :class:`DatabaseBusy` (or the driver's lock timeout), having written nothing.

        SQLite allows one writer at a time and makes the others poll with growing sleeps, so
        this process queues its own writers instead; the busy timeout (the rest of the
        deadline) covers writers in other processes. ``BEGIN IMMEDIATE`` takes SQLite's
        write lock before the first read, so what a transaction reads stays true until it
        commits, also against writers in other processes. On PostgreSQL the transaction's
        ``lock_timeout`` is the rest of the deadline (the per-user lock, row locks).

        A failure while committing is :class:`CommitUncertain`: the write may have been
        applied, so the caller must not be told it was not."""
        deadline = time.monotonic() + self.timeout_seconds
        if self._write_lock is None:
            async with self._transaction() as conn:
                remaining = self._remaining_ms(deadline)
                await conn.exec_driver_sql(f"SET LOCAL lock_timeout = {remaining}")
                yield conn
            return
        try:
            async with asyncio.timeout(self.timeout_seconds):
                await self._write_lock.acquire()
        except TimeoutError:
            raise DatabaseBusy(self.timeout_seconds) from None
        try:
            async with self._transaction(begin="BEGIN IMMEDIATE", deadline=deadline) as conn:
                yield conn
        finally:
            self._write_lock.release()

    def _remaining_ms(self, deadline: float) -> int:
        """Milliseconds left before ``deadline``; :class:`DatabaseBusy` when none are."""
        remaining = round((deadline - time.monotonic()) * 1000)
        if remaining < 1:
            raise DatabaseBusy(self.timeout_seconds)
        return remaining

    @contextlib.asynccontextmanager
    async def _transaction(
        self, *, begin: str | None = None, deadline: float | None = None
    ) -> AsyncIterator[AsyncConnection]:
        """A transaction that is rolled back on any error and whose commit failing is
        :class:`CommitUncertain`. SQLite: ``begin`` starts it after setting the busy
        timeout to what is left before ``deadline``."""
        async with self.engine.connect() as conn:
            transaction = await conn.begin()
            try:
                if begin is not None:
                    assert deadline is not None
                    remaining = self._remaining_ms(deadline)
                    await conn.exec_driver_sql(f"PRAGMA busy_timeout = {remaining}")
                    await conn.exec_driver_sql(begin)
                yield conn
            except BaseException:
                try:
                    await transaction.rollback()
                except Exception as rollback_error:  # the connection is gone: nothing committed
                    logger.debug("rollback failed ({})", type(rollback_error).__name__)
                raise
            try:
                await transaction.commit()
            except (DBAPIError, OSError) as exc:
                raise CommitUncertain(type(exc).__name__) from exc

    @contextlib.asynccontextmanager
    async def _user_writing(self, principal: Principal) -> AsyncIterator[AsyncConnection]:
        """A write transaction holding the caller's write lock (see :meth:`serialise_user`)."""
        async with self._writing() as conn:
            await self.serialise_user(conn, principal)
            yield conn

    @staticmethod
    async def serialise_user(conn: AsyncConnection, principal: Principal) -> None:
        """Holds a per-user lock until ``conn``'s transaction ends (PostgreSQL; SQLite has one
        writer at a time anyway). Item writes take it first, so one user's writes run one
        after another: each reads what the previous one committed (versions grow by exactly
        one, a parent checked is still there at commit), and server-timed writes commit in
        the order of their times, so a client paging by (time, uid) never passes a row that
        commits later with an earlier time. A hash collision only serialises two users."""
        if conn.dialect.name == "postgresql":
            tenant, user = func.hashtext(principal.tenant_id), func.hashtext(principal.user_id)
            await conn.execute(select(func.pg_advisory_xact_lock(tenant, user)))

    async def ping(self) -> None:
        """Raises if the database cannot answer a trivial query."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    # --- reading --------------------------------------------------------------------------

    async def list_items(
        self,
        principal: Principal,
        entity: str,
        *,
        after: tuple[int, str] | None,
        limit: int,
        include_deleted: bool,
    ) -> Sequence[Item]:
        """Up to ``limit`` items in (updated time, uid) order, after the position ``after``
        (a decoded cursor) if given; tombstones only with ``include_deleted``."""
        statement = _page(after=after is not None, include_deleted=include_deleted)
        values: dict[str, Any] = {
            "tenant_id": principal.tenant_id,
            "user_id": principal.user_id,
            "entity": entity,
            "limit": limit,
        }
        if after is not None:
            values |= {"after_ms": after[0], "after_uid": after[1]}
        async with self.reader.connect() as conn:
            rows = (await conn.execute(statement, values)).all()
        return [_item(row) for row in rows]

    async def get_item(self, principal: Principal, entity: str, uid: str) -> Item | None:
        async with self.reader.connect() as conn:
            return await self._current(conn, principal, entity, uid)

    @staticmethod
    async def _current(
        conn: AsyncConnection, principal: Principal, entity: str, uid: str
    ) -> Item | None:
        values = {
            "tenant_id": principal.tenant_id,
            "user_id": principal.user_id,
            "entity": entity,
            "uid": uid,
        }
        row = (await conn.execute(_CURRENT, values)).one_or_none()
        return None if row is None else _item(row)

    # --- REST writes ----------------------------------------------------------------------

    async def write_item(
        self,
        principal: Principal,
        kind: Entity,
        uid: str,
        change: Change | None,
        *,
        create: bool = False,
        expected_version: int | None = None,
        once: Once | None = None,
    ) -> Written:
        """A REST write, as the original's mutation engine does it, in one transaction.

        ``change`` computes the new payload from the current one (``{}`` when creating);
        None soft-deletes the item. Without ``create`` the item must exist (else
        :class:`NotFound`) and be live (else :class:`Gone`); with it, an existing item of
        that uid is updated and a tombstone comes back to life. ``expected_version`` is
        If-Match (:class:`VersionMismatch`). The item's time is now, or one millisecond
        after its previous time if the clock has not passed that; its version grows by one;
        the payload is stamped with ``uid``, ``updatedTs`` and ``sync``. A comment's or a
        message's parent must be a live item of this user (:class:`ParentMissing`); the
        stored payload may be nested at most ``MAX_PAYLOAD_DEPTH`` deep (:class:`Refused`).

        With ``once`` (an ``Idempotency-Key``), a key this user already used returns the
        remembered item without writing (:class:`KeyReused` if it was used for another
        request); otherwise the outcome is remembered in the same transaction, so the key
        is remembered exactly when the write is applied.
        """
        async with self._user_writing(principal) as conn:
            if once is not None:
                remembered = await self._remembered(conn, principal, once)
                if remembered is not None:
                    return Written(remembered, replayed=True)
            item = await self._write(conn, principal, kind, uid, change, create, expected_version)
            if once is not None:
                await self._remember(conn, principal, once, item)
        return Written(item)

    async def _write(
        self,
        conn: AsyncConnection,
        principal: Principal,
        kind: Entity,
        uid: str,
        change: Change | None,
        create: bool,
        expected_version: int | None,
    ) -> Item:
        current = await self._current(conn, principal, kind.name, uid)
        if not create:
            if current is None:
                raise NotFound(f"{kind.label} not found: {uid}")
            if current.deleted_ms is not None:
                raise Gone(current.deleted_ms)
        old = {} if current is None else current.payload
        payload = old if change is None else change(old)
        if current is not None and expected_version not in (None, current.version):
            assert expected_version is not None
            raise VersionMismatch(expected_version, current.version)
        if payload is None:
            assert current is not None
            return current
        if change is not None:
            await self._check_parent(conn, principal, kind, payload)
        now = now_ms()
        updated_ms = now if current is None else max(now, current.updated_ms + 1)
        version = 1 if current is None else current.version + 1
        deleted_ms = updated_ms if change is None else None
        stamped = stamp_payload(
            payload,
            uid=_payload_uid(payload, uid),
            updated_ms=updated_ms,
            version=version,
            deleted_ms=deleted_ms,
        )
        if json_depth(stamped) > MAX_PAYLOAD_DEPTH:
            raise Refused(
                f"the {kind.label} would be nested more than {MAX_PAYLOAD_DEPTH} levels deep"
                " as stored (the payload object is level 1)"
            )
        item = Item(uid, version, updated_ms, deleted_ms, stamped)
        await self._store(conn, principal, kind.name, item, exists=current is not None)
        if change is None and kind.name == "task_lists":
            await self._orphan_tasks(conn, principal, uid)
        return item

    async def _remembered(
        self, conn: AsyncConnection, principal: Principal, once: Once
    ) -> Item | None:
        """The item remembered for this key, after purging the caller's expired keys."""
        mine = (IdempotencyRecord.tenant_id == principal.tenant_id) & (
            IdempotencyRecord.user_id == principal.user_id
        )
        await conn.execute(
            delete(IdempotencyRecord).where(mine, IdempotencyRecord.expires_at <= utcnow())
        )
        row = (
            await conn.execute(
                select(IdempotencyRecord.fingerprint, IdempotencyRecord.response).where(
                    mine, IdempotencyRecord.idempotency_key == once.key
                )
            )
        ).one_or_none()
        if row is None:
            return None
        if row.fingerprint != once.fingerprint:
            raise KeyReused(once.key)
        return _record_item(row.response)

    @staticmethod
    async def _remember(
        conn: AsyncConnection, principal: Principal, once: Once, item: Item
    ) -> None:
        now = utcnow()
        await conn.execute(
            insert(IdempotencyRecord).values(
                tenant_id=principal.tenant_id,
                user_id=principal.user_id,
                idempotency_key=once.key,
                fingerprint=once.fingerprint,
                status=once.status,
                response=_item_record(item),
                created_at=now,
                expires_at=now + once.ttl,
            )
        )

    async def purge_idempotency_keys(self) -> int:
        """Forgets every expired idempotency key (each user's are also purged as they write)."""
        async with self._writing() as conn:
            result = await conn.execute(
                delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= utcnow())
            )
        return int(result.rowcount)

    async def _check_parent(
        self, conn: AsyncConnection, principal: Principal, kind: Entity, payload: dict[str, Any]
    ) -> None:
        try:
            parent = parent_of(kind, payload)
        except InvalidItem as invalid:
            ref = kind.parent
            assert ref is not None
            keys = ref.key if ref.type_key is None else f"{ref.type_key} and {ref.key}"
            raise Refused(f"{invalid}: a {kind.label} needs {keys} naming a live item") from None
        if parent is not None and not await self._live(conn, principal, parent):
            raise ParentMissing(parent)

    async def _live(self, conn: AsyncConnection, principal: Principal, parent: Parent) -> bool:
        row = await conn.execute(
            select(EntityRow.seq).where(
                _owned(principal, parent.entity),
                EntityRow.uid == parent.uid,
                EntityRow.deleted_at_ms.is_(None),
            )
        )
        return row.first() is not None

    async def _store(
        self, conn: AsyncConnection, principal: Principal, entity: str, item: Item, *, exists: bool
    ) -> None:
        values: dict[str, Any] = {
            "version": item.version,
            "payload": item.payload,
            "updated_at": ms_datetime(item.updated_ms),
            "updated_at_ms": item.updated_ms,
            "deleted_at": None if item.deleted_ms is None else ms_datetime(item.deleted_ms),
            "deleted_at_ms": item.deleted_ms,
        }
        if exists:
            await conn.execute(
                update(EntityRow)
                .where(_owned(principal, entity), EntityRow.uid == item.uid)
                .values(**values)
            )
            return
        await conn.execute(
            insert(EntityRow).values(
                tenant_id=principal.tenant_id,
                user_id=principal.user_id,
                entity=entity,
                uid=item.uid,
                created_at=utcnow(),
                **values,
            )
        )

    async def _orphan_tasks(self, conn: AsyncConnection, principal: Principal, uid: str) -> None:
        """A deleted task list's live tasks lose their ``taskListUid``, each as a change of
        its own (version + 1, a new time), as the original does."""
        rows = (
            await conn.execute(
                select(*_ITEM_COLUMNS).where(
                    _owned(principal, "tasks"),
                    EntityRow.deleted_at_ms.is_(None),
                    EntityRow.payload[TASK_LIST_KEY].as_string() == uid,
                )
            )
        ).all()
        for task in map(_item, rows):
            updated_ms = max(now_ms(), task.updated_ms + 1)
            version = task.version + 1
            payload = {k: v for k, v in task.payload.items() if k != TASK_LIST_KEY}
            stamped = stamp_payload(
                payload,
                uid=_payload_uid(payload, task.uid),
                updated_ms=updated_ms,
                version=version,
                deleted_ms=None,
            )
            when = stamped["updatedTs"]
            stamped["updatedAt"] = stamped["updateTime"] = stamped["sync"]["updatedAt"] = when
            item = Item(task.uid, version, updated_ms, None, stamped)
            await self._store(conn, principal, "tasks", item, exists=True)

    # --- delta sync -----------------------------------------------------------------------

    async def push(
        self, principal: Principal, kind: Entity, items: Sequence[Incoming | str]
    ) -> list[PushResult]:
        """Applies pushed items in order, in one transaction, last writer wins: an item is
        stored only if its time is strictly newer than the stored one's (a new item gets
        version max(its sync.version, 1), a newer one the stored version + 1); an older or
        equal one changes nothing. Payloads are stored exactly as sent. A string in
        ``items`` is an item that could not be read (its result carries that error)."""
        results: list[PushResult] = []
        async with self._user_writing(principal) as conn:
            for item in items:
                if isinstance(item, str):
                    results.append(PushResult("", 0, None, item))
                else:
                    results.append(await self._push_one(conn, principal, kind, item))
        return results

    async def _push_one(
        self, conn: AsyncConnection, principal: Principal, kind: Entity, item: Incoming
    ) -> PushResult:
        if item.problem is not None:
            return PushResult(item.uid, item.version, item.updated_ms, item.problem)
        parent = item.parent if item.deleted_ms is None else None
        if parent is not None and not await self._live(conn, principal, parent):
            error = f"parent {parent.label} not found: {parent.uid}"
            return PushResult(item.uid, item.version, item.updated_ms, error)
        current = await self._current(conn, principal, kind.name, item.uid)
        if current is not None and item.updated_ms <= current.updated_ms:
            return PushResult(current.uid, current.version, current.updated_ms)
        version = max(item.version, 1) if current is None else current.version + 1
        stored = Item(item.uid, version, item.updated_ms, item.deleted_ms, item.payload)
        await self._store(conn, principal, kind.name, stored, exists=current is not None)
        return PushResult(stored.uid, stored.version, stored.updated_ms)


def format_item_time(ms: int | None) -> str:
    """An item time as the original writes it (``""`` when there is none)."""
    return "" if ms is None else format_ms(ms)
