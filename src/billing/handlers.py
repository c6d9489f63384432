"""Thin entry points: events from the billing queue (one handler each) and request/reply calls."""

from __future__ import annotations

from billing import erasure, farming, operators, services, stars, stars_refunds
from billing.settings import BillingSettings
from billing.topups import TopUps
from contracts.events import (
    CreditsGrantRequested,
    JobCanceled,
    JobCreated,
    JobFailed,
    StarsPaymentReceived,
    StarsRefundSettled,
    TopUpRequested,
    TopUpRequestedV1,
)
from contracts.rpc import (
    Account,
    EnsureAccount,
    GetReceiptPolicy,
    ListStarsPackages,
    ListTopUpPackages,
    ReceiptPolicy,
    StarsPackages,
    TopUpPackages,
)
from messaging.runtime import ServiceRuntime
from messaging.unit_of_work import UnitOfWork


def register(runtime: ServiceRuntime, settings: BillingSettings, topups: TopUps) -> None:
    consumer = runtime.consumer

    @consumer.on(JobCreated)
    async def job_created(event: JobCreated, uow: UnitOfWork) -> None:
        await services.debit_job(event, uow)

    @consumer.on(JobFailed)
    async def job_failed(event: JobFailed, uow: UnitOfWork) -> None:
        await services.refund_job(event.job_id, event.user_id, uow, settings)

    @consumer.on(JobCanceled)
    async def job_canceled(event: JobCanceled, uow: UnitOfWork) -> None:
        await services.refund_job(event.job_id, event.user_id, uow, settings)

    @consumer.on(TopUpRequested)
    async def topup_requested(event: TopUpRequested, uow: UnitOfWork) -> None:
        await topups.request(event, uow)

    @consumer.on(TopUpRequestedV1)  # from gateways before v2: Russian, no receipt contact
    async def topup_requested_v1(event: TopUpRequestedV1, uow: UnitOfWork) -> None:
        await topups.request(event.latest(), uow)

    @consumer.on(StarsPaymentReceived)
    async def stars_paid(event: StarsPaymentReceived, uow: UnitOfWork) -> None:
        await stars.credit(event, uow, settings)

    @consumer.on(StarsRefundSettled)  # the gateway's answer to refundStarPayment
    async def stars_refund_settled(event: StarsRefundSettled, uow: UnitOfWork) -> None:
        await stars_refunds.settle(event, uow)

    @consumer.on(CreditsGrantRequested)
    async def grant_requested(event: CreditsGrantRequested, uow: UnitOfWork) -> None:
        await services.grant_credits(event, uow)

    async def ensure_account(request: EnsureAccount) -> Account:
        async with runtime.unit_of_work() as uow:
            welcome = await farming.welcome_for(uow, request.telegram_id, settings)
            return await services.ensure_account(
                uow, request.telegram_id, request.username, welcome
            )

    async def list_packages(request: ListTopUpPackages) -> TopUpPackages:
        return TopUpPackages(packages=list(settings.packages))

    async def list_stars_packages(request: ListStarsPackages) -> StarsPackages:
        return StarsPackages(packages=list(settings.stars))

    async def receipt_policy(request: GetReceiptPolicy) -> ReceiptPolicy:
        return ReceiptPolicy(receipts=topups.receipts)

    runtime.serve(EnsureAccount, ensure_account)
    runtime.serve(GetReceiptPolicy, receipt_policy)
    runtime.serve(ListStarsPackages, list_stars_packages)
    runtime.serve(ListTopUpPackages, list_packages)
    operators.register(runtime)  # the backend API's adjustments and reads
    erasure.register(runtime)  # /deletemydata: the username goes, payments stay
