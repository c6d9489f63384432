"""Reconciliation: pending payments re-checked through the API, so a missed webhook still
credits; payments that never got created, or stayed unpaid too long, are closed.

Closing an unpaid payment first cancels at YooKassa what its API can cancel (a payment
`waiting_for_capture`); one still `pending` there is closed on our side only, and should the
buyer pay it after all, its notification credits it (`domain.settle`).

A refund whose creation YooKassa never answered is asked again with its own Idempotence-Key
while YooKassa still honours it; one YooKassa refuses is closed failed with YooKassa's words."""

from __future__ import annotations

import logging
from collections.abc import Callable

from billing import payments
from billing.domain import REFUND_KEY_LIFE_S, LocalPayment, cancel_key, payment_mismatches
from billing.refunds import RefundOutcome, apply_refund, resend
from billing.services import settle_payment
from billing.settings import BillingSettings, YooKassaSettings
from billing.yookassa_gateway import PaymentNotFoundError, PaymentProvider, ProviderRejectedError
from contracts.events import PaymentFailed
from messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self,
        unit_of_work: Callable[[], UnitOfWork],
        provider: PaymentProvider,
        settings: BillingSettings,
        yookassa: YooKassaSettings,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._provider = provider
        self._settings = settings
        self._yookassa = yookassa

    async def run_once(self) -> int:
        """Check every pending payment and refund older than the configured age; how many
        were settled."""
        return await self._payments() + await self._unsent_refunds() + await self._refunds()

    async def _unsent_refunds(self) -> int:
        """A refund every call to create went unanswered for (the operator's command then
        dead-lettered) is asked again, as the same request; past its key's life it cannot be
        asked safely (a new refund could follow) and is closed failed for an operator."""
        async with self._unit_of_work() as uow:
            due = (
                await uow.read(
                    payments.unsent_refunds_older_than(
                        self._settings.refund_retry_after_s, self._settings.reconcile_batch
                    )
                )
            ).all()
        settled = 0
        for row in due:
            refund = payments.local(row)
            if float(row.age_s) >= REFUND_KEY_LIFE_S:
                log.error("reconcile: refund %s never reached YooKassa in time: closed", refund.id)
                refusal = "YooKassa never answered while its Idempotence-Key held"
                closed = payments.close(refund, "failed", "refund_failed", refusal=refusal)
                async with self._unit_of_work() as uow:
                    settled += await uow.apply(closed) is not None
                continue
            try:
                result = await resend(
                    self._unit_of_work,
                    self._provider,
                    self._yookassa,
                    refund,
                    row.refund_of,
                    row.description,
                )
            except Exception:  # one refund's trouble must not hold up the others
                log.exception("reconcile: asking again for refund %s failed", refund.id)
                async with self._unit_of_work() as uow:
                    await uow.apply(payments.mark_checked(refund.id))
                continue
            log.info("reconcile: refund %s asked again: %s", refund.id, result.outcome.value)
            settled += result.outcome is not RefundOutcome.pending
        return settled

    async def _refunds(self) -> int:
        """A refund YooKassa answered `pending` is applied by its notification; one missed is
        applied here (or closed, when YooKassa canceled it)."""
        async with self._unit_of_work() as uow:
            due = (
                await uow.read(
                    payments.pending_refunds_older_than(
                        self._settings.reconcile_min_age_s, self._settings.reconcile_batch
                    )
                )
            ).all()
        settled = 0
        for row in due:
            refund = payments.local(row)
            assert refund.yookassa_id is not None
            try:
                remote = await self._provider.fetch_refund(refund.yookassa_id)
            except Exception:  # one refund's trouble must not hold up the others
                log.exception("reconcile: checking refund %s failed", refund.id)
                remote = None
            async with self._unit_of_work() as uow:
                if remote is None or remote.status == "pending":
                    await uow.apply(payments.mark_checked(refund.id))
                    continue
                if remote.status == "succeeded":
                    await apply_refund(uow, refund, remote)
                else:
                    await uow.apply(payments.close(refund, "failed", "refund_failed"))
            log.info("reconcile: refund %s: %s", refund.id, remote.status)
            settled += 1
        return settled

    async def _payments(self) -> int:
        async with self._unit_of_work() as uow:
            due = (
                await uow.read(
                    payments.pending_older_than(
                        self._settings.reconcile_min_age_s, self._settings.reconcile_batch
                    )
                )
            ).all()
        settled = 0
        for row in due:
            local, age_s = payments.local(row), float(row.age_s)
            try:
                done = await self._check(local, age_s)
            except Exception:  # one payment's trouble must not hold up the others
                log.exception("reconcile: checking payment %s failed", local.id)
                done = 0
            if not done:
                async with self._unit_of_work() as uow:
                    await uow.apply(payments.mark_checked(local.id))
            settled += done
        return settled

    async def _check(self, local: LocalPayment, age_s: float) -> int:
        if local.yookassa_id is None:
            # Creation never finished (YooKassa down through every retry): the user never saw
            # a confirmation URL, so nothing can have been paid.
            return await self._close(
                local, "failed", "provider_unavailable", logged_as="failed", unbound_only=True
            )
        try:
            remote = await self._provider.fetch(local.yookassa_id)
        except (PaymentNotFoundError, ProviderRejectedError) as exc:
            log.error("reconcile: payment %s (%s): %s", local.id, local.yookassa_id, exc)
            return 0
        if problems := payment_mismatches(local, remote):
            log.error("reconcile: payment %s contradicts the API: %s", local.id, problems)
            return 0
        reason = None
        if remote.status in ("pending", "waiting_for_capture"):
            if age_s < self._settings.pending_expiry_s:
                return 0
            if remote.status == "pending":  # YooKassa's API cannot cancel it: only we close it
                return await self._close(local, "cancelled", "expired", logged_as="expired")
            try:
                remote = await self._provider.cancel(remote.id, cancel_key(remote.id))
            except ProviderRejectedError as exc:
                log.error("reconcile: cancelling payment %s at YooKassa: %s", local.id, exc)
                return 0
            reason = "expired"
        async with self._unit_of_work() as uow:
            outcome = await settle_payment(uow, local, remote, reason=reason)
            await uow.commit()
        log.info("reconcile: payment %s: %s", local.id, outcome.settlement.value)
        return 1

    async def _close(
        self,
        local: LocalPayment,
        status: str,
        reason: str,
        *,
        logged_as: str,
        unbound_only: bool = False,
    ) -> int:
        async with self._unit_of_work() as uow:
            if local.telegram_id is not None:
                uow.emit(
                    PaymentFailed(
                        payment_id=local.id,
                        user_id=local.user_id,
                        telegram_id=local.telegram_id,
                        reason=reason,
                    ),
                    correlation_id=local.correlation_id,
                )
            closed = payments.close(local, status, logged_as, unbound_only=unbound_only)
            if await uow.apply(closed) is None:
                return 0
        log.warning("reconcile: payment %s closed as %s (%s)", local.id, status, reason)
        return 1
