"""The job lifecycle as pure rules: stages, allowed moves, pricing, retries, fairness, ETA.

Nothing here does I/O. Use cases feed it facts read from the database and apply what it
decides; a decision of `None` means "this event changes nothing" (late, duplicate, stale).
SQL enforces two rules itself, under the user's lock: a dispatch fills at most the user's free
slots (the cap minus jobs in flight), and a move applies only while the job is as decided on.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from contracts.events import (
    PROMPT_MAX_LENGTH,
    WORKFLOW_TYPES,
    JobOrderRefusedReason,
    JobRejectReason,
)


class Stage(StrEnum):
    """Where a job is; finer than the seed's `status`, which is derived from it."""

    awaiting_payment = "awaiting_payment"
    waiting = "waiting"
    """Paid, held inside jobs until the user has a free slot and any retry backoff passed."""
    dispatched = "dispatched"
    """On its workflow's GPU queue, not yet started."""
    processing = "processing"
    completed = "completed"
    failed = "failed"
    canceled = "canceled"


FINISHED = frozenset({Stage.completed, Stage.failed, Stage.canceled})
IN_FLIGHT = frozenset({Stage.dispatched, Stage.processing})
WITH_DEADLINE = IN_FLIGHT | {Stage.awaiting_payment}
"""Stages a job may not stay in forever: the sweeper acts when their deadline passes."""
UNFINISHED = frozenset(Stage) - FINISHED

LEGACY_STATUS: dict[Stage, str] = {
    Stage.awaiting_payment: "queued",
    Stage.waiting: "queued",
    Stage.dispatched: "queued",
    Stage.processing: "processing",
    Stage.completed: "completed",
    Stage.failed: "failed",
    Stage.canceled: "failed",  # the seed's enum has no "canceled"; `stage` keeps the truth
}

ALLOWED: dict[Stage, frozenset[Stage]] = {
    Stage.awaiting_payment: frozenset({Stage.waiting, Stage.failed, Stage.canceled}),
    # completed from waiting: an earlier attempt, given up on, delivered after all
    Stage.waiting: frozenset({Stage.dispatched, Stage.completed, Stage.failed, Stage.canceled}),
    Stage.dispatched: frozenset(
        {Stage.processing, Stage.waiting, Stage.completed, Stage.failed, Stage.canceled}
    ),
    Stage.processing: frozenset({Stage.waiting, Stage.completed, Stage.failed, Stage.canceled}),
    Stage.completed: frozenset(),
    Stage.failed: frozenset(),
    Stage.canceled: frozenset(),
}


def can_move(current: Stage, target: Stage) -> bool:
    return target in ALLOWED[current]


# --- requests and pricing -------------------------------------------------------------------

EDIT_WORKFLOW = "qwen_edit_2511"
TEXT_TO_IMAGE_WORKFLOW = "qwen_image"
IMAGE_FREE_WORKFLOWS = frozenset({TEXT_TO_IMAGE_WORKFLOW})
"""Workflows that generate from text alone; every other one edits the user's image."""


def needs_image(workflow_type: str) -> bool:
    return workflow_type not in IMAGE_FREE_WORKFLOWS


@dataclass(frozen=True)
class PresetFacts:
    id: int
    prompt: str
    price: float | None
    workflow_type: str
    enabled: bool


@dataclass(frozen=True)
class RequestFacts:
    preset_id: int | None
    prompt: str | None
    has_image: bool
    unfinished_jobs: int
    confirmed_price: int | None = None
    """The price the user agreed to (None from a JobRequested v1: whatever the catalog says)."""
    age_s: float = 0.0
    """How long ago the user asked (the request's envelope time)."""


@dataclass(frozen=True)
class Limits:
    custom_prompt_price: int
    prompt_max_length: int
    max_unfinished_jobs: int
    unconfirmed_max_age_s: float = math.inf


@dataclass(frozen=True)
class Order:
    """An accepted request: what runs and what it costs."""

    prompt: str
    price: int
    workflow_type: str


@dataclass(frozen=True)
class Rejection:
    reason: JobRejectReason
    detail: str
    price: int | None = None
    """What the request costs now, when that is the reason (`price_changed`)."""


DEFAULT_PRESET_PRICE = 30.0
"""The seed's default for `presets.price`, for legacy rows that left it NULL."""


def credits(price: float | None) -> int:
    """A preset's price in whole credits, rounded up so nothing is sold below its price."""
    return math.ceil(DEFAULT_PRESET_PRICE if price is None else max(price, 0.0))


