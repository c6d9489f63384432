"""Rename `presets.order` to `order_index` (a reserved word made every query quote it).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("presets", "order", new_column_name="order_index")
    op.execute('ALTER INDEX "ix_presets_order" RENAME TO "ix_presets_order_index"')


def downgrade() -> None:
    op.execute('ALTER INDEX "ix_presets_order_index" RENAME TO "ix_presets_order"')
    op.alter_column("presets", "order_index", new_column_name="order")
