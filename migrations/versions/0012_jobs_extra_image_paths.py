"""A job edits up to three images (an album: a person and a product, a face and a style).

The customer's `jobs.image_path` keeps the first image, as readers of the customer's database
expect; `extra_image_paths` holds the second and third, in the order the user sent them (NULL
for a job of one image or none, and on every older row).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "jobs", sa.Column("extra_image_paths", postgresql.ARRAY(sa.String(255)), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("jobs", "extra_image_paths")
