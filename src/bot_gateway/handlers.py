"""Wiring: each event on the gateway's queue to the one use case that says what it means."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bot_gateway.backends import Backends
from bot_gateway.notifications import OLDER_COPY, Notifications
from bot_gateway.restrictions import Restrictions
from bot_gateway.screening import MODERATION_REFUSED
from contracts.envelope import Event
from contracts.events import (
    BalanceRefunded,
    BalanceRefundedV1,
    CreditsAdjusted,
    CreditsAdjustedV1,
    CreditsGranted,
    CreditsGrantedV1,
    CreditsGrantRefused,
    DebitRejected,
    DebitRejectedV1,
    JobCanceled,
    JobCreated,
    JobFailed,
    JobHeld,
    JobProgress,
    JobQueued,
    JobRejectReason,
    JobRequestRejected,
    JobRequestRejectedV1,
    JobRetried,
    JobStarted,
    JobSucceeded,
    PaymentCreated,
    PaymentFailed,
    PaymentSucceeded,
    PaymentSucceededV1,
    PresetsChanged,
    TopUpRefunded,
    WeeklyBonusGranted,
    WeeklyBonusGrantedV1,
)
from messaging.consumer import TransactionalConsumer
from messaging.unit_of_work import UnitOfWork

UseCase = Callable[[Any, UnitOfWork], Awaitable[None]]


def as_newer(newer: type[Event], use_case: UseCase) -> UseCase:
    """An older version's copy handled as the newer one (the same fields: whole credits are
    exact credits too)."""

    async def handle(event: Event, uow: UnitOfWork) -> None:
        older = OLDER_COPY.set(True)
        try:
            await use_case(newer.model_validate(event.model_dump()), uow)
        finally:
            OLDER_COPY.reset(older)

    return handle


def register_handlers(
    consumer: TransactionalConsumer,
    notifications: Notifications,
    backends: Backends,
    restrictions: Restrictions | None = None,
) -> None:
    async def request_rejected(event: JobRequestRejected, uow: UnitOfWork) -> None:
        if event.reason is JobRejectReason.price_changed:
            backends.forget_catalog()  # it showed a price the catalog no longer has
        await notifications.request_rejected(event, uow)

    async def failed(event: JobFailed, uow: UnitOfWork) -> None:
        await notifications.failed(event, uow)
        if event.reason == MODERATION_REFUSED and restrictions is not None:
            # a refused result counts like a refused input (logged once per job)
            await restrictions.refused(
                event.chat_id, "result", event.reason, event.detail, job_id=event.job_id
            )

    async def presets_changed(event: PresetsChanged, uow: UnitOfWork) -> None:
        backends.forget_catalog()

    routes: dict[type[Event], UseCase] = {
        JobCreated: notifications.job_created,
        JobRetried: notifications.job_retried,
        JobRequestRejected: request_rejected,
        JobRequestRejectedV1: notifications.request_rejected_v1,
        JobQueued: notifications.queued,
        JobHeld: notifications.held,
        JobStarted: notifications.started,
        JobProgress: notifications.progress,
        JobSucceeded: notifications.succeeded,
        JobFailed: failed,
        JobCanceled: notifications.canceled,
        DebitRejected: notifications.debit_rejected,
        BalanceRefunded: notifications.refunded,
        PaymentCreated: notifications.payment_created,
        PaymentSucceeded: notifications.payment_succeeded,
        PaymentFailed: notifications.payment_failed,
        WeeklyBonusGranted: notifications.weekly_bonus,
        CreditsGranted: notifications.credits_granted,
        CreditsGrantRefused: notifications.grant_refused,
        PresetsChanged: presets_changed,
        TopUpRefunded: notifications.topup_refunded,
        CreditsAdjusted: notifications.credits_adjusted,
    }
    for event_type, use_case in routes.items():
        consumer.on(event_type)(use_case)
    # The v1 copies of balances, published beside v2 (exact); a billing of the release before
    # publishes v1 alone, and while old and new gateways share this queue either copy may come
    # here: whichever comes first is told (each notice's mailbox key sends it once).
    for older, newer in (
        (DebitRejectedV1, DebitRejected),
        (BalanceRefundedV1, BalanceRefunded),
        (PaymentSucceededV1, PaymentSucceeded),
        (WeeklyBonusGrantedV1, WeeklyBonusGranted),
        (CreditsGrantedV1, CreditsGranted),
        (CreditsAdjustedV1, CreditsAdjusted),
    ):
        consumer.on(older)(as_newer(newer, routes[newer]))
