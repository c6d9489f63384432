"""A request edits up to three photos (an album): the gateway remembers all of them, so
"again" and "another preset" reuse the whole album.

`gateway_jobs.image_key` keeps the first photo; `extra_image_keys` the second and third, in the
order sent (NULL for one photo or none, and on every older row).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "gateway_jobs",
        sa.Column("extra_image_keys", postgresql.ARRAY(sa.String(255)), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("gateway_jobs", "extra_image_keys")
