"""`RecentJobs`: the newest moves of at most `size` jobs, linked as linked, none finished."""

from __future__ import annotations

import uuid

from bot_gateway.domain import JobState, JobView, Phase
from bot_gateway.recent_jobs import RecentJobs


def job(price: int | None = 30) -> JobView:
    return JobView(uuid.uuid4(), 42, "ru", "Эскиз", price, 7, JobState(Phase.requested))


def test_a_move_is_remembered_with_its_link_and_the_price_it_brings() -> None:
    recent = RecentJobs()
    asked = job()
    recent.moved(asked, JobState(Phase.queued), link=(9, None))  # linked by a later event
    assert recent.get(asked.request_id) == JobView(
        asked.request_id, 42, "ru", "Эскиз", 30, 7, JobState(Phase.queued), job_id=9
    )
    linked = recent.get(asked.request_id)
    assert linked is not None
    recent.moved(linked, JobState(Phase.queued), link=(9, 45))  # JobCreated: the real price
    priced = recent.get(asked.request_id)
    assert priced is not None
    assert (priced.price, priced.job_id) == (45, 9)


def test_a_finished_job_is_forgotten() -> None:
    recent = RecentJobs()
    done = job()
    recent.moved(done, JobState(Phase.running, 1, 2, 3))
    recent.moved(done, JobState(Phase.completed, 1, 3, 3))
    assert recent.get(done.request_id) is None
    assert len(recent) == 0


def test_past_its_size_the_job_moved_longest_ago_goes_first() -> None:
    recent = RecentJobs(size=2)
    first, second, third = job(), job(), job()
    recent.moved(first, JobState(Phase.requested))
    recent.moved(second, JobState(Phase.requested))
    recent.moved(first, JobState(Phase.queued))  # moved again: the newest now
    recent.moved(third, JobState(Phase.requested))
    assert recent.get(second.request_id) is None
    assert recent.get(first.request_id) is not None
    assert recent.get(third.request_id) is not None
    assert len(recent) == 2
