"""Billing's use cases: each runs inside the caller's unit of work and emits its events there."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from billing import accounts, payments
from billing.domain import (
    LedgerKind,
    LocalPayment,
    RemotePayment,
    Settlement,
    debit_key,
    grant_key,
    refund_key,
    settle,
    shortfall,
    topup_key,
    welcome_key,
)
from billing.settings import BillingSettings
from contracts.envelope import RawEnvelope, new_envelope
from contracts.events import (
    BalanceDebited,
    BalanceRefunded,
    CreditsGranted,
    CreditsGrantRefused,
    CreditsGrantRequested,
    DebitRejected,
    DebitRejectReason,
    GrantRefusedReason,
    JobCreated,
    PaymentFailed,
    PaymentSucceeded,
)
from contracts.rpc import Account
from messaging.runtime import ServiceRuntime
from messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)


async def debit_job_at_once(runtime: ServiceRuntime, event: JobCreated, cause: RawEnvelope) -> bool:
    """The common debit as one autocommitted statement; False leaves it to `debit_job`."""
    if event.price <= 0:
        return False
    debited = new_envelope(
        BalanceDebited(job_id=event.job_id, user_id=event.user_id, amount=event.price, balance=0),
        source=runtime.name,
        cause=cause,
    )
    async with runtime.autocommit.connect() as connection:
        balance = await accounts.debit_at_once(
            connection,
            user_id=event.user_id,
            price=event.price,
            key=debit_key(event.job_id),
            job_id=event.job_id,
            event_id=cause.id,
            event_type=cause.type,
            debited=debited,
            routing_key=BalanceDebited.event_type,
        )
    if balance is None:
        return False
    written = debited.model_copy(update={"data": {**debited.data, "balance": balance}})
    runtime.relay.committed([(BalanceDebited.event_type, written)])
    return True


async def debit_job(event: JobCreated, uow: UnitOfWork) -> None:
    """Take the job's price once, never below zero; a zero price debits zero."""
    moved = await accounts.move(
        uow.session,
        user_id=event.user_id,
        amount=-event.price,
        key=debit_key(event.job_id),
        kind=LedgerKind.debit,
        job_id=event.job_id,
    )
    if moved is not None:
        uow.emit(
            BalanceDebited(
                job_id=event.job_id,
                user_id=event.user_id,
                amount=event.price,
                balance=moved.balance,
            )
        )
        return
    if await accounts.applied(uow.session, debit_key(event.job_id)):
        log.info("job %s was already debited or closed; nothing to do", event.job_id)
        return
    account = await accounts.state(uow.session, event.user_id)
    reason = (
        DebitRejectReason.insufficient_funds
        if account.exists
        else DebitRejectReason.unknown_account
    )
    log.info("debit of job %s rejected: %s", event.job_id, reason.value)
    if account.exists:
        # The answer is final (jobs fails the job): a zero entry on the debit key keeps a
        # replay of this JobCreated, after a top-up and after the inbox forgot it, from
        # charging a job that will never run.
        await accounts.move(
            uow.session,
            user_id=event.user_id,
            amount=0,
            key=debit_key(event.job_id),
            kind=LedgerKind.debit,
            job_id=event.job_id,
            reason=f"refused: {reason.value}",
        )
    uow.emit(
        DebitRejected(
            job_id=event.job_id,
            user_id=event.user_id,
            reason=reason,
            price=event.price,
            balance=account.balance,
            shortfall=shortfall(account.balance, event.price),
        )
    )


