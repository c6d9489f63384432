"""`imagebot billing ...`: operator tools that go through the ledger like everything else."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

import typer

from billing import accounts
from billing.domain import LedgerKind, adjustment_key
from messaging.database import create_engine, create_session_factory
from messaging.settings import DatabaseSettings

app = typer.Typer(help="Billing: accounts, balances and the ledger.", no_args_is_help=True)


@app.command()
def audit() -> None:
    """Check that every balance equals its ledger sum; exit 1 on any drift."""
    checked, drifts = asyncio.run(_audit())
    for drift in drifts:
        typer.echo(
            f"DRIFT user {drift.user_id} (telegram {drift.telegram_id}): "
            f"balance {drift.balance} != ledger {drift.ledger_sum}",
            err=True,
        )
    typer.echo(f"audited {checked} accounts: {len(drifts)} drifting")
    if drifts:
        raise typer.Exit(1)


async def _audit() -> tuple[int, list[accounts.Drift]]:
    engine = create_engine(DatabaseSettings())
    try:
        async with create_session_factory(engine)() as session, session.begin():
            # One snapshot for both numbers, so concurrent traffic cannot fake a drift.
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            return await accounts.count_accounts(session), await accounts.drifts(session)
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
    typer.echo(f"adjusted telegram {telegram_id} by {credits}: balance {balance} (key {token})")


async def _adjust(telegram_id: int, credits: int, reason: str, token: str) -> int:
    engine = create_engine(DatabaseSettings())
    try:
        async with create_session_factory(engine)() as session, session.begin():
            user_id = await accounts.user_id_of(session, telegram_id)
            if user_id is None:
                typer.echo(f"no account with telegram id {telegram_id}", err=True)
                raise typer.Exit(1)
            moved = await accounts.move(
                session,
                user_id=user_id,
                amount=credits,
                key=adjustment_key(token),
                kind=LedgerKind.adjustment,
                reason=reason,
            )
            if moved is None:
                current = await accounts.state(session, user_id)
                done = await accounts.applied(session, adjustment_key(token))
                why = "key already applied" if done else "the balance would go below zero"
                typer.echo(f"refused: {why} (balance {current.balance})", err=True)
                raise typer.Exit(1)
            return moved.balance
    finally:
        await engine.dispose()
