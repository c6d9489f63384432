"""What the backend API asks of billing: operators' adjustments (commands) and reads (rpc).

An adjustment is a ledger entry of kind `adjustment`, once per request id, never below zero
(`services.adjust_balance`); billing answers each with `CreditsAdjusted` or
`CreditsAdjustmentRefused`. The reads are read-only pages over billing's own tables.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Select, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import payment_totals, versions
from billing.models import LedgerEntry, Payment, PaymentStatus, PaymentType, User
from billing.services import AdjustmentOutcome, adjust_balance
from contracts.events import (
    AdjustmentRefusedReason,
    CreditsAdjusted,
    CreditsAdjustmentRefused,
    CreditsAdjustmentRequested,
)
from contracts.rpc import (
    AccountPage,
    AccountView,
    CurrencyTotal,
    LedgerEntryView,
    LedgerPage,
    ListLedger,
    ListPayments,
    PaymentPage,
    PaymentRecord,
    SearchAccounts,
)
from messaging.rpc import RpcRefusedError
from messaging.runtime import ServiceRuntime
from messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)


def adjustment_key(request_id: object) -> str:
    """An operator's adjustment: one ledger entry per request, however often it arrives."""
    return f"operator:{request_id}"


async def adjust_credits(event: CreditsAdjustmentRequested, uow: UnitOfWork) -> None:
    """Apply an operator's adjustment once, or refuse it (unknown account, below zero)."""

    def announce() -> None:
        versions.emit(
            uow,
            CreditsAdjusted(
                request_id=event.request_id,
                operator=event.operator,
                user_id=1,  # placeholders: `fill` takes both from the entry's row
                telegram_id=event.telegram_id,
                credits=event.credits,
                balance=0,
            ),
            correlation_id=str(event.request_id),
            fill={"user_id": "user_id", "balance": "balance_after"},
        )

    adjusted = await adjust_balance(
        uow,
        telegram_id=event.telegram_id,
        credits=event.credits,
        reason=f"operator {event.operator}: {event.reason.strip()}",
        key=adjustment_key(event.request_id),
        announce=announce,
    )
    if adjusted.outcome is AdjustmentOutcome.already_applied:
        log.info("adjustment %s was already applied; nothing to do", event.request_id)
        return
    if adjusted.outcome is AdjustmentOutcome.applied:
        log.info(
            "operator %s adjusted telegram %s by %s credits (request %s)",
            event.operator,
            event.telegram_id,
            event.credits,
            event.request_id,
        )
        return
    reason = (
        AdjustmentRefusedReason.unknown_account
        if adjusted.outcome is AdjustmentOutcome.unknown_account
        else AdjustmentRefusedReason.below_zero
    )
    log.warning("adjustment %s by %s refused: %s", event.request_id, event.operator, reason)
    versions.emit(
        uow,
        CreditsAdjustmentRefused(
            request_id=event.request_id,
            operator=event.operator,
            telegram_id=event.telegram_id,
            credits=event.credits,
            reason=reason,
            balance=adjusted.balance,
        ),
        correlation_id=str(event.request_id),
    )


COUNT_CAP = 1_000
"""A list's total is counted exactly up to this many rows past the page's start (a count over a
million rows per page view takes longer than the page should); past it, "at least"."""


