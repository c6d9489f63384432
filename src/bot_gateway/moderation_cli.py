"""`imagebot moderation ...`: operators' bans, suspensions, the moderation queue (held
requests: approve or reject) and the moderation's audit log.

Written through the gateway's own tables (it owns them) and its outbox (the events a decision
announces, the job an approval requests, the user's message: a running gateway relays and sends
them), each decision logged with the operator and the reason; a running gateway sees a change
within its few seconds of caching."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import typer
from aiogram.utils.i18n import I18n

from bot_gateway.models import DELIVERY
from bot_gateway.moderation_queue import ModerationQueue
from bot_gateway.restrictions import Restrictions, utcnow
from contracts.rpc import ListHeld
from messaging.database import create_engine
from messaging.settings import DatabaseSettings
from messaging.unit_of_work import UnitOfWork
from moderation import ModerationSettings
from object_store import StorageSettings, create_object_store

app = typer.Typer(
    help="Moderation: bans, suspensions, the queue of held requests, the audit log.",
    no_args_is_help=True,
)
LOCALES = Path(__file__).parent / "locales"

T = TypeVar("T")
Operator = Annotated[
    str, typer.Option(help="Who decides (the audit log keeps it); empty: the login name.")
]
Reason = Annotated[str, typer.Option(help="Why; the audit log keeps it, a ban shows it.")]


def _run(action: Callable[[Restrictions], Awaitable[T]]) -> T:
    return _run_queue(lambda restrictions, _: action(restrictions))


def _run_queue(action: Callable[[Restrictions, ModerationQueue], Awaitable[T]]) -> T:
    async def run() -> T:
        engine = create_engine(DatabaseSettings(), application_name="imagebot-moderation")
        try:

            def unit_of_work() -> UnitOfWork:
                return UnitOfWork(engine, DELIVERY, source="bot_gateway")

            restrictions = Restrictions.of(unit_of_work, ModerationSettings())
            language = "ru"  # a held request's messages speak its user's language
            queue = ModerationQueue(
                unit_of_work,
                create_object_store(StorageSettings()),
                I18n(path=LOCALES, default_locale=language, domain="messages"),
                default_language=language,
                restrictions=restrictions,
            )
            return await action(restrictions, queue)
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


@app.command()
def queue(
    state: Annotated[
        str, typer.Option(help="held (waiting, oldest first), approved, rejected or all.")
    ] = "held",
    telegram_id: Annotated[int | None, typer.Option(help="One user's.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
) -> None:
    """The moderation queue: requests held for a decision (id, when, user, what, scores)."""
    if state not in ("held", "approved", "rejected", "all"):
        raise typer.BadParameter("held, approved, rejected or all", param_hint="--state")
    request = ListHeld(
        state=None if state == "all" else state,
        telegram_id=telegram_id,
        limit=limit,
    )
    page = _run_queue(lambda _, q: q.page(request))
    for item in page.items:
        scores = ", ".join(f"{label}={score:.2f}" for label, score in sorted(item.scores.items()))
        decided = f" {item.decided_by}: {item.reason}" if item.decided_by else ""
        typer.echo(
            f"#{item.item_id} {item.created_at:%Y-%m-%d %H:%M:%S} {item.state} "
            f"{item.telegram_id} «{item.title}» {item.price} credits, {item.images} photo(s), "
            f"{item.category or '-'} ({scores}){decided}"
        )
    typer.echo(f"{page.total} in all")


def _decide(
    item_id: int, verdict: Literal["approve", "reject"], reason: str, operator: str
) -> None:
    decision = _run_queue(
        lambda _, q: q.decide(item_id, verdict, _operator(operator), _reason(reason))
    )
    if decision.outcome == "unknown_item":
        typer.echo(f"no held request #{item_id}", err=True)
        raise typer.Exit(1)
    if decision.outcome == "already_decided":
        typer.echo(f"#{item_id} was {decision.state} already", err=True)
        raise typer.Exit(1)
    typer.echo(f"#{item_id} {decision.outcome}")


@app.command()
def approve(item_id: int, reason: Reason, operator: Operator = "") -> None:
    """Let a held request go ahead: its job is requested as the user asked (at the price they
    were shown)."""
    _decide(item_id, "approve", reason, operator)


@app.command()
def reject(item_id: int, reason: Reason, operator: Operator = "") -> None:
    """Refuse a held request: the user is told; nothing was charged."""
    _decide(item_id, "reject", reason, operator)
