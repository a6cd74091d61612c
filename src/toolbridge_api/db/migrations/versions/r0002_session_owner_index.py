"""Index sync sessions by owner, for listing and purging a user's sessions.

Revision ID: 0002
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_sync_sessions_tenant_id_user_id", "sync_sessions", ["tenant_id", "user_id"])


def downgrade() -> None:
    op.drop_index("ix_sync_sessions_tenant_id_user_id", "sync_sessions")
