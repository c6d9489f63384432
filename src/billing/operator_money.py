"""What the backend API asks of billing about money: refunds and re-checks (commands), the
ledger audit (a read).

A refund is `refunds.refund_topup`, the use case `imagebot billing refund` runs, keyed by the
command's request id, so a redelivered command finishes the same refund and never makes a
second one. YooKassa out of reach fails the message (it is delivered again, then dead-lettered
and replayable): the audit entry stays pending until the refund is decided. A re-check asks
YooKassa for the payment and settles it as the webhook and the reconciler do
(`services.settle_payment`, in the command's own unit of work with its answer).
"""

from __future__ import annotations

import logging

from billing import accounts, payments
from billing.domain import LocalPayment, Settlement, our_status, payment_mismatches
from billing.refunds import refund_topup
from billing.services import settle_payment
from billing.settings import YooKassaSettings
from billing.yookassa_gateway import (
    PaymentNotFoundError,
    PaymentProvider,
    ProviderRejectedError,
    ProviderUnavailableError,
)
from contracts.events import (
    PaymentRechecked,
    PaymentRecheckRequested,
    TopUpRefundDecided,
    TopUpRefundRequested,
)
from contracts.rpc import AuditDrift, LedgerAudit, LedgerAuditResult
from messaging.runtime import ServiceRuntime
from messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

DRIFTS_SHOWN = 100


def refund_key(request_id: object) -> str:
    """An operator's refund: the use case's key, one refund per command however often it
    arrives (the CLI's keys are the operator's own words, so they never look like this)."""
    return f"operator:{request_id}"


class OperatorMoney:
    def __init__(
        self, runtime: ServiceRuntime, provider: PaymentProvider, yookassa: YooKassaSettings
    ) -> None:
        self._runtime = runtime
        self._provider = provider
        self._yookassa = yookassa

    async def refund(self, event: TopUpRefundRequested, uow: UnitOfWork) -> None:
        """Refund a top-up for an operator, once; answered with TopUpRefundDecided."""
        result = await refund_topup(
            self._runtime.unit_of_work,
            self._provider,
            self._yookassa,
            payment_id=event.payment_id,
            key=refund_key(event.request_id),
            amount_kopecks=event.amount,
            reason=event.reason.strip(),
        )
        log.info(
            "operator %s: refund of payment %s (request %s): %s",
            event.operator,
            event.payment_id,
            event.request_id,
            result.outcome.value,
        )
        uow.emit(
            TopUpRefundDecided(
                request_id=event.request_id,
                operator=event.operator,
                payment_id=event.payment_id,
                outcome=result.outcome.value,
                refund_payment_id=result.refund_payment_id,
                amount=result.amount_kopecks,
                credits=result.credits,
                shortfall=result.shortfall,
                detail=result.detail[:2000],
            ),
            correlation_id=str(event.request_id),
        )

    async def recheck(self, event: PaymentRecheckRequested, uow: UnitOfWork) -> None:
        """Ask YooKassa about a top-up now and apply its answer; answered with
        PaymentRechecked."""

        def answer(outcome: str, **facts: str | None) -> None:
            uow.emit(
                PaymentRechecked(
                    request_id=event.request_id,
                    operator=event.operator,
                    payment_id=event.payment_id,
                    outcome=outcome,
                    **facts,
                ),
                correlation_id=str(event.request_id),
            )

        local = await payments.find(uow, payments.topup_by_id(event.payment_id))
        if local is None:
            answer("unknown_payment")
            return
        if local.yookassa_id is None:
            detail = "not a YooKassa payment (Telegram Stars, or never created there)"
            answer("not_at_yookassa", status_before=local.status, detail=detail)
            return
        try:
            remote = await self._provider.fetch(local.yookassa_id)
        except (PaymentNotFoundError, ProviderRejectedError, ProviderUnavailableError) as exc:
            outcome = {
                PaymentNotFoundError: "not_found",
                ProviderRejectedError: "provider_rejected",
            }.get(type(exc), "provider_unavailable")
            answer(outcome, status_before=local.status, detail=str(exc)[:2000])
            return
        if problems := payment_mismatches(local, remote):
            log.error("recheck: payment %s contradicts the API: %s", local.id, problems)
            answer(
                "mismatch",
                status_before=local.status,
                provider_status=remote.status,
                detail="; ".join(problems)[:2000],
            )
            return

        # The answer goes out in the same commit as the change (settle_payment commits it):
        # what YooKassa's status means for the row, decided before it is applied, and decided
        # again on the row as it is now when a notification settled it first (the miss
        # forgets the first answer with the change).
        def announce(decision: Settlement, now: LocalPayment) -> None:
            moved = decision in (Settlement.credit, Settlement.cancel)
            answer(
                decision.value,
                status_before=local.status,
                status=our_status(remote.status) if moved else now.status,
                provider_status=remote.status,
            )

        settled = await settle_payment(uow, local, remote, announce=announce)
        log.info(
            "operator %s re-checked payment %s: %s", event.operator, local.id, settled.settlement
        )

    async def audit(self, request: LedgerAudit) -> LedgerAuditResult:
        """`imagebot billing audit`'s check: every balance against its ledger sum, in one
        snapshot (concurrent traffic cannot fake a drift)."""
        async with self._runtime.engine.connect() as connection:
            await connection.execution_options(isolation_level="REPEATABLE READ")
            async with connection.begin():
                checked = await accounts.count_accounts(connection)
                drifts = await accounts.drifts(connection)
        return LedgerAuditResult(
            checked=checked,
            drifting=len(drifts),
            drifts=[
                AuditDrift(
                    user_id=drift.user_id,
                    telegram_id=drift.telegram_id or None,
                    balance=drift.balance,
                    ledger_sum=drift.ledger_sum,
                )
                for drift in drifts[:DRIFTS_SHOWN]
            ],
        )


def register(
    runtime: ServiceRuntime, provider: PaymentProvider, yookassa: YooKassaSettings
) -> None:
    """The backend API's money commands and the audit, on billing's consumer and rpc queues."""
    money = OperatorMoney(runtime, provider, yookassa)
    runtime.consumer.on(TopUpRefundRequested)(money.refund)
    runtime.consumer.on(PaymentRecheckRequested)(money.recheck)
    runtime.serve(LedgerAudit, money.audit)
