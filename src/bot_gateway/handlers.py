"""Wiring: each event on the gateway's queue to what it means for the user."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import event as orm_event

from bot_gateway.backends import Backends
from bot_gateway.fast_paths import FastPaths
from bot_gateway.notifications import Notifications
from bot_gateway.recent_jobs import RecentJobs
from contracts.envelope import Event
from contracts.events import (
    BalanceRefunded,
    CreditsGranted,
    CreditsGrantRefused,
    DebitRejected,
    JobCanceled,
    JobCreated,
    JobFailed,
    JobProgress,
    JobQueued,
    JobRejectReason,
    JobRequestRejected,
    JobRequestRejectedV1,
    JobStarted,
    JobSucceeded,
    PaymentCreated,
    PaymentFailed,
    PaymentSucceeded,
    PresetsChanged,
    WeeklyBonusGranted,
)
from messaging.consumer import FastPath
from messaging.runtime import ServiceRuntime
from messaging.unit_of_work import UnitOfWork

UseCase = Callable[[Any, UnitOfWork], Awaitable[None]]


def register_handlers(
    runtime: ServiceRuntime,
    notifications: Notifications,
    backends: Backends,
    mail_committed: Callable[[], None],
    recent_jobs: RecentJobs,
) -> None:
    def wake_sender_after_commit(use_case: UseCase) -> UseCase:
        async def handle(event: Any, uow: UnitOfWork) -> None:
            orm_event.listen(uow.session.sync_session, "after_commit", lambda _: mail_committed())
            await use_case(event, uow)

        return handle

    async def request_rejected(event: JobRequestRejected, uow: UnitOfWork) -> None:
        if event.reason is JobRejectReason.price_changed:
            backends.forget_catalog()  # it showed a price the catalog no longer has
        await notifications.request_rejected(event, uow)

    routes: dict[type[Event], UseCase] = {
        JobCreated: notifications.job_created,
        JobRequestRejected: request_rejected,
        JobRequestRejectedV1: notifications.request_rejected_v1,
        JobQueued: notifications.queued,
        JobStarted: notifications.started,
        JobProgress: notifications.progress,
        JobSucceeded: notifications.succeeded,
        JobFailed: notifications.failed,
        JobCanceled: notifications.canceled,
        DebitRejected: notifications.debit_rejected,
        BalanceRefunded: notifications.refunded,
        PaymentCreated: notifications.payment_created,
        PaymentSucceeded: notifications.payment_succeeded,
        PaymentFailed: notifications.payment_failed,
        WeeklyBonusGranted: notifications.weekly_bonus,
        CreditsGranted: notifications.credits_granted,
        CreditsGrantRefused: notifications.grant_refused,
    }
    fast = FastPaths(runtime.engine, notifications, mail_committed, recent_jobs)
    fast_paths: dict[type[Event], FastPath] = {
        JobCreated: fast.created,
        JobQueued: fast.queued,
        JobStarted: fast.started,
        JobProgress: fast.progress,
        JobSucceeded: fast.succeeded,
    }
    for event_type, use_case in routes.items():
        on = runtime.consumer.on(event_type, fast_path=fast_paths.get(event_type))
        on(wake_sender_after_commit(use_case))

    @runtime.consumer.on(PresetsChanged)
    async def presets_changed(event: PresetsChanged, uow: UnitOfWork) -> None:
        backends.forget_catalog()
