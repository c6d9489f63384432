"""Top-ups: a package chosen -> a YooKassa payment -> a pending `payments` row -> PaymentCreated.

Creating the YooKassa payment is a side effect outside our database, so it is fenced on both
sides: the pending row (and so our payment id) is committed first and found again on every
redelivery, and the payment is created with an Idempotence-Key derived from the request id. A
crash at any point therefore reuses the same row, the same key and so the same YooKassa payment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import accounts, payments
from billing.domain import LocalPayment, RemotePayment, creation_key
from billing.settings import BillingSettings, YooKassaSettings
from billing.yookassa_gateway import PaymentDraft, PaymentProvider, ProviderRejectedError
from contracts.envelope import RawEnvelope
from contracts.events import PaymentCreated, PaymentFailed, TopUpRequested
from contracts.rpc import TopUpPackage
from messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)


class TopUps:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        provider: PaymentProvider,
        billing: BillingSettings,
        yookassa: YooKassaSettings,
    ) -> None:
        self._sessions = sessions
        self._provider = provider
        self._billing = billing
        self._yookassa = yookassa

    def package(self, package_id: str) -> TopUpPackage | None:
        return next((p for p in self._billing.packages if p.package_id == package_id), None)

    async def request(self, event: TopUpRequested, uow: UnitOfWork) -> None:
        """Create the YooKassa payment of a chosen package, once per request."""
        package = self.package(event.package_id)
        if package is None:
            log.warning("top-up %s: unknown package %r", event.request_id, event.package_id)
            uow.emit(self._failed(event, "unknown_package"))
            return
        # In the message's own transaction: a second connection taken while this one is held
        # can deadlock the pool. The fast path, which always runs first, has committed the
        # pending row already (it is found here); should it not have, YooKassa's
        # Idempotence-Key (from the request id) still makes one payment of every retry.
        local = await self._open_in(uow.session, event, package)
        if local is None:
            log.warning("top-up %s: unknown account %s", event.request_id, event.user_id)
            uow.emit(self._failed(event, "unknown_account"))
            return
        if local.yookassa_id is not None or local.status != "pending":
            log.info("top-up %s was already handled (payment %s)", event.request_id, local.id)
            return
        try:
            remote = await self._create_remote(event, package, local)
        except ProviderRejectedError as exc:
            log.error("top-up %s: YooKassa refused the payment: %s", event.request_id, exc)
            if await payments.transition(uow.session, local.id, "failed"):
                uow.emit(self._failed(event, "provider_rejected", local.id))
            return
        await self._announce(uow, event, package, local, remote)

    async def request_at_once(
        self, event: TopUpRequested, envelope: RawEnvelope, unit_of_work: Callable[[], UnitOfWork]
    ) -> bool:
        """The common top-up as the consumer's fast path: False leaves it to `request`.

        The pending row commits first (its own transaction), then YooKassa is called, then the
        inbox mark and PaymentCreated commit: one connection at a time, and the fence of the
        module docstring. `request`, the rest (refusals, repeats), works in the message's unit
        of work alone: a second connection taken while one is held can hold every pooled
        connection under a burst (seen under `make chaos`).
        """
        package = self.package(event.package_id)
        if package is None:
            return False
        local = await self._open(event, package)
        if local is None or local.yookassa_id is not None or local.status != "pending":
            return False
        try:
            remote = await self._create_remote(event, package, local)
        except ProviderRejectedError:
            return False  # `request` asks again (same key) and records the refusal
        async with unit_of_work() as uow:
            uow.cause = envelope
            if not await uow.claim(envelope.id, envelope.type):
                return True  # a copy of this message got here first: nothing more to do
            await self._announce(uow, event, package, local, remote)
            await uow.commit()
        return True

    async def _create_remote(
        self, event: TopUpRequested, package: TopUpPackage, local: LocalPayment
    ) -> RemotePayment:
        draft = PaymentDraft(
            amount_kopecks=local.amount_kopecks,
            currency=local.currency,
            description=f"{package.credits} credits",
            metadata={
                "payment_id": str(local.id),
                "user_id": str(local.user_id),
                "request_id": str(event.request_id),
            },
            return_url=self._yookassa.return_url,
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
        if not await payments.attach_yookassa(
            uow.session, local.id, remote.id, remote.confirmation_url
        ):
            log.info("top-up %s: payment %s was settled meanwhile", event.request_id, local.id)
            return
        uow.emit(
            PaymentCreated(
                request_id=event.request_id,
                payment_id=local.id,
                user_id=local.user_id,
                chat_id=event.chat_id,
                amount_kopecks=local.amount_kopecks,
                credits=package.credits,
                confirmation_url=remote.confirmation_url,
            )
        )

    async def _open(self, event: TopUpRequested, package: TopUpPackage) -> LocalPayment | None:
        # Its own transaction, committed before YooKassa is called: see the module docstring.
        async with self._sessions() as session, session.begin():
            return await self._open_in(session, event, package)

    async def _open_in(
        self, session: AsyncSession, event: TopUpRequested, package: TopUpPackage
    ) -> LocalPayment | None:
        if not (await accounts.state(session, event.user_id)).exists:
            return None
        return await payments.open_topup(
            session,
            request_id=event.request_id,
            user_id=event.user_id,
            amount_kopecks=package.amount_kopecks,
            credits=package.credits,
            currency=self._billing.currency,
            description=f"top-up {package.package_id}: {package.credits} credits",
        )

    @staticmethod
    def _failed(event: TopUpRequested, reason: str, payment_id: int | None = None) -> PaymentFailed:
        return PaymentFailed(
            payment_id=payment_id,
            request_id=event.request_id,
            user_id=event.user_id,
            telegram_id=event.telegram_id,
            reason=reason,
        )
