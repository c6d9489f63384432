"""`imagebot billing ...`: operator tools that go through the ledger like everything else."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Annotated, Any

import typer

from billing import accounts, payments, services
from billing.domain import adjustment_key, amount_value, to_kopecks
from billing.models import DELIVERY
from contracts.events import credits_text
from messaging.database import create_engine
from messaging.settings import DatabaseSettings
from messaging.unit_of_work import UnitOfWork

app = typer.Typer(help="Billing: accounts, balances and the ledger.", no_args_is_help=True)


@app.command()
def audit() -> None:
    """Check that every balance equals its ledger sum; exit 1 on any drift."""
    checked, drifts = asyncio.run(_audit())
    for drift in drifts:
        typer.echo(
            f"DRIFT user {drift.user_id} (telegram {drift.telegram_id}): "
            f"balance {_credits(drift.balance)} != ledger {credits_text(drift.ledger_sum)}",
            err=True,
        )
    typer.echo(f"audited {checked} accounts: {len(drifts)} drifting")
    if drifts:
        raise typer.Exit(1)


async def _audit() -> tuple[int, list[accounts.Drift]]:
    engine = create_engine(DatabaseSettings())
    try:
        async with engine.connect() as connection:
            # One snapshot for both numbers, so concurrent traffic cannot fake a drift.
            await connection.execution_options(isolation_level="REPEATABLE READ")
            async with connection.begin():
                return await accounts.count_accounts(connection), await accounts.drifts(connection)
    finally:
        await engine.dispose()


@app.command()
def adjust(
    telegram_id: Annotated[int, typer.Option(help="The account's Telegram id.")],
    credits: Annotated[int, typer.Option(help="Credits to add (negative to take).")],
    reason: Annotated[str, typer.Option(help="Why; kept in the ledger.")],
    key: Annotated[
        str | None, typer.Option(help="Idempotency key; re-running with it changes nothing.")
    ] = None,
) -> None:
    """Correct one balance by a manual ledger entry."""
    if credits == 0 or not reason.strip():
        raise typer.BadParameter("need non-zero --credits and a --reason")
    token = key or str(uuid.uuid4())
    balance = asyncio.run(_adjust(telegram_id, credits, reason.strip(), token))
    typer.echo(
        f"adjusted telegram {telegram_id} by {credits}: balance {credits_text(balance)} "
        f"(key {token})"
    )


def _credits(balance: Decimal | None) -> str:
    return "none" if balance is None else credits_text(balance)


async def _adjust(telegram_id: int, credits: int, reason: str, token: str) -> Decimal:
    engine = create_engine(DatabaseSettings())
    try:
        async with UnitOfWork(engine, DELIVERY, source="billing") as uow:
            adjusted = await services.adjust_balance(
                uow,
                telegram_id=telegram_id,
                credits=credits,
                reason=reason,
                key=adjustment_key(token),
            )
    finally:
        await engine.dispose()
    outcome = adjusted.outcome
    if outcome is services.AdjustmentOutcome.unknown_account:
        typer.echo(f"no account with telegram id {telegram_id}", err=True)
        raise typer.Exit(1)
    if outcome is not services.AdjustmentOutcome.applied:
        why = {
            services.AdjustmentOutcome.already_applied: "key already applied",
            services.AdjustmentOutcome.below_zero: "the balance would go below zero",
        }[outcome]
        typer.echo(f"refused: {why} (balance {_credits(adjusted.balance)})", err=True)
        raise typer.Exit(1)
    assert adjusted.balance is not None
    return adjusted.balance


@app.command()
def bonus() -> None:
    """Grant this week's bonus now to every eligible account still without it.

    The same round billing's loop runs every BONUS_INTERVAL_S (and as safe beside it: one
    ledger key per account and week); the events leave through billing's outbox.
    """
    granted = asyncio.run(_bonus())
    typer.echo(f"weekly bonus granted to {granted} accounts")


async def _bonus() -> int:
    from billing.bonus import WeeklyBonus
    from billing.settings import BillingSettings, BonusSettings

    engine = create_engine(DatabaseSettings())
    try:
        weekly = WeeklyBonus(
            lambda: UnitOfWork(engine, DELIVERY, source="billing"),
            BonusSettings(),
            BillingSettings(),
        )
        return await weekly.run_once()
    finally:
        await engine.dispose()


@app.command()
def refund(
    key: Annotated[
        str,
        typer.Option(
            help="The refund request's key: asking again with it finishes, never repeats."
        ),
    ],
    amount: Annotated[
        str | None, typer.Option(help="Rubles to refund (123.45); all that is left when omitted.")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why; the buyer sees it at YooKassa.")] = "",
    wait: Annotated[
        float,
        typer.Option(help="Seconds to wait for the gateway's answer to a Stars refund."),
    ] = 30.0,
    payment_id: Annotated[int | None, typer.Option(help="Our top-up's id (`payments.id`).")] = None,
    charge: Annotated[
        str | None,
        typer.Option(
            help="Or a Stars top-up's telegram_payment_charge_id (Telegram's receipt shows it "
            "to the buyer)."
        ),
    ] = None,
) -> None:
    """Refund a top-up to the buyer, its credits back out: YooKassa whole or part, Telegram
    Stars whole (through the gateway's refundStarPayment)."""
    from billing.refunds import RefundOutcome

    if (payment_id is None) == (charge is None):
        raise typer.BadParameter("name the top-up by --payment-id or by --charge")
    kopecks = None if amount is None else to_kopecks(amount)
    found = asyncio.run(_refund(payment_id, charge, key, kopecks, reason.strip(), wait))
    if found is None:
        typer.echo(f"no Telegram Stars top-up with charge {charge}", err=True)
        raise typer.Exit(1)
    payment_id, result = found
    money = (
        f"{result.amount_kopecks} XTR"
        if result.currency == "XTR"
        else f"{amount_value(result.amount_kopecks)} {result.currency}"
    )
    line = (
        f"refund of payment {payment_id} (key {key}): {result.outcome.value}, "
        f"{money}, {result.credits} credits bought back"
    )
    if result.shortfall:
        line += f", {result.shortfall} of them spent already (shortfall)"
    if result.detail:
        line += f" ({result.detail})"
    ok = result.outcome in (RefundOutcome.refunded, RefundOutcome.pending)
    typer.echo(line, err=not ok)
    if not ok:
        raise typer.Exit(1)


async def _refund(
    payment_id: int | None,
    charge: str | None,
    key: str,
    kopecks: int | None,
    reason: str,
    wait_s: float,
) -> tuple[int, Any] | None:
    from billing.domain import stars_request
    from billing.refunds import RefundOutcome, refund_topup, where_it_stands
    from billing.settings import YooKassaSettings
    from billing.yookassa_gateway import YooKassaGateway

    engine = create_engine(DatabaseSettings())
    settings = YooKassaSettings()

    def unit_of_work() -> UnitOfWork:
        return UnitOfWork(engine, DELIVERY, source="billing")

    try:
        if payment_id is None:
            assert charge is not None
            async with unit_of_work() as uow:
                topup = await payments.find(uow, payments.by_request(stars_request(charge)))
            if topup is None:
                return None
            payment_id = topup.id
        result = await refund_topup(
            unit_of_work,
            YooKassaGateway(settings),
            settings,
            payment_id=payment_id,
            key=key,
            amount_kopecks=kopecks,
            reason=reason,
        )
        deadline = asyncio.get_running_loop().time() + wait_s
        while (  # a Stars refund: billing's service applies the gateway's answer
            result.currency == "XTR"
            and result.outcome is RefundOutcome.pending
            and asyncio.get_running_loop().time() < deadline
        ):
            await asyncio.sleep(0.2)
            result = await where_it_stands(unit_of_work, payment_id, key) or result
        return payment_id, result
    finally:
        await engine.dispose()


@app.command()
def shortfalls() -> None:
    """Refunds whose credits the buyer had spent in part: what the ledger could not take back."""
    rows = asyncio.run(_shortfalls())
    for row in rows:
        typer.echo(
            f"refund {row.refund} of payment {row.payment} (telegram {row.telegram_id}): "
            f"{row.credits} credits bought back, {credits_text(row.taken)} taken, "
            f"shortfall {credits_text(row.shortfall)}"
        )
    total = sum(row.shortfall for row in rows)
    typer.echo(f"{len(rows)} refunds with a shortfall: {credits_text(total)} credits in all")


async def _shortfalls() -> list[Any]:
    engine = create_engine(DatabaseSettings())
    try:
        async with engine.connect() as connection:
            return list(await connection.execute(payments.refund_shortfalls()))
    finally:
        await engine.dispose()