async def refund_job(job_id: int, user_id: int, uow: UnitOfWork, settings: BillingSettings) -> None:
    """Give back exactly what was debited for the job, once, and only if it was debited.

    A job may close (canceled, failed) before its JobCreated reaches us: its debit key then
    gets a zero entry, so the debit that arrives later finds the job settled and takes
    nothing. Debit and closing race on that one unique key; the loser rolls back and retries.
    """
    debited = await accounts.entry_amount(uow.session, debit_key(job_id))
    if debited is None:
        closed = await accounts.move(
            uow.session,
            user_id=user_id,
            amount=0,
            key=debit_key(job_id),
            kind=LedgerKind.debit,
            job_id=job_id,
            reason="closed before its debit",
        )
        if closed is not None:
            log.info("job %s closed before its debit; it will not be charged", job_id)
            return
        # The debit committed while we waited for the account's row: refund it.
        debited = await accounts.entry_amount(uow.session, debit_key(job_id))
        if debited is None:
            log.warning("job %s closed for user %s, who has no account", job_id, user_id)
            return
    if debited[1] == 0:
        log.info("job %s: nothing was debited, nothing to refund", job_id)
        return
    user_id, amount = debited[0], -debited[1]
    moved = await accounts.move(
        uow.session,
        user_id=user_id,
        amount=amount,
        key=refund_key(job_id),
        kind=LedgerKind.refund,
        job_id=job_id,
    )
    if moved is None:
        log.info("job %s was already refunded; nothing to do", job_id)
        return
    await payments.record_credit(
        uow.session,
        user_id=user_id,
        kind="refund",
        amount_kopecks=amount * settings.kopecks_per_credit,
        description=f"refund for job {job_id}",
    )
    if moved.telegram_id is None:
        log.warning("job %s refunded to user %s who has no telegram id", job_id, user_id)
        return
    uow.emit(
        BalanceRefunded(
            job_id=job_id,
            user_id=user_id,
            telegram_id=moved.telegram_id,
            amount=amount,
            balance=moved.balance,
        )
    )


async def ensure_account(
    uow: UnitOfWork, telegram_id: int, username: str | None, welcome_credits: int
) -> Account:
    """Open the account with its welcome credits, or refresh its username."""
    opened = await accounts.ensure(uow.session, telegram_id, username)
    balance = opened.balance
    if opened.created and welcome_credits > 0:
        moved = await accounts.move(
            uow.session,
            user_id=opened.user_id,
            amount=welcome_credits,
            key=welcome_key(opened.user_id),
            kind=LedgerKind.welcome,
        )
        balance = moved.balance if moved is not None else balance
    return Account(
        user_id=opened.user_id,
        telegram_id=telegram_id,
        username=username,
        balance=balance,
        created=opened.created,
    )


class AdjustmentOutcome(enum.Enum):
    applied = "applied"
    unknown_account = "unknown_account"
    already_applied = "already_applied"
    below_zero = "below_zero"


@dataclass(frozen=True)
class Adjustment:
    outcome: AdjustmentOutcome
    user_id: int | None = None
    balance: int | None = None
    """The balance after the entry; the current one when it was refused."""


async def adjust_balance(
    session: AsyncSession, *, telegram_id: int, credits: int, reason: str, key: str
) -> Adjustment:
    """A manual ledger entry (kind `adjustment`) on one account, once per key, never below zero."""
    user_id = await accounts.user_id_of(session, telegram_id)
    if user_id is None:
        return Adjustment(AdjustmentOutcome.unknown_account)
    moved = await accounts.move(
        session,
        user_id=user_id,
        amount=credits,
        key=key,
        kind=LedgerKind.adjustment,
        reason=reason,
    )
    if moved is not None:
        return Adjustment(AdjustmentOutcome.applied, user_id, moved.balance)
    current = await accounts.state(session, user_id)
    outcome = (
        AdjustmentOutcome.already_applied
        if await accounts.applied(session, key)
        else AdjustmentOutcome.below_zero
    )
    return Adjustment(outcome, user_id, current.balance)


