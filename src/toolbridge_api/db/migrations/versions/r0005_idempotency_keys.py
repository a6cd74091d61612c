"""Idempotency keys: the remembered outcome of writes sent with an ``Idempotency-Key`` header.

One table, ``idempotency_keys``, keyed by (tenant_id, user_id, idempotency_key), holding the
request's fingerprint, the answered status and item, and when the key expires (indexed, so
expired keys are purged cheaply). Existing data is untouched.

Revision ID: 0005
"""

import sqlalchemy as sa
from alembic import op

from toolbridge_api.db.models import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("tenant_id", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "user_id", "idempotency_key", name="pk_idempotency_keys"
        ),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_expires_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
