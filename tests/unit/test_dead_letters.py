"""Dead letters read from their headers: first death kept across replays, broker headers dropped."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from messaging.dead_letters import letter_of, replay_headers, select

DIED = datetime(2026, 12, 1, 10, 0, 0)  # as the broker sends it: no zone
LATER = datetime(2026, 12, 2, 11, 0, 0)


def _x_death(queue: str, reason: str, time: datetime, count: int = 1) -> list[dict[str, Any]]:
    return [{"queue": queue, "reason": reason, "time": time, "count": count, "exchange": ""}]


def test_a_first_death_comes_from_x_death_and_broker_headers_never_travel() -> None:
    headers = {
        "x-death": _x_death("imagebot.jobs", "delivery_limit", DIED),
        "x-first-death-reason": "delivery_limit",
        "x-first-death-queue": "imagebot.jobs",
        "x-last-death-reason": "delivery_limit",
        "x-delivery-count": 12,  # the DLQ's own count of reads on RabbitMQ < 4.3
        "traceparent": "00-abc-def-01",
    }
    letter = letter_of(headers, b"{}", {"message_id": "m1", "type": "job.requested"})
    assert (letter.key, letter.queue, letter.reason, letter.deaths) == (
        "m1",
        "imagebot.jobs",
        "delivery_limit",
        1,
    )
    assert letter.died_at == DIED.replace(tzinfo=UTC)
    assert letter.first_death is not None
    assert letter.first_death.time == DIED.replace(tzinfo=UTC)

    sent = replay_headers(letter, "imagebot.jobs.dlq", "run-1", LATER.replace(tzinfo=UTC))
    assert "x-death" not in sent
    assert "x-delivery-count" not in sent
    assert not [key for key in sent if key.startswith(("x-first-death-", "x-last-death-"))]
    assert sent["traceparent"] == "00-abc-def-01"
    assert sent["x-imagebot-first-death-reason"] == "delivery_limit"
    assert sent["x-imagebot-first-death-queue"] == "imagebot.jobs"
    assert sent["x-imagebot-first-death-time"] == "2026-12-01T10:00:00+00:00"
    assert sent["x-imagebot-first-death-count"] == 1
    assert (sent["x-imagebot-deaths"], sent["x-imagebot-replays"]) == (1, 1)
    assert sent["x-imagebot-replay-run"] == "run-1"


def test_the_first_death_survives_a_second_death_and_replay() -> None:
    first = letter_of(
        {"x-death": _x_death("imagebot.jobs", "rejected", DIED)}, b"{}", {"message_id": "m1"}
    )
    replayed = replay_headers(first, "imagebot.jobs.dlq", "run-1", LATER.replace(tzinfo=UTC))
    again = letter_of(
        {**replayed, "x-death": _x_death("imagebot.jobs", "delivery_limit", LATER)},
        b"{}",
        {"message_id": "m1"},
    )
    assert again.first_death == first.first_death
    assert (again.reason, again.died_at) == ("delivery_limit", LATER.replace(tzinfo=UTC))
    assert (again.deaths, again.replays) == (2, 1)
    twice = replay_headers(again, "imagebot.jobs.dlq", "run-2", LATER.replace(tzinfo=UTC))
    assert twice["x-imagebot-first-death-reason"] == "rejected"
    assert twice["x-imagebot-first-death-time"] == "2026-12-01T10:00:00+00:00"
    assert (twice["x-imagebot-deaths"], twice["x-imagebot-replays"]) == (2, 2)


def test_a_message_without_an_id_is_known_by_a_digest_of_its_body() -> None:
    letter = letter_of({}, b"\xff garbage")
    assert letter.key.startswith("sha256:")
    assert letter.key == letter_of({}, b"\xff garbage").key
    assert letter.envelope is None
    assert letter.queue is None  # no death recorded: nowhere to send it
    assert select([letter.key])(letter)
    assert not select(["other"])(letter)
