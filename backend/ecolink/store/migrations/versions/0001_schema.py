"""Revision 0001: the initial schema: accounts, keys, console sessions, clusters, segments, the ledger, events, idempotency records, kept sessions."""

from __future__ import annotations

from alembic import op

from ecolink.store.schema import statements

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in statements(1, op.get_bind().dialect.name):
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("the schema only moves forward; restore a backup instead")
