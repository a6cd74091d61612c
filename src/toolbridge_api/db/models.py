"""The database schema: entity rows (every entity in one table), sync sessions and
per-user epochs. Every row is keyed by (tenant_id, user_id) first."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Index, Integer, MetaData, String
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC without a zone (portable across SQLite and PostgreSQL), returns aware UTC."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


_SEQ = BigInteger().with_variant(Integer(), "sqlite")

UID_TYPE = String(36).with_variant(String(36, collation="C"), "postgresql")
"""Lowercase canonical UUIDs, compared byte by byte on every database (PostgreSQL would
otherwise use the database's collation), so (updated time, uid) order is the original's."""


class EntityRow(Base):
    """One item of any entity. Sync order is (``updated_at_ms``, ``uid``), as the original:
    a cursor names a position in it. ``updated_at``/``deleted_at`` hold the same times as
    datetimes (for the sync state); ``seq`` is only the primary key."""

    __tablename__ = "entity_rows"
    __table_args__ = (
        Index(None, "tenant_id", "user_id", "entity", "uid", unique=True),
        Index(None, "tenant_id", "user_id", "entity", "updated_at_ms", "uid"),
    )

    seq: Mapped[int] = mapped_column(_SEQ, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(255))
    entity: Mapped[str] = mapped_column(String(32))
    uid: Mapped[str] = mapped_column(UID_TYPE)
    version: Mapped[int] = mapped_column(Integer)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)
    """Milliseconds since the epoch: the REST write's server time, or the pushed updatedTs."""
    deleted_at_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """Set for a tombstone; NULL for a live item."""


class SyncSession(Base):
    """A sync session; in the database so every API process behind a balancer sees it."""

    __tablename__ = "sync_sessions"
    __table_args__ = (Index(None, "tenant_id", "user_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    epoch: Mapped[int] = mapped_column(Integer)


class UserEpoch(Base):
    """A user's sync epoch; absent means epoch 1. ``wipe`` increments it and records when
    and by whom (the user's id) it last ran."""

    __tablename__ = "user_epochs"

    tenant_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer)
    last_wipe_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_wipe_by: Mapped[str | None] = mapped_column(String(255), nullable=True)


class IdempotencyRecord(Base):
    """The outcome of a write sent with an ``Idempotency-Key``: a retry with the same key
    (same tenant and user) gets this result instead of writing again. ``fingerprint`` is a
    hash of the request (method, path, If-Match, body), so a key reused for another request
    is recognised; ``response`` is the item as answered. Written in the write's own
    transaction, so a key is remembered exactly when its write was applied."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index(None, "expires_at"),)

    tenant_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
