"""Alembic's environment: run the revisions on the connection `migrate` hands over,
each revision in its own transaction (so an interrupted migration leaves the
database at the last revision that completed, and the next run finishes it)."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    transactional_ddl=True,
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
