"""Add `presets.workflow_type`, existing presets taking the default `qwen_edit_2511`.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "presets",
        sa.Column(
            "workflow_type", sa.String(length=50), server_default="qwen_edit_2511", nullable=True
        ),
    )


def downgrade() -> None:
    op.drop_column("presets", "workflow_type")
