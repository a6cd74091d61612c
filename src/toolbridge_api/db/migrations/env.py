"""Alembic environment: always run programmatically on a connection the API hands over
(see :mod:`toolbridge_api.db.schema`), never from an ini file."""

from alembic import context

from toolbridge_api.db.models import Base

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=Base.metadata,
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
