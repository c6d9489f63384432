"""`imagebot dlq ...`: list, show, replay and purge the DLQs of AMQP_URL / AMQP_NAMESPACE."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer

from contracts.topology import build_topology
from imagebot.dlq import DeadLetterError, DeadLetterQueues, describe, select
from messaging.settings import BrokerSettings

dlq_app = typer.Typer(help="Dead-letter queues: list, show, replay, purge.", no_args_is_help=True)

T = TypeVar("T")
QueueArg = Annotated[
    str, typer.Argument(help="A queue or its DLQ: imagebot.jobs, imagebot.jobs.dlq, jobs, gpu.X.")
]
IdsOption = Annotated[list[str] | None, typer.Option("--id", help="Only these message ids.")]


def _queues() -> DeadLetterQueues:
    settings = BrokerSettings()
    return DeadLetterQueues(settings.url.get_secret_value(), build_topology(settings.namespace))


def _run(operation: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(operation)
    except DeadLetterError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@dlq_app.command("list")
def list_queues() -> None:
    """Every DLQ: how many messages, the oldest, and why they died."""
    for summary in _run(_queues().summaries()):
        reasons = ", ".join(f"{reason} {n}" for reason, n in summary.reasons.most_common())
        oldest = summary.oldest.isoformat(timespec="seconds") if summary.oldest else "-"
        typer.echo(f"{summary.dlq:45} {summary.count:6}  oldest {oldest}  {reasons}")


@dlq_app.command("show")
def show(
    queue: QueueArg,
    limit: Annotated[int, typer.Option(min=1, help="At most this many messages.")] = 10,
) -> None:
    """The first messages of a DLQ: envelope, headers, death reason and count."""
    letters = _run(_queues().show(queue, limit))
    if not letters:
        typer.echo("(empty)")
    for letter in letters:
        typer.echo(describe(letter) + "\n")


@dlq_app.command("replay")
def replay(
    queue: QueueArg,
    ids: IdsOption = None,
    event_type: Annotated[str | None, typer.Option("--type", help="Only this event type.")] = None,
    since: Annotated[
        datetime | None, typer.Option(help="Only messages dead since then (UTC if no zone).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Say what would be replayed; move nothing.")
    ] = False,
) -> None:
    """Send messages back to the queue they died in; each leaves the DLQ once confirmed."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    queues = _queues()
    with typer.progressbar(length=0, label="replaying", show_pos=True) as bar:
        report = _run(
            queues.replay(
                queue,
                select(ids or (), event_type, since),
                dry_run=dry_run,
                on_progress=lambda _: bar.update(1),
            )
        )
    verb = "would replay" if dry_run else "replayed"
    typer.echo(f"{verb} {len(report.replayed)} of {report.matched} matching message(s)")
    for refusal in report.refused:
        typer.echo(f"left in place: {refusal}", err=True)
    missing = set(ids or ()) - set(report.replayed) - {r.split(":")[0] for r in report.refused}
    for message_id in sorted(missing):
        typer.echo(f"not found in the DLQ: {message_id}", err=True)
    if report.refused or missing:
        raise typer.Exit(1)


@dlq_app.command("purge")
def purge(
    queue: QueueArg,
    ids: IdsOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Delete messages from a DLQ for good (all of them, or only `--id`s)."""
    queues = _queues()
    dlq = _run(_resolve(queues, queue))
    what = f"{len(ids)} message(s) from" if ids else "every message of"
    if not yes and not typer.confirm(f"Delete {what} {dlq} for good?"):
        raise typer.Exit(1)
    purged = _run(queues.purge(queue, ids or ()))
    typer.echo(f"purged {purged} message(s) from {dlq}")
    if ids and purged < len(set(ids)):
        typer.echo(f"{len(set(ids)) - purged} id(s) were not in the DLQ", err=True)
        raise typer.Exit(1)


async def _resolve(queues: DeadLetterQueues, queue: str) -> str:
    return queues.resolve(queue)
