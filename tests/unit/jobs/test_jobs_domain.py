"""The job lifecycle rules, without I/O."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from contracts.events import JobOrderRefusedReason, JobRejectReason
from jobs.domain import (
    ALLOWED,
    FINISHED,
    JobFacts,
    JobInputs,
    Limits,
    Order,
    PresetFacts,
    Rejection,
    RequestFacts,
    Rerun,
    RetryPolicy,
    Stage,
    UserQueue,
    can_move,
    credits,
    eta_seconds,
    fair_order,
    needs_image,
    on_attempt_failed,
    on_cancel,
    on_completed,
    on_deadline,
    on_debit_rejected,
    on_paid,
    on_started,
    retry,
    take_order,
)

LIMITS = Limits(custom_prompt_price=25, prompt_max_length=50, max_unfinished_jobs=3)
POLICY = RetryPolicy(max_attempts=3, backoff_s=2.0, backoff_max_s=5.0)
EDIT = PresetFacts(id=1, prompt="make it anime", price=30.0, workflow_type="qwen_edit_2511",
                   enabled=True)  # fmt: skip


def request(**overrides: object) -> RequestFacts:
    fields: dict[str, object] = {
        "preset_id": 1, "prompt": None, "has_image": True, "unfinished_jobs": 0,
    }  # fmt: skip
    fields.update(overrides)
    return RequestFacts(**fields)  # type: ignore[arg-type]


def job(stage: Stage, retry_count: int = 0) -> JobFacts:
    return JobFacts(stage=stage, retry_count=retry_count)


def test_a_preset_request_is_priced_from_the_preset() -> None:
    assert take_order(request(), EDIT, LIMITS) == Order("make it anime", 30, "qwen_edit_2511")


def test_a_confirmed_price_must_still_be_the_catalog_price() -> None:
    assert isinstance(take_order(request(confirmed_price=30), EDIT, LIMITS), Order)
    assert isinstance(take_order(request(confirmed_price=None), EDIT, LIMITS), Order)  # v1
    for confirmed in (29, 31, 0):
        decision = take_order(request(confirmed_price=confirmed), EDIT, LIMITS)
        assert decision == Rejection(
            JobRejectReason.price_changed,
            f"confirmed at {confirmed} credits, the catalog says 30",
            30,
        )
    custom = request(preset_id=None, prompt="add a hat", confirmed_price=30)
    assert take_order(custom, None, LIMITS) == Rejection(
        JobRejectReason.price_changed, "confirmed at 30 credits, the catalog says 25", 25
    )


def test_an_unconfirmed_request_is_taken_only_while_fresh() -> None:
    limits = Limits(custom_prompt_price=25, prompt_max_length=50, max_unfinished_jobs=3,
                    unconfirmed_max_age_s=300)  # fmt: skip
    assert isinstance(take_order(request(age_s=299), EDIT, limits), Order)  # v1, fresh
    stale = take_order(request(age_s=301), EDIT, limits)
    assert isinstance(stale, Rejection)
    assert stale.reason is JobRejectReason.invalid_request
    # a confirmed price is checked against the catalog instead, however old the request
    assert isinstance(take_order(request(age_s=9999, confirmed_price=30), EDIT, limits), Order)


def test_a_user_prompt_refines_the_preset_prompt() -> None:
    order = take_order(request(prompt="  with a red scarf "), EDIT, LIMITS)
    assert isinstance(order, Order)
    assert order.prompt == "make it anime\nwith a red scarf"


def test_a_custom_prompt_uses_the_configured_price_and_picks_the_workflow_by_image() -> None:
    with_image = take_order(request(preset_id=None, prompt="add a hat"), None, LIMITS)
    without = take_order(request(preset_id=None, prompt="a cat", has_image=False), None, LIMITS)
    assert with_image == Order("add a hat", 25, "qwen_edit_2511")
    assert without == Order("a cat", 25, "qwen_image")


@pytest.mark.parametrize(
    ("facts", "preset", "reason"),
    [
        (request(), None, JobRejectReason.unknown_preset),
        (request(), PresetFacts(1, "p", 30.0, "qwen_edit_2511", enabled=False),
         JobRejectReason.unknown_preset),
        (request(has_image=False), EDIT, JobRejectReason.missing_image),
        (request(prompt="x" * 51), EDIT, JobRejectReason.prompt_too_long),
        (request(unfinished_jobs=3), EDIT, JobRejectReason.active_jobs_cap),
        (request(preset_id=None, prompt="   "), None, JobRejectReason.invalid_request),
        # legacy rows that could never be dispatched: refused before anything is charged
        (request(), PresetFacts(1, "", 30.0, "qwen_edit_2511", enabled=True),
         JobRejectReason.unknown_preset),
        (request(), PresetFacts(1, "p" * 4001, 30.0, "qwen_edit_2511", enabled=True),
         JobRejectReason.unknown_preset),
        (request(), PresetFacts(1, "p", 30.0, "sdxl_legacy", enabled=True),
         JobRejectReason.unknown_preset),
    ],
)  # fmt: skip
def test_bad_requests_are_refused_with_a_reason(
    facts: RequestFacts, preset: PresetFacts | None, reason: JobRejectReason
) -> None:
    decision = take_order(facts, preset, LIMITS)
    assert isinstance(decision, Rejection)
    assert decision.reason is reason
    assert decision.detail


def test_prices_are_whole_credits_never_below_the_preset_price() -> None:
    assert (credits(30.0), credits(29.5), credits(None), credits(-1.0)) == (30, 30, 30, 0)


def test_only_text_to_image_runs_without_an_image() -> None:
    assert not needs_image("qwen_image")
    assert needs_image("qwen_edit_2511")
    assert needs_image("pillow_filter")


def test_finished_jobs_never_move_again() -> None:
    for stage in FINISHED:
        assert ALLOWED[stage] == frozenset()
        assert on_cancel(job(stage)) is None
        assert on_completed(job(stage), 1) is None
        assert on_started(job(stage), 1) is None
        assert on_attempt_failed(job(stage), 1, retryable=True, reason="x", policy=POLICY) is None


def test_nothing_moves_a_job_backwards() -> None:
    assert not can_move(Stage.processing, Stage.dispatched)
    assert not can_move(Stage.waiting, Stage.awaiting_payment)
    assert on_paid(job(Stage.dispatched)) is None
    assert on_debit_rejected(job(Stage.waiting), "insufficient_funds") is None
    assert on_started(job(Stage.processing), 1) is None  # a repeated start


def test_only_the_current_attempt_starts_or_fails() -> None:
    current = job(Stage.dispatched, retry_count=1)  # attempt 2
    assert on_started(current, 1) is None
    started = on_started(current, 2)
    assert started is not None
    assert started.to is Stage.processing
    assert on_attempt_failed(current, 1, retryable=True, reason="oom", policy=POLICY) is None


def test_the_first_completion_of_any_attempt_so_far_wins() -> None:
    retrying = job(Stage.waiting, retry_count=1)
    late = on_completed(retrying, 1)
    assert late is not None
    assert late.to is Stage.completed
    assert on_completed(retrying, 3) is None  # an attempt that was never dispatched
    assert on_completed(job(Stage.awaiting_payment), 1) is None


def test_retryable_failures_retry_with_growing_backoff_until_the_limit() -> None:
    first = on_attempt_failed(job(Stage.processing, 0), 1, retryable=True, reason="oom",
                              policy=POLICY)  # fmt: skip
    second = on_attempt_failed(job(Stage.processing, 1), 2, retryable=True, reason="oom",
                               policy=POLICY)  # fmt: skip
    last = on_attempt_failed(job(Stage.processing, 2), 3, retryable=True, reason="oom",
                             policy=POLICY)  # fmt: skip
    assert first is not None
    assert second is not None
    assert last is not None
    assert (first.to, first.retry, first.delay_s) == (Stage.waiting, True, 2.0)
    assert (second.to, second.retry, second.delay_s) == (Stage.waiting, True, 4.0)
    assert (last.to, last.retry) == (Stage.failed, False)
    assert POLICY.delay_s(10) == 5.0  # capped


def test_a_permanent_failure_fails_at_once() -> None:
    move = on_attempt_failed(job(Stage.processing), 1, retryable=False, reason="bad_image",
                             policy=POLICY)  # fmt: skip
    assert move is not None
    assert (move.to, move.reason, move.retry) == (Stage.failed, "bad_image", False)


def test_a_deadline_counts_as_a_retryable_failure() -> None:
    move = on_deadline(job(Stage.dispatched), POLICY)
    assert move is not None
    assert (move.to, move.reason, move.retry) == (Stage.waiting, "timeout", True)
    assert on_deadline(job(Stage.waiting), POLICY) is None


def test_cancel_works_until_the_job_finishes() -> None:
    for stage in (Stage.awaiting_payment, Stage.waiting, Stage.dispatched, Stage.processing):
        move = on_cancel(job(stage))
        assert move is not None
        assert move.to is Stage.canceled


def test_fair_order_serves_users_with_less_in_flight_first_and_skips_full_ones() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    burst = UserQueue(user_id=1, in_flight=1, oldest_waiting=start)
    single = UserQueue(user_id=2, in_flight=0, oldest_waiting=start + timedelta(minutes=5))
    full = UserQueue(user_id=3, in_flight=2, oldest_waiting=start - timedelta(hours=1))
    assert fair_order([burst, full, single], cap=2) == [single, burst]


def test_eta_grows_with_the_position_and_shrinks_with_busy_runners() -> None:
    assert eta_seconds(1, [], busy_runners=0, default_s=60) == 60
    assert eta_seconds(3, [10_000, 20_000], busy_runners=1, default_s=60) == 45
    assert eta_seconds(3, [10_000, 20_000], busy_runners=3, default_s=60) == 15


FAILED = JobInputs(
    stage=Stage.failed,
    user_id=7,
    telegram_id=2**40,
    chat_id=2**40,
    language="en",
    preset_id=3,
    prompt="make it anime",
    workflow_type="qwen_edit_2511",
    images=("uploads/1/a.jpg", "uploads/1/b.jpg"),
    paid=True,
)


def test_a_retry_is_the_failed_jobs_inputs_again_at_no_charge() -> None:
    request_id = uuid.uuid4()
    assert retry(FAILED, request_id) == Rerun(
        request_id=request_id,
        user_id=7,
        telegram_id=2**40,
        chat_id=2**40,
        language="en",
        preset_id=3,
        images=("uploads/1/a.jpg", "uploads/1/b.jpg"),
        order=Order(prompt="make it anime", price=0, workflow_type="qwen_edit_2511"),
    )
    text_only = replace(FAILED, workflow_type="qwen_image", images=(), chat_id=None, language=None)
    rerun = retry(text_only, request_id)
    assert isinstance(rerun, Rerun)
    assert (rerun.chat_id, rerun.language, rerun.order.price) == (2**40, "ru", 0)


@pytest.mark.parametrize("stage", sorted(set(Stage) - {Stage.failed}))
def test_only_a_failed_job_is_retried(stage: Stage) -> None:
    assert retry(replace(FAILED, stage=stage), uuid.uuid4()) is JobOrderRefusedReason.not_failed


def test_a_job_that_failed_before_it_was_paid_for_is_not_retried_free() -> None:
    refused = retry(replace(FAILED, paid=False), uuid.uuid4())
    assert refused is JobOrderRefusedReason.never_paid


@pytest.mark.parametrize(
    "gone",
    [
        {"prompt": None},
        {"images": ()},
        {"telegram_id": None},
        {"workflow_type": None},
        {"workflow_type": "no_such_workflow"},
    ],
)
def test_a_job_whose_inputs_are_gone_is_not_retried(gone: dict[str, object]) -> None:
    refused = retry(replace(FAILED, **gone), uuid.uuid4())  # type: ignore[arg-type]
    assert refused is JobOrderRefusedReason.inputs_gone
