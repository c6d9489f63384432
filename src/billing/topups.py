"""Top-ups: a package chosen -> a YooKassa payment -> a pending `payments` row -> PaymentCreated.

Creating the YooKassa payment is a side effect outside our database, so it is fenced on both
sides: the pending row (and so our payment id) is committed first and found again on every
redelivery, and the payment is created with an Idempotence-Key derived from the request id. A
crash at any point therefore reuses the same row, the same key and so the same YooKassa payment.
"""

from __future__ import annotations

import logging

from billing import accounts, payments, receipts
from billing.domain import LocalPayment, RemotePayment, creation_key
from billing.settings import BillingSettings, YooKassaSettings
from billing.yookassa_gateway import PaymentDraft, PaymentProvider, ProviderRejectedError
from contracts.events import PaymentCreated, PaymentFailed, TopUpRequested
from contracts.rpc import TopUpPackage
from messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)


class TopUps:
    def __init__(
        self,
        provider: PaymentProvider,
        billing: BillingSettings,
        yookassa: YooKassaSettings,
    ) -> None:
        self._provider = provider
        self._billing = billing
        self._yookassa = yookassa

    @property
    def receipts(self) -> bool:
        """Whether every payment carries a 54-FZ receipt (and so needs the buyer's contact)."""
        return self._yookassa.receipts

    def package(self, package_id: str) -> TopUpPackage | None:
        return next((p for p in self._billing.packages if p.package_id == package_id), None)

    async def request(self, event: TopUpRequested, uow: UnitOfWork) -> None:
        """Create the YooKassa payment of a chosen package, once per request.

        Everything runs on the message's own connection (a second one taken while it is held
        can hold every pooled connection under a burst): the pending row commits on its own,
        then YooKassa is called, then the YooKassa id is attached with PaymentCreated and the
        message's mark in one statement.
        """
        package = self.package(event.package_id)
        if package is None:
            log.warning("top-up %s: unknown package %r", event.request_id, event.package_id)
            uow.emit(self._failed(event, "unknown_package"), correlation_id=_correlation(event))
            return
        contact = event.email or event.phone
        if self._yookassa.receipts and contact is None:
            log.warning(
                "top-up %s: receipts are on and the buyer gave no contact", event.request_id
            )
            failed = self._failed(event, "receipt_contact_missing")
            uow.emit(failed, correlation_id=_correlation(event))
            return
        local = await self._open(uow, event, package)
        if local is None:
            log.warning("top-up %s: unknown account %s", event.request_id, event.user_id)
            uow.emit(self._failed(event, "unknown_account"), correlation_id=_correlation(event))
            return
        if local.yookassa_id is not None or local.status != "pending":
            log.info("top-up %s was already handled (payment %s)", event.request_id, local.id)
            return
        try:
            remote = await self._create_remote(event, package, local)
        except ProviderRejectedError as exc:
            log.error("top-up %s: YooKassa refused the payment: %s", event.request_id, exc)
            failed = self._failed(event, "provider_rejected", local.id)
            uow.emit(failed, correlation_id=_correlation(event))
            if await accounts.apply(uow, payments.close(local, "failed", "failed")) is None:
                log.info("top-up %s: payment %s was settled meanwhile", event.request_id, local.id)
            return
        await self._announce(uow, event, package, local, remote)

    async def _create_remote(
        self, event: TopUpRequested, package: TopUpPackage, local: LocalPayment
    ) -> RemotePayment:
        description = self._billing.description(event.language, package.credits)
        draft = PaymentDraft(
            amount_kopecks=local.amount_kopecks,
            currency=local.currency,
            description=description,
            metadata={
                "payment_id": str(local.id),
                "user_id": str(local.user_id),
                "request_id": str(event.request_id),
            },
            return_url=self._yookassa.payment_return_url,
            receipt=receipts.receipt(
                self._yookassa,
                local.receipt_contact,
                description=description,
                amount_kopecks=local.amount_kopecks,
                currency=local.currency,
            ),
        )
        remote = await self._provider.create(draft, creation_key(event.request_id))
        if not remote.confirmation_url:
            raise ProviderRejectedError(f"payment {remote.id} came without a confirmation url")
        return remote

    async def _announce(
        self,
        uow: UnitOfWork,
        event: TopUpRequested,
        package: TopUpPackage,
        local: LocalPayment,
        remote: RemotePayment,
    ) -> None:
        assert remote.confirmation_url is not None
        uow.emit(
            PaymentCreated(
                request_id=event.request_id,
                payment_id=local.id,
                user_id=local.user_id,
                chat_id=event.chat_id,
                amount_kopecks=local.amount_kopecks,
                credits=package.credits,
                confirmation_url=remote.confirmation_url,
            ),
            correlation_id=_correlation(event),
        )
        attach = payments.attach_yookassa(local.id, remote.id, remote.confirmation_url)
        if await accounts.apply(uow, attach) is None:
            log.info("top-up %s: payment %s was settled meanwhile", event.request_id, local.id)

    async def _open(
        self, uow: UnitOfWork, event: TopUpRequested, package: TopUpPackage
    ) -> LocalPayment | None:
        """The request's pending row, committed before YooKassa is called (see the module
        docstring); None when there is no such account."""
        await uow.commit_alone(
            payments.open_topup(
                request_id=event.request_id,
                user_id=event.user_id,
                amount_kopecks=package.amount_kopecks,
                credits=package.credits,
                currency=self._billing.currency,
                description=f"top-up {package.package_id}: {package.credits} credits",
                receipt_contact=event.email or event.phone,
            )
        )
        return await payments.find(uow, payments.by_request(event.request_id))

    @staticmethod
    def _failed(event: TopUpRequested, reason: str, payment_id: int | None = None) -> PaymentFailed:
        return PaymentFailed(
            payment_id=payment_id,
            request_id=event.request_id,
            user_id=event.user_id,
            telegram_id=event.telegram_id,
            reason=reason,
        )


def _correlation(event: TopUpRequested) -> str:
    """Every event of one top-up carries its request id as correlation id (PaymentSucceeded
    too, which comes later from the webhook or the reconciler with no message to inherit it
    from), whatever correlation id the TopUpRequested that asked for it came with."""
    return str(event.request_id)
