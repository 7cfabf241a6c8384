"""Revision 0003: each cluster's grace between SIGTERM and SIGKILL."""

from __future__ import annotations

from alembic import op

from ecolink.store.schema import statements

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in statements(3, op.get_bind().dialect.name):
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("the schema only moves forward; restore a backup instead")
