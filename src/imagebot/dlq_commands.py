"""`imagebot dlq ...`: list, show, replay and purge the DLQs of AMQP_URL / AMQP_NAMESPACE."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer

from contracts.topology import build_topology
from messaging.dead_letters import DeadLetterError, DeadLetterQueues, describe, select
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
    """Every DLQ: how many messages, the oldest first death, and why they died (last death)."""
    summaries = _run(_queues().summaries())
    width = max([len("DLQ"), *(len(summary.dlq) for summary in summaries)])
    typer.echo(f"{'DLQ':{width}}  {'MESSAGES':>8}  {'OLDEST (UTC)':19}  REASONS")
    for summary in summaries:
        reasons = ", ".join(f"{reason} {n}" for reason, n in summary.reasons.most_common())
        oldest = (
            summary.oldest.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if summary.oldest else "-"
        )
        typer.echo(f"{summary.dlq:{width}}  {summary.count:>8}  {oldest:19}  {reasons or '-'}")


@dlq_app.command("show")
def show(
    queue: QueueArg,
    limit: Annotated[int, typer.Option(min=1, help="At most this many messages.")] = 10,
) -> None:
    """The first messages of a DLQ: envelope, headers, last and first death, deaths, replays."""
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
    wait: Annotated[
        float,
        typer.Option(
            min=0, help="Seconds to watch the DLQ for replayed messages that die again (0: none)."
        ),
    ] = 5.0,
) -> None:
    """Send the messages in the DLQ now back to the queue they died in, once each.

    Each leaves the DLQ once the broker confirmed it; then the DLQ is watched for `--wait`
    seconds and the replayed messages that died again are counted. Exit code 1 when a selected
    message was left in place, an --id was not found, or a replayed message died again.
    """
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    with ExitStack() as stack:
        bars: list[Any] = []

        def start(total: int) -> None:
            bar = typer.progressbar(length=total, label="replaying", show_pos=True, file=sys.stderr)
            bars.append(stack.enter_context(bar))

        report = _run(
            _queues().replay(
                queue,
                select(ids or (), event_type, since),
                dry_run=dry_run,
                wait_s=wait,
                on_start=start,
                on_progress=lambda _: bars[0].update(1),
                on_wait=lambda seconds: typer.echo(
                    f"\nwatching for replayed messages that die again ({seconds:g}s at most)",
                    err=True,
                ),
            )
        )
    matched = len(report.matched)
    if dry_run:
        typer.echo(
            f"would replay {len(report.replayed)} of {matched} matching message(s) "
            f"({report.found} in {report.dlq}); nothing was moved"
        )
        for key in report.replayed:
            typer.echo(f"  {key}")
    else:
        typer.echo(
            f"replayed {len(report.replayed)} of {matched} matching message(s) "
            f"({report.found} were in {report.dlq})"
        )
        if report.died_again is None:
            typer.echo("died again: not watched (--wait 0)")
        else:
            typer.echo(
                f"died again within {report.wait_s:g}s: {len(report.died_again)}"
                + (f" (back in {report.dlq})" if report.died_again else "")
            )
        typer.echo(
            f"left in {report.dlq}: {report.left} "
            f"({len(report.refused)} refused, {report.found - matched} not selected)"
        )
    for refusal in report.refused:
        typer.echo(f"{'would leave' if dry_run else 'left'} in place: {refusal}", err=True)
    missing = sorted(set(ids or ()) - set(report.present))
    for key in missing:
        typer.echo(f"not found in the DLQ: {key}", err=True)
    unselected = sorted(set(ids or ()) & set(report.present) - set(report.matched))
    for key in unselected:
        typer.echo(f"in the DLQ but not selected (--type/--since): {key}", err=True)
    if report.refused or missing or unselected or report.died_again:
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
    keys: list[str] | None = list(ids) if ids else None
    if not yes:
        letters = [letter for letter in _run(queues.show(queue, None)) if select(ids or ())(letter)]
        if not letters:
            typer.echo(f"nothing to purge in {dlq}")
            _report_missing(ids, 0)
            return
        shown = ", ".join(letter.key for letter in letters[:5]) + (
            ", ..." if len(letters) > 5 else ""
        )
        if not typer.confirm(f"Delete {len(letters)} message(s) from {dlq} for good ({shown})?"):
            raise typer.Exit(1)
        keys = [letter.key for letter in letters]
    purged = _run(queues.purge(queue, keys))
    typer.echo(f"purged {purged} message(s) from {dlq}")
    _report_missing(ids, purged)


def _report_missing(ids: list[str] | None, purged: int) -> None:
    if ids and purged < len(set(ids)):
        typer.echo(f"{len(set(ids)) - purged} id(s) were not in the DLQ", err=True)
        raise typer.Exit(1)


async def _resolve(queues: DeadLetterQueues, queue: str) -> str:
    return queues.resolve(queue)
