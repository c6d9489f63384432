"""`imagebot moderation ...`: operators' bans, suspensions and the moderation's audit log.

Written through the gateway's own tables (it owns them), each decision logged with the operator
and the reason; a running gateway sees a change within its few seconds of caching."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, TypeVar

import typer

from bot_gateway.models import DELIVERY
from bot_gateway.restrictions import Restrictions, utcnow
from messaging.database import create_engine
from messaging.settings import DatabaseSettings
from messaging.unit_of_work import UnitOfWork
from moderation import ModerationSettings

app = typer.Typer(help="Moderation: bans, suspensions, the audit log.", no_args_is_help=True)

T = TypeVar("T")
Operator = Annotated[
    str, typer.Option(help="Who decides (the audit log keeps it); empty: the login name.")
]
Reason = Annotated[str, typer.Option(help="Why; the audit log keeps it, a ban shows it.")]


def _run(action: Callable[[Restrictions], Awaitable[T]]) -> T:
    async def run() -> T:
        engine = create_engine(DatabaseSettings(), application_name="imagebot-moderation")
        try:
            restrictions = Restrictions.of(
                lambda: UnitOfWork(engine, DELIVERY, source="bot_gateway"), ModerationSettings()
            )
            return await action(restrictions)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _operator(operator: str) -> str:
    if operator.strip():
        return operator.strip()
    try:
        return getpass.getuser()
    except OSError:  # no login name (a container's nameless uid)
        return "operator"


def _reason(reason: str) -> str:
    if not reason.strip():
        raise typer.BadParameter("a --reason is needed")
    return reason.strip()


@app.command()
def ban(telegram_id: int, reason: Reason, operator: Operator = "") -> None:
    """Close the bot to a user until they are unbanned."""
    _run(lambda r: r.ban(telegram_id, _reason(reason), _operator(operator)))
    typer.echo(f"banned {telegram_id}: {reason}")


@app.command()
def suspend(
    telegram_id: int,
    hours: Annotated[float, typer.Option(min=0.01, help="For how long.")],
    reason: Reason,
    operator: Operator = "",
) -> None:
    """Suspend a user's requests for a time."""
    until = utcnow() + timedelta(hours=hours)
    _run(lambda r: r.suspend(telegram_id, until, _reason(reason), _operator(operator)))
    typer.echo(f"suspended {telegram_id} until {until:%Y-%m-%d %H:%M} UTC")


@app.command()
def unban(telegram_id: int, reason: Reason, operator: Operator = "") -> None:
    """Lift a ban or a suspension."""
    if not _run(lambda r: r.unban(telegram_id, _reason(reason), _operator(operator))):
        typer.echo(f"{telegram_id} is neither banned nor suspended", err=True)
        raise typer.Exit(1)
    typer.echo(f"unbanned {telegram_id}")


@app.command()
def log(
    telegram_id: Annotated[
        int | None, typer.Argument(help="One user's; all when left out.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
) -> None:
    """The newest decisions first: when, who, subject, decision, category, detail."""
    for row in _run(lambda r: r.log(telegram_id, limit)):
        typer.echo(
            f"{row.created_at:%Y-%m-%d %H:%M:%S} {row.telegram_id} {row.actor} {row.subject} "
            f"{row.decision} {row.category or '-'} {row.detail}"
        )
