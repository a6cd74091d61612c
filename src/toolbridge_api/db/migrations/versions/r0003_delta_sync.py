"""Delta sync: (updated time, uid) order in milliseconds, and rows in the original's values.

- ``updated_at_ms`` (NOT NULL) and ``deleted_at_ms`` are filled from ``updated_at`` and
  ``deleted_at``; an index on (tenant, user, entity, updated_at_ms, uid) serves list and pull
  order, and the one on ``seq`` (the old list order) goes.
- PostgreSQL: ``uid`` compares byte by byte (collation "C"), as uuids order in the original.
- Payloads written with this API's former values get the original's (what its apps read):
  tasks ``status`` done -> completed, todo -> open; notes, tasks and comments ``archived:
  true`` -> ``status: "archived"`` (the ``archived`` flag goes for those three); chats
  ``status`` open -> active; chat messages with ``readAt``/``deliveredAt`` get ``read: true``/
  ``delivered: true``. Every other key stays, ``completedAt``/``resolvedAt``/``readAt``
  included. Each payload is stamped like a REST write: ``uid``, ``updatedTs`` and ``sync``
  (version, isDeleted, deletedAt). Versions do not change: this is no mutation.

Downgrade removes the columns and the index again; payloads keep their new values.

Revision ID: 0003
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from alembic import op

from toolbridge_api.db.models import UTCDateTime
from toolbridge_common.contract import stamp_payload

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_BATCH = 500
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ORDER_INDEX = "ix_entity_rows_tenant_id_user_id_entity_updated_at_ms_uid"
_SEQ_INDEX = "ix_entity_rows_tenant_id_user_id_entity_seq"

_rows = sa.table(
    "entity_rows",
    sa.column("seq", sa.BigInteger()),
    sa.column("entity", sa.String()),
    sa.column("uid", sa.String()),
    sa.column("version", sa.Integer()),
    sa.column("payload", sa.JSON()),
    sa.column("updated_at", UTCDateTime()),
    sa.column("deleted_at", UTCDateTime()),
    sa.column("updated_at_ms", sa.BigInteger()),
    sa.column("deleted_at_ms", sa.BigInteger()),
)

_TASK_STATUS = {"done": "completed", "todo": "open"}
_ARCHIVED_BY_STATUS = ("notes", "tasks", "comments")


def _ms(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(milliseconds=1)


def convert(entity: str, payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with this API's former values replaced by the original's."""
    result = dict(payload)
    if entity == "tasks" and result.get("status") in _TASK_STATUS:
        result["status"] = _TASK_STATUS[result["status"]]
    if entity == "chats" and result.get("status") == "open":
        result["status"] = "active"
    archived = result.get("archived")
    if entity in _ARCHIVED_BY_STATUS and isinstance(archived, bool):
        del result["archived"]
        if archived:
            result["status"] = "archived"
    if entity == "chat_messages":
        if result.get("readAt") is not None:
            result["read"] = True
        if result.get("deliveredAt") is not None:
            result["delivered"] = True
    return result


def _payload_uid(payload: dict[str, Any], uid: str) -> str:
    """The payload's own ``uid`` when it names the row (kept as written), else the row's."""
    own = payload.get("uid")
    if isinstance(own, str):
        try:
            if str(uuid.UUID(own)) == uid:
                return own
        except ValueError:
            pass
    return uid


def _backfill(connection: sa.Connection) -> None:
    last = -1
    while True:
        batch = connection.execute(
            sa.select(
                _rows.c.seq,
                _rows.c.entity,
                _rows.c.uid,
                _rows.c.version,
                _rows.c.payload,
                _rows.c.updated_at,
                _rows.c.deleted_at,
            )
            .where(_rows.c.seq > last)
            .order_by(_rows.c.seq)
            .limit(_BATCH)
        ).all()
        if not batch:
            return
        changes = []
        for row in batch:
            updated_ms = _ms(row.updated_at)
            deleted_ms = None if row.deleted_at is None else _ms(row.deleted_at)
            payload = row.payload
            if isinstance(payload, dict):
                payload = stamp_payload(
                    convert(row.entity, payload),
                    uid=_payload_uid(payload, row.uid),
                    updated_ms=updated_ms,
                    version=row.version,
                    deleted_ms=deleted_ms,
                )
            changes.append(
                {
                    "b_seq": row.seq,
                    "b_updated": updated_ms,
                    "b_deleted": deleted_ms,
                    "b_payload": payload,
                }
            )
        connection.execute(
            sa.update(_rows)
            .where(_rows.c.seq == sa.bindparam("b_seq"))
            .values(
                updated_at_ms=sa.bindparam("b_updated"),
                deleted_at_ms=sa.bindparam("b_deleted"),
                payload=sa.bindparam("b_payload", type_=sa.JSON()),
            ),
            changes,
        )
        last = batch[-1].seq


def upgrade() -> None:
    op.add_column("entity_rows", sa.Column("updated_at_ms", sa.BigInteger(), nullable=True))
    op.add_column("entity_rows", sa.Column("deleted_at_ms", sa.BigInteger(), nullable=True))
    _backfill(op.get_bind())
    with op.batch_alter_table("entity_rows") as batch:
        batch.alter_column("updated_at_ms", existing_type=sa.BigInteger(), nullable=False)
        batch.drop_index(_SEQ_INDEX)
        batch.create_index(_ORDER_INDEX, ["tenant_id", "user_id", "entity", "updated_at_ms", "uid"])
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "entity_rows",
            "uid",
            type_=sa.String(36, collation="C"),
            existing_type=sa.String(36),
            existing_nullable=False,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "entity_rows",
            "uid",
            type_=sa.String(36),
            existing_type=sa.String(36, collation="C"),
            existing_nullable=False,
        )
    with op.batch_alter_table("entity_rows") as batch:
        batch.drop_index(_ORDER_INDEX)
        batch.create_index(_SEQ_INDEX, ["tenant_id", "user_id", "entity", "seq"])
        batch.drop_column("deleted_at_ms")
        batch.drop_column("updated_at_ms")
