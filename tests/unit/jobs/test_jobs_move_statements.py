"""A move's statement is built once per shape, and only from the job's own columns."""

from __future__ import annotations

import pytest

from jobs.domain import Stage
from jobs.repository import NOW, FromNow, _move_statement


def test_one_statement_per_shape_whatever_the_values() -> None:
    first = _move_statement(
        Stage.processing, {"started_at": NOW, "deadline_at": FromNow(60)}, claim=False
    )
    again = _move_statement(
        Stage.processing, {"started_at": NOW, "deadline_at": FromNow(5)}, claim=False
    )
    bound = _move_statement(Stage.processing, {"started_at": NOW, "deadline_at": None}, claim=False)
    claiming = _move_statement(
        Stage.processing, {"started_at": NOW, "deadline_at": FromNow(60)}, claim=True
    )
    assert first is again
    assert bound is not first
    assert "jobs_inbox" not in str(first)
    assert "INSERT INTO jobs_inbox" in str(claiming)
    assert "ON CONFLICT" not in str(claiming)  # a mark taken fails the move with it
    assert "now() + make_interval" in str(first)
    assert "deadline_at = :set_deadline_at" in str(bound)
    assert "status = 'processing'" in str(first)  # the seed's status follows the stage


@pytest.mark.parametrize("changes", [{"stage": "done"}, {"status": "failed"}, {"nope": 1}])
def test_a_move_sets_only_the_jobs_other_columns(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="a move cannot set"):
        _move_statement(Stage.completed, changes, claim=False)
