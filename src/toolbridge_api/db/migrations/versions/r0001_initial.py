"""Initial schema: entity rows, sync sessions, per-user epochs.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

from toolbridge_api.db.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "entity_rows",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("tenant_id", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("entity", sa.String(32), nullable=False),
        sa.Column("uid", sa.String(36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("deleted_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_entity_rows"),
    )
    op.create_index(
        "ix_entity_rows_tenant_id_user_id_entity_uid",
        "entity_rows",
        ["tenant_id", "user_id", "entity", "uid"],
        unique=True,
    )
    op.create_index(
        "ix_entity_rows_tenant_id_user_id_entity_seq",
        "entity_rows",
        ["tenant_id", "user_id", "entity", "seq"],
    )
    op.create_table(
        "sync_sessions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sync_sessions"),
    )
    op.create_table(
        "user_epochs",
        sa.Column("tenant_id", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "user_id", name="pk_user_epochs"),
    )


def downgrade() -> None:
    op.drop_table("user_epochs")
    op.drop_table("sync_sessions")
    op.drop_index("ix_entity_rows_tenant_id_user_id_entity_seq", "entity_rows")
    op.drop_index("ix_entity_rows_tenant_id_user_id_entity_uid", "entity_rows")
    op.drop_table("entity_rows")
