"""Wipe metadata: when a user's data was last wiped, and by whom (``GET /v1/sync/state``).

Two nullable columns on ``user_epochs``: ``last_wipe_at`` (UTC) and ``last_wipe_by`` (the
wiping user's id). Existing rows have neither: no wipe was recorded before.

Revision ID: 0004
"""

import sqlalchemy as sa
from alembic import op

from toolbridge_api.db.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("user_epochs", sa.Column("last_wipe_at", UTCDateTime(), nullable=True))
    op.add_column("user_epochs", sa.Column("last_wipe_by", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("user_epochs") as batch:
        batch.drop_column("last_wipe_by")
        batch.drop_column("last_wipe_at")
