"""Revision 0004: the instances serving from the database, and which one holds each
kept session."""

from __future__ import annotations

from alembic import op

from ecolink.store.schema import statements

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in statements(4, op.get_bind().dialect.name):
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("the schema only moves forward; restore a backup instead")
