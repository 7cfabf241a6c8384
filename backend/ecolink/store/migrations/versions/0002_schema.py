"""Revision 0002: a console session belongs to the API key that minted it and ends with it."""

from __future__ import annotations

from alembic import op

from ecolink.store.schema import statements

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in statements(2, op.get_bind().dialect.name):
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("the schema only moves forward; restore a backup instead")