def take_order(
    request: RequestFacts, preset: PresetFacts | None, limits: Limits
) -> Order | Rejection:
    """Validate and price a request, or say why it is refused (nothing is charged then). A
    price the user confirmed must still be the catalog's: nobody pays what they did not see."""
    user_prompt = (request.prompt or "").strip()
    if len(user_prompt) > limits.prompt_max_length:
        return Rejection(
            JobRejectReason.prompt_too_long,
            f"prompt has {len(user_prompt)} characters, at most {limits.prompt_max_length}",
        )
    if request.preset_id is not None:
        if preset is None or not preset.enabled:
            return Rejection(
                JobRejectReason.unknown_preset, f"preset {request.preset_id} is not offered"
            )
        prompt = f"{preset.prompt or ''}\n{user_prompt}".strip()
        if not prompt or len(prompt) > PROMPT_MAX_LENGTH:
            # A legacy preset without a prompt (or an overlong one) could never be dispatched:
            # refuse it now, before anything is charged.
            return Rejection(
                JobRejectReason.unknown_preset,
                f"preset {request.preset_id} has no usable prompt ({len(prompt)} characters)",
            )
        if preset.workflow_type not in WORKFLOW_TYPES:
            return Rejection(
                JobRejectReason.unknown_preset,
                f"preset {request.preset_id} names workflow {preset.workflow_type!r}, not served",
            )
        order = Order(
            prompt=prompt, price=credits(preset.price), workflow_type=preset.workflow_type
        )
    elif user_prompt:
        workflow = EDIT_WORKFLOW if request.has_image else TEXT_TO_IMAGE_WORKFLOW
        order = Order(prompt=user_prompt, price=limits.custom_prompt_price, workflow_type=workflow)
    else:
        return Rejection(JobRejectReason.invalid_request, "neither a preset nor a prompt")
    if needs_image(order.workflow_type) and not request.has_image:
        return Rejection(
            JobRejectReason.missing_image, f"workflow {order.workflow_type} edits an image"
        )
    if request.confirmed_price is not None and request.confirmed_price != order.price:
        return Rejection(
            JobRejectReason.price_changed,
            f"confirmed at {request.confirmed_price} credits, the catalog says {order.price}",
            order.price,
        )
    if request.confirmed_price is None and request.age_s > limits.unconfirmed_max_age_s:
        return Rejection(
            JobRejectReason.invalid_request,
            f"no confirmed price, asked {request.age_s:.0f} s ago: the price shown is unknown",
        )
    if request.unfinished_jobs >= limits.max_unfinished_jobs:
        return Rejection(
            JobRejectReason.active_jobs_cap,
            f"{request.unfinished_jobs} unfinished jobs, at most {limits.max_unfinished_jobs}",
        )
    return order


# --- the lifecycle after creation -----------------------------------------------------------


@dataclass(frozen=True)
class JobFacts:
    stage: Stage
    retry_count: int

    @property
    def attempt(self) -> int:
        """The current attempt (or the next one, while waiting): the first is 1."""
        return self.retry_count + 1


@dataclass(frozen=True)
class Move:
    """A decided transition; `retry` schedules another attempt after `delay_s`."""

    to: Stage
    reason: str
    retry: bool = False
    delay_s: float = 0.0


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    backoff_s: float
    backoff_max_s: float

    def delay_s(self, next_attempt: int) -> float:
        """Backoff before `next_attempt` (2, 3, ...): base, doubling, capped."""
        return float(min(self.backoff_s * 2 ** max(next_attempt - 2, 0), self.backoff_max_s))


def _move(job: JobFacts, to: Stage, reason: str) -> Move | None:
    return Move(to, reason) if can_move(job.stage, to) else None


def on_paid(job: JobFacts) -> Move | None:
    return Move(Stage.waiting, "paid") if job.stage is Stage.awaiting_payment else None


def on_debit_rejected(job: JobFacts, reason: str) -> Move | None:
    return Move(Stage.failed, reason) if job.stage is Stage.awaiting_payment else None


def on_started(job: JobFacts, attempt: int) -> Move | None:
    """Only the current attempt starts; a stale or repeated start changes nothing."""
    if job.stage is not Stage.dispatched or attempt != job.attempt:
        return None
    return Move(Stage.processing, "started")


def on_completed(job: JobFacts, attempt: int) -> Move | None:
    """The first result of any attempt so far wins; once finished, nothing moves the job."""
    if job.stage not in {Stage.waiting, *IN_FLIGHT} or attempt > job.attempt:
        return None
    return Move(Stage.completed, "completed")


