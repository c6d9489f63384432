"""A move's statement: the job's update guarded by the facts it was decided on, and its
transition, built from the job's own columns only."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy.dialects import postgresql

from jobs.domain import JobFacts, Stage
from jobs.repository import NOW, FromNow, move_statement

pytestmark = pytest.mark.unit

RUNNING = JobFacts(Stage.dispatched, retry_count=0)


def sql(**changes: object) -> str:
    statement, _ = move_statement(
        7, RUNNING, Stage.processing, reason="started", event_id=uuid.uuid4(), **changes
    )
    return str(statement.compile(dialect=postgresql.dialect()))


def test_a_move_is_guarded_by_its_facts_and_records_its_transition() -> None:
    text = sql(started_at=NOW, deadline_at=FromNow(60))
    assert "UPDATE jobs SET" in text
    assert "jobs.stage = %(move_from_stage)s" in text  # the stage it was decided on
    assert "coalesce(jobs.retry_count" in text  # and the attempt
    assert "INSERT INTO job_transitions" in text
    assert "RETURNING jobs.id, jobs.user_id, jobs.chat_id, jobs.request_id" in text
    assert "now() +" in text  # a FromNow is the database's clock
    assert "jobs_inbox" not in text
    assert "jobs_outbox" not in text


def test_the_seed_status_follows_the_stage() -> None:
    statement, _ = move_statement(7, RUNNING, Stage.processing, reason="started", event_id=None)
    params = statement.compile(dialect=postgresql.dialect()).params
    assert "processing" in params.values()


def test_one_statement_per_shape_whatever_the_values() -> None:
    first, values = move_statement(
        7, RUNNING, Stage.processing, reason="a", event_id=None, deadline_at=FromNow(60)
    )
    again, other = move_statement(
        8, RUNNING, Stage.processing, reason="b", event_id=None, deadline_at=FromNow(5)
    )
    bound, _ = move_statement(
        7, RUNNING, Stage.processing, reason="a", event_id=None, deadline_at=None
    )
    assert first is again  # built (and compiled) once
    assert bound is not first  # a time from now is another shape than a value
    assert (values["move_job_id"], values["set_deadline_at"]) == (7, timedelta(seconds=60))
    assert (other["move_job_id"], other["set_deadline_at"]) == (8, timedelta(seconds=5))


@pytest.mark.parametrize("changes", [{"stage": "done"}, {"status": "failed"}, {"nope": 1}])
def test_a_move_sets_only_the_jobs_other_columns(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="a move cannot set"):
        move_statement(7, RUNNING, Stage.completed, reason="x", event_id=None, **changes)
