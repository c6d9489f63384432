"""Billing's use cases: each decides on the facts it expects or reads, and hands its guarded
change, with the events it causes, to the caller's unit of work.

As a rule a message is one statement (`accounts.apply`): the change, the ledger entry, the
message's mark and the events, committed at once. When the guard misses (the facts were not as
expected, or moved meanwhile) nothing was written: the use case reads, decides again and
applies what it decided, a refusal included.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from billing import accounts, payments, versions
from billing.accounts import Credit
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
)
from billing.models import PaymentType
from billing.settings import BillingSettings
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
from messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

TRIES = 3
"""Reads and decisions before a use case whose facts keep moving gives the message back."""


async def debit_job(event: JobCreated, uow: UnitOfWork) -> None:
    """Take the job's price once, never below zero (a zero price debits zero).

    As a rule the account can pay: one statement moves the balance, writes the ledger entry,
    marks the message and sends BalanceDebited with the balance it left. Otherwise the facts
    decide: the job was debited or closed already (nothing to do), there is no such account,
    or the balance is short (DebitRejected, and a zero entry under the job's debit key).
    """
    key = debit_key(event.job_id)
    for _ in range(TRIES):
        versions.emit(
            uow,
            BalanceDebited(
                job_id=event.job_id, user_id=event.user_id, amount=event.price, balance=0
            ),
            fill={"balance": "balance_after"},
        )
        debit = accounts.move(
            -event.price, key, LedgerKind.debit, user_id=event.user_id, job_id=event.job_id
        )
        if await accounts.apply(uow, *debit) is not None:
            return
        found = await accounts.facts(uow, key, user_id=event.user_id)
        if found.applied:
            log.info("job %s was already debited or closed; nothing to do", event.job_id)
            return
        if found.user_id is None:
            _reject(uow, event, DebitRejectReason.unknown_account, balance=0)
            return
        if found.balance is None:  # a legacy account without a balance holds no entries
            _reject(uow, event, DebitRejectReason.insufficient_funds, balance=0)
            return
        if found.balance >= event.price:
            continue  # money came meanwhile: debit again
        # The answer is final (jobs fails the job): a zero entry on the debit key keeps a
        # replay of this JobCreated, after a top-up and after the inbox forgot it, from
        # charging a job that will never run.
        _reject(
            uow,
            event,
            DebitRejectReason.insufficient_funds,
            balance=found.balance,
            fill={"balance": "balance_after", "shortfall": "shortfall"},
        )
        refusal = accounts.refusal(
            event.user_id,
            event.price,
            key,
            job_id=event.job_id,
            reason=f"refused: {DebitRejectReason.insufficient_funds.value}",
        )
        if await accounts.apply(uow, *refusal) is not None:
            return
    raise RuntimeError(f"the debit of job {event.job_id} kept moving under its decision")


def _reject(
    uow: UnitOfWork,
    event: JobCreated,
    reason: DebitRejectReason,
    *,
    balance: Decimal | int,
    fill: dict[str, str] | None = None,
) -> None:
    log.info("debit of job %s rejected: %s", event.job_id, reason.value)
    versions.emit(
        uow,
        DebitRejected(
            job_id=event.job_id,
            user_id=event.user_id,
            reason=reason,
            price=event.price,
            balance=balance,
            shortfall=shortfall(balance, event.price),
        ),
        fill=fill,
    )


async def refund_job(job_id: int, user_id: int, uow: UnitOfWork, settings: BillingSettings) -> None:
    """Give back exactly what was debited for the job, once, and only if it was debited.

    A job may close (canceled, failed) before its JobCreated reaches us: its debit key then
    gets a zero entry, so the debit that arrives later finds the job settled and takes
    nothing. Debit and closing race on that one unique key; the loser reads again and decides
    again (a close that lost to the debit refunds it).
    """
    closing = False
    for _ in range(TRIES):
        debited = await accounts.entry(uow, debit_key(job_id))
        if debited is None:
            if closing:
                log.warning("job %s closed for user %s, who has no account", job_id, user_id)
                return
            closing = True
            close = accounts.move(
                0,
                debit_key(job_id),
                LedgerKind.debit,
                user_id=user_id,
                job_id=job_id,
                reason="closed before its debit",
            )
            if await accounts.apply(uow, *close) is not None:
                log.info("job %s closed before its debit; it will not be charged", job_id)
                return
            continue  # the debit committed meanwhile (refund it), or there is no account
        if debited.amount == 0:
            log.info("job %s: nothing was debited, nothing to refund", job_id)
            return
        await _refund(job_id, debited, uow, settings)
        return
    raise RuntimeError(f"the close of job {job_id} kept moving under its decision")


async def _refund(
    job_id: int, debited: accounts.Entry, uow: UnitOfWork, settings: BillingSettings
) -> None:
    amount = int(-debited.amount)  # a debit takes a price: whole credits
    if debited.telegram_id is not None:
        versions.emit(
            uow,
            BalanceRefunded(
                job_id=job_id,
                user_id=debited.user_id,
                telegram_id=debited.telegram_id,
                amount=amount,
                balance=0,
            ),
            fill={"balance": "balance_after"},
        )
    refund = accounts.move(
        amount,
        refund_key(job_id),
        LedgerKind.refund,
        user_id=debited.user_id,
        job_id=job_id,
        credit=Credit(
            PaymentType.refund,
            amount_kopecks=amount * settings.kopecks_per_credit,
            description=f"refund for job {job_id}",
        ),
    )
    if await accounts.apply(uow, *refund) is None:
        log.info("job %s was already refunded; nothing to do", job_id)
    elif debited.telegram_id is None:
        log.warning("job %s refunded to user %s who has no telegram id", job_id, debited.user_id)


async def ensure_account(
    uow: UnitOfWork, telegram_id: int, username: str | None, welcome_credits: int
) -> Account:
    """Open the account with its welcome credits, or refresh its username: one statement."""
    opened = await uow.apply(*accounts.open_account(telegram_id, username, welcome_credits))
    assert opened is not None  # an upsert always yields its row
    return Account(
        user_id=opened.user_id,
        telegram_id=telegram_id,
        username=username,
        balance=opened.balance or 0,
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
    balance: Decimal | None = None
    """The balance after the entry; the current one when it was refused."""


async def adjust_balance(
    uow: UnitOfWork,
    *,
    telegram_id: int,
    credits: int,
    reason: str,
    key: str,
    announce: Callable[[], None] = lambda: None,
) -> Adjustment:
    """A manual ledger entry (kind `adjustment`) on one account, once per key, never below zero.

    `announce` emits the events that go out with the entry (filled from its row: `user_id`,
    `balance`); a refusal forgets them.
    """
    announce()
    adjustment = accounts.move(
        credits, key, LedgerKind.adjustment, telegram_id=telegram_id, reason=reason
    )
    moved = await accounts.apply(uow, *adjustment)
    if moved is not None:
        return Adjustment(AdjustmentOutcome.applied, moved.user_id, moved.balance_after)
    found = await accounts.facts(uow, key, telegram_id=telegram_id)
    if found.user_id is None:
        return Adjustment(AdjustmentOutcome.unknown_account)
    outcome = AdjustmentOutcome.already_applied if found.applied else AdjustmentOutcome.below_zero
    return Adjustment(outcome, found.user_id, found.balance)


async def grant_credits(event: CreditsGrantRequested, uow: UnitOfWork) -> None:
    """Credit an admin's grant once per request id, or refuse it for an unknown account."""
    note = event.reason.strip() or "no reason given"

    def announce() -> None:
        granted = CreditsGranted(
            request_id=event.request_id,
            admin_telegram_id=event.admin_telegram_id,
            user_id=1,  # placeholders: `fill` takes both from the entry's row
            telegram_id=event.telegram_id,
            credits=event.credits,
            balance=0,
        )
        versions.emit(
            uow,
            granted,
            correlation_id=str(event.request_id),
            fill={"user_id": "user_id", "balance": "balance_after"},
        )

    adjusted = await adjust_balance(
        uow,
        telegram_id=event.telegram_id,
        credits=event.credits,
        reason=f"/grant by admin {event.admin_telegram_id}: {note}",
        key=grant_key(event.request_id),
        announce=announce,
    )
    if adjusted.outcome is AdjustmentOutcome.already_applied:
        log.info("grant %s was already applied; nothing to do", event.request_id)
        return
    if adjusted.outcome is AdjustmentOutcome.applied:
        log.info(
            "admin %s granted %s credits to telegram %s (grant %s)",
            event.admin_telegram_id,
            event.credits,
            event.telegram_id,
            event.request_id,
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


Announce = Callable[[Settlement, LocalPayment], None]
"""Emits what goes out with a settlement (an operator's answer): called with each decision and
the row it was made on, again when a miss makes it decide again (the miss forgot the first)."""


async def settle_payment(
    uow: UnitOfWork,
    local: LocalPayment,
    remote: RemotePayment,
    *,
    reason: str | None = None,
    announce: Announce | None = None,
) -> Outcome:
    """Apply YooKassa's verified status to our row: pending -> succeeded | cancelled, once,
    each as one statement with its ledger entry, legacy log row and event (a cancel's reason:
    `reason`, or YooKassa's). A payment we expired and the buyer paid after all is credited."""
    decision = settle(local.status, remote.status)
    if announce is not None:
        announce(decision, local)
    if decision is Settlement.credit:
        credits = local.credits or 0
        if local.telegram_id is not None and credits > 0:
            versions.emit(
                uow,
                PaymentSucceeded(
                    payment_id=local.id,
                    user_id=local.user_id,
                    telegram_id=local.telegram_id,
                    amount_kopecks=local.amount_kopecks,
                    credits=credits,
                    balance=0,
                ),
                correlation_id=local.correlation_id,
                fill={"balance": "balance_after"},
            )
        if await accounts.apply(uow, *payments.credit(local, remote)) is not None:
            if local.status != "pending":
                log.warning("payment %s was %s here but paid after all: credited", local.id,
                            local.status)  # fmt: skip
            return Outcome(decision, credited=True)
        # Settled meanwhile: by a concurrent notification (done), or expired by the
        # reconciler, which found it pending just before the buyer paid (credit it still).
        return await _settled_meanwhile(uow, local, remote, reason, announce)
    if decision is Settlement.cancel:
        _emit_failed(uow, local, reason or remote.cancellation_reason or "canceled")
        if await accounts.apply(uow, payments.cancel(local, remote)) is None:
            return await _settled_meanwhile(uow, local, remote, reason, announce)
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


async def _settled_meanwhile(
    uow: UnitOfWork,
    local: LocalPayment,
    remote: RemotePayment,
    reason: str | None,
    announce: Announce | None,
) -> Outcome:
    """The change missed (and was forgotten with what it emitted): the row moved since it was
    read, so decide again on the row as it is now."""
    now = await payments.find(uow, payments.by_id(local.id))
    if now is None:
        return Outcome(Settlement.done, credited=False)
    if now.status == local.status:
        raise RuntimeError(f"payment {local.id}: settling refused although it is {now.status}")
    return await settle_payment(uow, now, remote, reason=reason, announce=announce)


def _emit_failed(uow: UnitOfWork, local: LocalPayment, reason: str) -> None:
    if local.telegram_id is None:
        return
    uow.emit(
        PaymentFailed(
            payment_id=local.id,
            user_id=local.user_id,
            telegram_id=local.telegram_id,
            reason=_reason(reason),
        ),
        correlation_id=local.correlation_id,
    )


def _reason(text: str) -> str:
    cleaned = "".join(
        c if (c.isascii() and c.isalnum()) or c in "_." else "_" for c in text.lower()
    )[:100]
    return cleaned or "canceled"
