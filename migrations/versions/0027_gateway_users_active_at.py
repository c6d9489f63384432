"""bot_gateway: gateway_users.active_at, when a user joined or last asked for an image.

"Active within a period" (the dashboard, a broadcast's audience) was a union of the users who
joined and the requests made in it: at a million users, half a second a period. Kept on the
user's row, it is one indexed range. Filled from the requests each user has made.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

users = sa.table(
    "gateway_users",
    sa.column("telegram_id", sa.BigInteger()),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("active_at", sa.DateTime(timezone=True)),
)
jobs = sa.table(
    "gateway_jobs",
    sa.column("telegram_id", sa.BigInteger()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    op.add_column("gateway_users", sa.Column("active_at", sa.DateTime(timezone=True)))
    op.execute(users.update().values(active_at=users.c.created_at))
    last = (
        sa.select(jobs.c.telegram_id, sa.func.max(jobs.c.created_at).label("asked_at"))
        .group_by(jobs.c.telegram_id)
        .subquery()
    )
    op.execute(
        users.update()
        .values(active_at=last.c.asked_at)
        .where(users.c.telegram_id == last.c.telegram_id, last.c.asked_at > users.c.created_at)
    )
    op.alter_column("gateway_users", "active_at", nullable=False, server_default=sa.text("now()"))
    op.create_index("ix_gateway_users_active_at", "gateway_users", ["active_at"])


def downgrade() -> None:
    op.drop_index("ix_gateway_users_active_at", table_name="gateway_users")
    op.drop_column("gateway_users", "active_at")