def on_attempt_failed(
    job: JobFacts, attempt: int, *, retryable: bool, reason: str, policy: RetryPolicy
) -> Move | None:
    """The current attempt failed: another one after a backoff, or the job fails for good."""
    if job.stage not in IN_FLIGHT or attempt != job.attempt:
        return None
    if retryable and job.attempt < policy.max_attempts:
        return Move(Stage.waiting, reason, retry=True, delay_s=policy.delay_s(job.attempt + 1))
    return Move(Stage.failed, reason)


def on_deadline(job: JobFacts, policy: RetryPolicy) -> Move | None:
    """An attempt that overran its deadline counts as a retryable failure; a job billing never
    answered fails (JobFailed: billing refunds it if it did take the money after all)."""
    if job.stage is Stage.awaiting_payment:
        return Move(Stage.failed, "payment_timeout")
    return on_attempt_failed(job, job.attempt, retryable=True, reason="timeout", policy=policy)


def on_cancel(job: JobFacts) -> Move | None:
    return _move(job, Stage.canceled, "canceled_by_user")


# --- an operator's retry of a failed job --------------------------------------------------------


@dataclass(frozen=True)
class JobInputs:
    """Where a job stands and what it was asked on, whose it is: what a retry runs again."""

    stage: Stage
    user_id: int
    telegram_id: int | None
    chat_id: int | None
    language: str | None
    preset_id: int | None
    prompt: str | None
    workflow_type: str | None
    images: tuple[str, ...]
    paid: bool
    """Billing debited it (then refunded it when it failed)."""


@dataclass(frozen=True)
class Rerun:
    """A failed job asked for again by an operator (`request_id` is theirs): a new job of the
    same inputs for the same user, priced `order.price` (free)."""

    request_id: uuid.UUID
    user_id: int
    telegram_id: int
    chat_id: int
    language: str
    preset_id: int | None
    images: tuple[str, ...]
    order: Order


DEFAULT_LANGUAGE = "ru"
"""A request's language when its job kept none (JobRequested's default)."""


FREE = 0
"""A retry's price: its user paid for the failed job and got that back; billing debits 0."""


def retry(job: JobInputs, request_id: uuid.UUID) -> Rerun | JobOrderRefusedReason:
    """The failed job again, at no charge; or why not: only a failed job runs again (a
    canceled one was canceled on purpose, the others did not fail), only one its user paid
    for (a job that failed for want of credits or of billing's answer cost nothing: running
    it free would be a gift, which is a credit adjustment's to make), and only while its
    inputs are kept (a user's erasure drops them)."""
    if job.stage is not Stage.failed:
        return JobOrderRefusedReason.not_failed
    if not job.paid:
        return JobOrderRefusedReason.never_paid
    workflow, telegram_id = job.workflow_type or "", job.telegram_id
    if (
        telegram_id is None
        or not job.prompt
        or workflow not in WORKFLOW_TYPES
        or (needs_image(workflow) and not job.images)
    ):
        return JobOrderRefusedReason.inputs_gone
    return Rerun(
        request_id=request_id,
        user_id=job.user_id,
        telegram_id=telegram_id,
        chat_id=job.chat_id or telegram_id,
        language=job.language or DEFAULT_LANGUAGE,
        preset_id=job.preset_id,
        images=job.images,
        order=Order(prompt=job.prompt, price=FREE, workflow_type=workflow),
    )


# --- fairness and ETA -------------------------------------------------------------------------


@dataclass(frozen=True)
class UserQueue:
    """A user with paid jobs waiting for a slot."""

    user_id: int
    in_flight: int
    oldest_waiting: datetime


def fair_order(users: Sequence[UserQueue], cap: int) -> list[UserQueue]:
    """Users with a free slot, fewest jobs in flight first, then who has waited longest.

    One user's burst never delays another's single job: a user is only ever served up to the
    cap, and a user with nothing in flight comes before one who already has work running.
    """
    eligible = [user for user in users if user.in_flight < cap]
    return sorted(eligible, key=lambda user: (user.in_flight, user.oldest_waiting, user.user_id))


def eta_seconds(
    position: int, recent_durations_ms: Sequence[int], busy_runners: int, default_s: int
) -> int:
    """Seconds until a job at `position` in its line is done, from recent run times.

    The runners busy on the workflow right now estimate how many work in parallel.
    """
    mean_s = (
        sum(recent_durations_ms) / len(recent_durations_ms) / 1000
        if recent_durations_ms
        else float(default_s)
    )
    rounds = math.ceil(position / max(busy_runners, 1))
    return max(round(mean_s * rounds), 0)
