"""backend_api: backend_sign_in_failures, so every replica counts the same failed sign-ins.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "backend_sign_in_failures",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column(
            "failed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("backend_sign_in_failures_pkey")),
    )
    op.create_index(
        "ix_backend_sign_in_failures_key_failed_at",
        "backend_sign_in_failures",
        ["key", "failed_at"],
    )
    op.create_index(
        "ix_backend_sign_in_failures_failed_at", "backend_sign_in_failures", ["failed_at"]
    )


def downgrade() -> None:
    op.drop_table("backend_sign_in_failures")