async def grant_credits(event: CreditsGrantRequested, uow: UnitOfWork) -> None:
    """Credit an admin's grant once per request id, or refuse it for an unknown account."""
    note = event.reason.strip() or "no reason given"
    adjusted = await adjust_balance(
        uow.session,
        telegram_id=event.telegram_id,
        credits=event.credits,
        reason=f"/grant by admin {event.admin_telegram_id}: {note}",
        key=grant_key(event.request_id),
    )
    if adjusted.outcome is AdjustmentOutcome.already_applied:
        log.info("grant %s was already applied; nothing to do", event.request_id)
        return
    if adjusted.outcome is AdjustmentOutcome.applied:
        assert adjusted.user_id is not None
        assert adjusted.balance is not None
        log.info(
            "admin %s granted %s credits to telegram %s (grant %s)",
            event.admin_telegram_id,
            event.credits,
            event.telegram_id,
            event.request_id,
        )
        uow.emit(
            CreditsGranted(
                request_id=event.request_id,
                admin_telegram_id=event.admin_telegram_id,
                user_id=adjusted.user_id,
                telegram_id=event.telegram_id,
                credits=event.credits,
                balance=adjusted.balance,
            ),
            correlation_id=str(event.request_id),
        )
        return
    if adjusted.outcome is not AdjustmentOutcome.unknown_account:
        raise RuntimeError(f"grant {event.request_id}: a positive entry refused ({adjusted})")
    log.warning(
        "grant %s by admin %s refused: no account with telegram id %s",
        event.request_id,
        event.admin_telegram_id,
        event.telegram_id,
    )
    uow.emit(
        CreditsGrantRefused(
            request_id=event.request_id,
            admin_telegram_id=event.admin_telegram_id,
            telegram_id=event.telegram_id,
            credits=event.credits,
            reason=GrantRefusedReason.unknown_account,
        ),
        correlation_id=str(event.request_id),
    )


@dataclass(frozen=True)
class Outcome:
    settlement: Settlement
    credited: bool


async def settle_payment(uow: UnitOfWork, local: LocalPayment, remote: RemotePayment) -> Outcome:
    """Apply YooKassa's verified status to our row: pending -> succeeded | cancelled, once."""
    decision = settle(local.status, remote.status)
    if decision is Settlement.credit:
        if await _credit(uow, local, remote):
            return Outcome(decision, credited=True)
        return Outcome(Settlement.done, credited=False)  # a concurrent notification won
    if decision is Settlement.cancel:
        if not await payments.transition(uow.session, local.id, "cancelled"):
            return Outcome(Settlement.done, credited=False)
        await payments.log_legacy(
            uow.session,
            user_id=local.user_id,
            rubles=local.amount_kopecks / 100,
            status="canceled",
            yookassa_id=remote.id,
        )
        _emit_failed(uow, local, remote.cancellation_reason or "canceled")
        return Outcome(decision, credited=False)
    if decision is Settlement.conflict:
        log.error(
            "payment %s (%s) is %s here but %s at YooKassa: left as it is, needs a human",
            local.id,
            remote.id,
            local.status,
            remote.status,
        )
    return Outcome(decision, credited=False)


async def _credit(uow: UnitOfWork, local: LocalPayment, remote: RemotePayment) -> bool:
    if not await payments.transition(
        uow.session,
        local.id,
        "succeeded",
        method_type=remote.method_type,
        method_details=remote.method_details,
    ):
        return False  # a concurrent notification got there first
    credits = local.credits or 0
    moved = await accounts.move(
        uow.session,
        user_id=local.user_id,
        amount=credits,
        key=topup_key(remote.id),
        kind=LedgerKind.topup,
        payment_id=local.id,
    )
    if moved is None:
        raise RuntimeError(f"payment {local.id}: credit refused although the row was pending")
    await payments.log_legacy(
        uow.session,
        user_id=local.user_id,
        rubles=local.amount_kopecks / 100,
        status="succeeded",
        yookassa_id=remote.id,
    )
    if moved.telegram_id is not None and credits > 0:
        uow.emit(
            PaymentSucceeded(
                payment_id=local.id,
                user_id=local.user_id,
                telegram_id=moved.telegram_id,
                amount_kopecks=local.amount_kopecks,
                credits=credits,
                balance=moved.balance,
            )
        )
    return True


def _emit_failed(uow: UnitOfWork, local: LocalPayment, reason: str) -> None:
    if local.telegram_id is None:
        return
    uow.emit(
        PaymentFailed(
            payment_id=local.id,
            user_id=local.user_id,
            telegram_id=local.telegram_id,
            reason=_reason(reason),
        )
    )


def _reason(text: str) -> str:
    cleaned = "".join(
        c if (c.isascii() and c.isalnum()) or c in "_." else "_" for c in text.lower()
    )[:100]
    return cleaned or "canceled"
