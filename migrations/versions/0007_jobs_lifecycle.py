"""Jobs: lifecycle columns beside the seed's, `presets.enabled`, and the transition history.

Existing rows keep their seed columns untouched; finished legacy jobs get the matching stage,
unfinished legacy jobs (never paid through the ledger) keep a NULL stage and are left alone.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMPS = (
    "debited_at",
    "next_attempt_at",
    "dispatched_at",
    "started_at",
    "deadline_at",
    "finished_at",
)


def upgrade() -> None:
    op.add_column(
        "presets",
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
    )

    op.add_column("jobs", sa.Column("request_id", sa.Uuid(), nullable=True))
    op.create_unique_constraint(op.f("jobs_request_id_key"), "jobs", ["request_id"])
    op.add_column("jobs", sa.Column("stage", sa.String(length=20), nullable=True))
    op.add_column("jobs", sa.Column("preset_id", sa.Integer(), nullable=True))
    op.add_column("jobs", sa.Column("price", sa.Integer(), nullable=True))
    op.add_column("jobs", sa.Column("workflow_type", sa.String(length=50), nullable=True))
    op.add_column("jobs", sa.Column("telegram_id", sa.BigInteger(), nullable=True))
    op.add_column("jobs", sa.Column("chat_id", sa.BigInteger(), nullable=True))
    op.add_column("jobs", sa.Column("language", sa.String(length=10), nullable=True))
    op.add_column("jobs", sa.Column("seed", sa.BigInteger(), nullable=True))
    for column in TIMESTAMPS:
        op.add_column("jobs", sa.Column(column, sa.DateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("duration_ms", sa.Integer(), nullable=True))
    op.execute("UPDATE jobs SET stage = status::text WHERE status IN ('completed', 'failed')")

    op.create_index("ix_jobs_user_id_stage", "jobs", ["user_id", "stage"])
    op.create_index(
        "ix_jobs_ready", "jobs", ["next_attempt_at"], postgresql_where=sa.text("stage = 'waiting'")
    )
    op.create_index(
        "ix_jobs_deadline",
        "jobs",
        ["deadline_at"],
        postgresql_where=sa.text("stage IN ('dispatched', 'processing')"),
    )
    op.create_index(
        "ix_jobs_line",
        "jobs",
        ["workflow_type", "dispatched_at"],
        postgresql_where=sa.text("stage = 'dispatched'"),
    )
    op.create_index(
        "ix_jobs_recent_durations",
        "jobs",
        ["workflow_type", "finished_at"],
        postgresql_where=sa.text("duration_ms IS NOT NULL"),
    )

    op.create_table(
        "job_transitions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("from_stage", sa.String(length=20), nullable=True),
        sa.Column("to_stage", sa.String(length=20), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=100), nullable=True),
        sa.Column("event_id", sa.Uuid(), nullable=True),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("job_transitions_job_id_fkey"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("job_transitions_pkey")),
    )
    op.create_index(op.f("ix_job_transitions_job_id"), "job_transitions", ["job_id"])


def downgrade() -> None:
    op.drop_table("job_transitions")
    for index in (
        "ix_jobs_recent_durations",
        "ix_jobs_line",
        "ix_jobs_deadline",
        "ix_jobs_ready",
        "ix_jobs_user_id_stage",
    ):
        op.drop_index(index, table_name="jobs")
    op.drop_constraint(op.f("jobs_request_id_key"), "jobs", type_="unique")
    for column in (
        "duration_ms",
        *reversed(TIMESTAMPS),
        "seed",
        "language",
        "chat_id",
        "telegram_id",
        "workflow_type",
        "price",
        "preset_id",
        "stage",
        "request_id",
    ):
        op.drop_column("jobs", column)
    op.drop_column("presets", "enabled")