class OperatorReads:
    """Pages of accounts, ledger entries and payments, with the total matching the filters."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def accounts(self, request: SearchAccounts) -> AccountPage:
        query = select(User)
        if request.telegram_id is not None:
            query = query.where(User.telegram_id == request.telegram_id)
        if request.user_id is not None:
            query = query.where(User.user_id == request.user_id)
        if request.username_prefix is not None:
            # lower(username) LIKE 'prefix%' with the wildcards escaped, in the order of
            # ix_users_username_lower_prefix (migration 0024): a page is the index's next rows
            # whatever the prefix. Newest first, a prefix matching only old users made the walk
            # of the newest pass most of the table (1.2 s at 1,000,000 users)
            prefix = request.username_prefix.lower().lstrip("@")
            query = query.where(
                func.lower(User.username).startswith(prefix, autoescape=True),
            )
        order = (
            text("lower(users.username) USING ~<~, users.user_id DESC")
            if request.username_prefix is not None
            else User.user_id.desc()
        )
        rows, total, exact = await self._page(query, order, request.offset, request.limit)
        return AccountPage(
            accounts=[
                AccountView(
                    user_id=user.user_id,
                    telegram_id=user.telegram_id if user.telegram_id else None,
                    username=user.username,
                    balance=user.balance or 0,
                    created_at=user.created_at,
                )
                for user in rows
            ],
            total=total,
            total_exact=exact,
        )

    async def ledger(self, request: ListLedger) -> LedgerPage:
        query = select(LedgerEntry)
        if request.user_id is not None:
            query = query.where(LedgerEntry.user_id == request.user_id)
        if request.kind is not None:
            query = query.where(LedgerEntry.kind == request.kind)
        rows, total, exact = await self._page(
            query, LedgerEntry.id.desc(), request.offset, request.limit
        )
        return LedgerPage(
            entries=[
                LedgerEntryView(
                    id=entry.id,
                    user_id=entry.user_id,
                    kind=entry.kind,
                    amount=entry.amount,
                    balance_after=entry.balance_after,
                    job_id=entry.job_id,
                    payment_id=entry.payment_id,
                    reason=entry.reason,
                    created_at=entry.created_at,
                )
                for entry in rows
            ],
            total=total,
            total_exact=exact,
        )

    async def payments(self, request: ListPayments) -> PaymentPage:
        query = select(Payment)
        if request.user_id is not None:
            query = query.where(Payment.user_id == request.user_id)
        if request.status is not None:
            try:
                status = PaymentStatus(request.status)
            except ValueError:
                raise RpcRefusedError("invalid_status", request.status) from None
            query = query.where(Payment.status == status)
        if request.payment_id is not None:
            query = query.where(Payment.id == request.payment_id)
        if request.refund_of is not None:
            query = query.where(Payment.refund_of == request.refund_of)
        if request.payment_type is not None:
            query = query.where(Payment.payment_type == PaymentType(request.payment_type))
        if request.currency is not None:
            query = query.where(Payment.currency == request.currency)
        if request.payment_method is not None:
            query = query.where(Payment.payment_method == request.payment_method)
        if request.created_from is not None:
            query = query.where(Payment.created_at >= request.created_from)
        if request.created_until is not None:
            query = query.where(Payment.created_at < request.created_until)
        async with self._sessions() as session:
            sums = await payment_totals.per_currency(session, request, query)
            rows = (
                await session.scalars(
                    query.order_by(Payment.id.desc()).offset(request.offset).limit(request.limit)
                )
            ).all()
        total = sum(count for _, count, _ in sums)
        return PaymentPage(
            totals=[
                CurrencyTotal(currency=currency, payments=count, amount=int(amount))
                for currency, count, amount in sums
            ],
            payments=[
                PaymentRecord(
                    id=payment.id,
                    user_id=payment.user_id,
                    amount_kopecks=payment.amount,
                    currency=payment.currency,
                    status=payment.status.value if payment.status else None,
                    payment_type=payment.payment_type.value if payment.payment_type else None,
                    credits=payment.credits,
                    provider_payment_id=payment.yukassa_payment_id,
                    created_at=payment.created_at,
                    paid_at=payment.paid_at,
                    payment_method=payment.payment_method,
                    refund_of=payment.refund_of,
                )
                for payment in rows
            ],
            total=total,
        )

    async def _page(
        self, query: Select[Any], order: Any, offset: int, limit: int
    ) -> tuple[list[Any], int, bool]:
        """A page of `query` in `order`, and how many rows match: exact up to COUNT_CAP rows
        past the page's start (then True), else that many (False: "at least")."""
        cap = offset + max(limit, COUNT_CAP)
        async with self._sessions() as session:
            counted = await session.scalar(
                select(func.count()).select_from(query.limit(cap + 1).subquery())
            )
            rows = (await session.scalars(query.order_by(order).offset(offset).limit(limit))).all()
        total = int(counted or 0)
        return list(rows), min(total, cap), total <= cap


def register(runtime: ServiceRuntime) -> None:
    """The backend API's command and reads, on billing's consumer and rpc queues."""
    runtime.consumer.on(CreditsAdjustmentRequested)(adjust_credits)
    reads = OperatorReads(runtime.sessions)
    runtime.serve(SearchAccounts, reads.accounts)
    runtime.serve(ListLedger, reads.ledger)
    runtime.serve(ListPayments, reads.payments)
