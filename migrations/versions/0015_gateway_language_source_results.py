"""The gateway remembers a user's chosen language and where they came from, and a job's result.

`gateway_users.chosen_language`: the language picked in the menu (NULL: Telegram's decides).
`gateway_users.source` (indexed, for the operators' reports) and `source_at`: the first /start
deep-link payload the user came with. `gateway_jobs.result_key` and `completed_at`: the paid
result in the object store and when it was delivered, so it can be sent again while kept.
Every column is nullable: rows of the release before read as "none".

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("gateway_users", sa.Column("chosen_language", sa.String(10), nullable=True))
    op.add_column("gateway_users", sa.Column("source", sa.String(64), nullable=True))
    op.add_column(
        "gateway_users", sa.Column("source_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index("ix_gateway_users_source", "gateway_users", ["source"])
    op.add_column("gateway_jobs", sa.Column("result_key", sa.String(255), nullable=True))
    op.add_column(
        "gateway_jobs", sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("gateway_jobs", "completed_at")
    op.drop_column("gateway_jobs", "result_key")
    op.drop_index("ix_gateway_users_source", table_name="gateway_users")
    op.drop_column("gateway_users", "source_at")
    op.drop_column("gateway_users", "source")
    op.drop_column("gateway_users", "chosen_language")
