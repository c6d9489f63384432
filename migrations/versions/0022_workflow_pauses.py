"""jobs: workflow_pauses, the workflows whose queue an operator paused (no job of theirs is
dispatched until it is resumed).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workflow_pauses",
        sa.Column("workflow_type", sa.String(50), nullable=False),
        sa.Column("operator", sa.String(100), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column(
            "paused_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("workflow_type", name=op.f("workflow_pauses_pkey")),
    )


def downgrade() -> None:
    op.drop_table("workflow_pauses")
