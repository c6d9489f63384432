"""The gateway's hot statements: built once per shape with every value bound, run with the
values of the moment, and composed by the unit of work around them as they are."""

from __future__ import annotations

import itertools
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.dialects import postgresql

from bot_gateway.domain import Change, JobState, JobView, Mail, Phase
from bot_gateway.models import DELIVERY
from bot_gateway.repository import (
    broadcast_statement,
    move_statement,
    remember_statement,
    request_statement,
)
from messaging.unit_of_work import _composed

pytestmark = pytest.mark.unit

EDIT_INTERVAL = timedelta(seconds=3)


def a_job(phase: Phase = Phase.created) -> JobView:
    return JobView(uuid.uuid4(), 42, "ru", "Эскиз", 7, 9, JobState(phase, 1, 1, 3))


def a_change(status: str | None, mailed: bool) -> Change:
    return Change(
        JobState(Phase.running, 1, 2, 3),
        {"message_id": 9, "text": "шаг 2 из 3"} if status is not None else None,
        final=status == "final",
        mail=Mail("result:1", "photo", {"object_key": "r.png"}) if mailed else None,
    )


def compiled(statement: Any, *fills: tuple[tuple[str, str], ...]) -> Any:
    """`statement` composed as `uow.apply` runs it: with a mark and `fills`' events."""
    composed: Any = _composed(DELIVERY, statement, True, fills)
    return composed.compile(dialect=postgresql.dialect())


def required(statement: Any) -> set[str]:
    """The bound parameters `statement` needs a value for, as `uow.apply` runs it."""
    return {name for name, bind in compiled(statement, ()).binds.items() if bind.required}


def test_a_move_is_one_statement_per_shape_whatever_the_job() -> None:
    first, values = move_statement(a_job(), a_change("paced", False), edit_interval=EDIT_INTERVAL)
    other_job = a_job(Phase.queued)
    again, other = move_statement(other_job, a_change("paced", False), edit_interval=EDIT_INTERVAL)
    final, _ = move_statement(a_job(), a_change("final", False), edit_interval=EDIT_INTERVAL)
    assert first is again  # built, composed and compiled once
    assert final is not first  # a final text goes out at once: another shape
    assert (other["gw_request_id"], other["gw_was_phase"]) == (other_job.request_id, "queued")
    assert values["gw_request_id"] != other["gw_request_id"]


@pytest.mark.parametrize(
    ("link", "status", "mailed"),
    list(itertools.product([None, (5, None), (5, 7)], [None, "paced", "final"], [False, True])),
)
def test_every_move_binds_every_value_under_a_name_of_its_own(
    link: tuple[int, int | None] | None, status: str | None, mailed: bool
) -> None:
    statement, params = move_statement(
        a_job(), a_change(status, mailed), link=link, edit_interval=EDIT_INTERVAL
    )
    assert all(name.startswith("gw_") for name in params)  # never named like a column
    needed = required(statement)
    assert {name for name in needed if not name.startswith("uow_")} == set(params)
    text = str(compiled(statement))
    assert ("INSERT INTO gateway_outbound" in text) == (status is not None or mailed)
    assert ("gateway_outbound.sent_at +" in text) == (status == "paced")


def test_a_request_is_one_statement_with_every_value_bound() -> None:
    def request(telegram_id: int) -> tuple[Any, dict[str, Any]]:
        job = {
            "request_id": uuid.uuid4(),
            "telegram_id": telegram_id,
            "user_id": 1,
            "chat_id": telegram_id,
            "language": "ru",
            "preset_id": None,
            "title": "Эскиз",
            "prompt": None,
            "image_key": None,
            "phase": "requested",
            "price": 7,
            "status_message_id": 9,
        }
        return request_statement(job, {"message_id": 9, "text": "принято"})

    (first, params), (again, _) = request(1), request(2)
    assert first is again
    assert all(name.startswith("gw_") for name in params)
    assert {name for name in required(first) if not name.startswith("uow_")} == set(params)


@pytest.mark.parametrize(
    "built",
    [
        lambda: remember_statement(
            telegram_id=1, user_id=2, chat_id=1, language="ru", username=None
        ),
        lambda: broadcast_statement("b1", "hello"),
    ],
)
def test_the_other_changes_are_built_once(built: Any) -> None:
    (first, params), (again, _) = built(), built()
    assert first is again
    assert all(name.startswith("gw_") for name in params)
    assert {name for name in required(first) if not name.startswith("uow_")} == set(params)
