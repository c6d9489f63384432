"""`imagebot`: the one command for operating the system."""

from __future__ import annotations

import asyncio
import importlib
import json
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.engine import make_url

from backend_api import cli as backend_cli
from billing import cli as billing_cli
from bot_gateway import moderation_cli
from contracts.schemas import all_schemas
from contracts.topology import build_topology
from gpu_runner import cli as gpu_runner_cli
from imagebot.dlq_commands import dlq_app
from imagebot.docs_commands import docs_app
from imagebot.processes import SERVICES
from jobs import cli as jobs_cli
from messaging.settings import BrokerSettings, DatabaseSettings

app = typer.Typer(help="imagebot: Telegram image bot services and tools.", no_args_is_help=True)
contracts_app = typer.Typer(help="The public event contract.", no_args_is_help=True)
topology_app = typer.Typer(help="The RabbitMQ topology.", no_args_is_help=True)
app.add_typer(contracts_app, name="contracts")
app.add_typer(topology_app, name="topology")
app.add_typer(dlq_app, name="dlq")
app.add_typer(docs_app, name="docs")
app.add_typer(billing_cli.app, name="billing")
app.add_typer(jobs_cli.presets_app, name="presets")
app.add_typer(gpu_runner_cli.app, name="gpu")
app.add_typer(moderation_cli.app, name="moderation")
app.add_typer(backend_cli.app, name="admin")


def _alembic_ini() -> Path:
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (root / "alembic.ini").is_file() and (root / "migrations").is_dir():
            return root / "alembic.ini"
    raise typer.BadParameter("alembic.ini and migrations/ not found; run from the project root")


@app.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    downgrade: Annotated[bool, typer.Option(help="Downgrade to the revision instead.")] = False,
) -> None:
    """Bring the database (DATABASE_URL) to a revision of the migration history.

    A missing database is created. A database the customer built before us (the seed's
    tables, no revision of ours) is recognised by its shape, stamped at the matching revision
    and upgraded in place.
    """
    from alembic import command
    from alembic.config import Config

    from imagebot.database import AdoptionError, adopt, ensure_database

    config = Config(str(_alembic_ini()))
    url = DatabaseSettings().url.get_secret_value()
    if asyncio.run(ensure_database(url)):
        typer.echo(f"created database {make_url(url).database}")
    if downgrade:
        command.downgrade(config, revision)
        return
    try:
        adopted = adopt(config)
    except AdoptionError as exc:
        typer.echo(f"refusing to migrate: {exc}", err=True)
        raise typer.Exit(1) from exc
    if adopted:
        typer.echo(f"adopted an existing database at revision {adopted}")
    command.upgrade(config, revision)


@app.command()
def run(
    service: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICES)}, or all.")],
) -> None:
    """Run one service (or all five, supervised) until SIGINT/SIGTERM.

    `all` starts each service as a child process on SERVICE_HTTP_PORT + 0, 1, 2, 3, 4 (billing,
    jobs, bot_gateway, gpu_runner, backend_api), restarts any that exits, and stops them all
    gracefully.
    """
    if service == "all":
        _run_all()
        return
    if service not in SERVICES:
        raise typer.BadParameter(
            f"unknown service {service!r}; choose one of {', '.join(SERVICES)} or all"
        )
    try:
        entry = importlib.import_module(f"{service}.__main__")
    except ModuleNotFoundError as exc:
        typer.echo(f"{service}: this build has no runnable {service} service ({exc})", err=True)
        raise typer.Exit(2) from exc
    entry.main()


def _run_all() -> None:
    from imagebot.processes import ServiceProcess, supervise
    from messaging.logs import configure_logging
    from messaging.settings import ServiceSettings

    settings = ServiceSettings()
    configure_logging(settings.log_level, settings.log_format)
    processes = [
        ServiceProcess(name, name, settings.http_port + offset, env={})
        for offset, name in enumerate(SERVICES)
    ]
    asyncio.run(supervise(processes))


@app.command()
def demo(
    output: Annotated[Path, typer.Option(help="Where the result images (and logs) go.")] = Path(
        "demo-output"
    ),
    replicas: Annotated[int, typer.Option(min=1, max=4, help="Processes per service.")] = 1,
) -> None:
    """The whole system with sandbox Telegram and YooKassa, played by a scripted user.

    Uses the PostgreSQL server of DATABASE_URL (database `imagebot_demo`, recreated) and the
    broker of AMQP_URL (namespace `imagebot_demo`, recreated); needs no credentials or network.
    """
    from imagebot.demo import run_demo

    database_url = DatabaseSettings().url.get_secret_value()
    amqp_url = BrokerSettings().url.get_secret_value()
    asyncio.run(run_demo(database_url, amqp_url, output, replicas=replicas))


@contracts_app.command("export")
def contracts_export(
    directory: Annotated[Path, typer.Argument(help="Where to write one JSON Schema per event.")],
) -> None:
    """Write the JSON Schema of every event of the catalog."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, schema in all_schemas().items():
        (directory / name).write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n")
    typer.echo(f"wrote {len(all_schemas())} schemas to {directory}")


@topology_app.command("declare")
def topology_declare() -> None:
    """Declare every exchange, queue and binding on the broker (AMQP_URL); idempotent."""
    import asyncio

    from messaging.broker import declare_topology

    settings = BrokerSettings()
    topology = build_topology(settings.namespace)
    asyncio.run(declare_topology(settings.url.get_secret_value(), topology))
    typer.echo(f"declared {len(topology.queues)} queues and their DLQs in {topology.namespace!r}")


@topology_app.command("export")
def topology_export() -> None:
    """Print the RabbitMQ definitions JSON of the topology (AMQP_NAMESPACE)."""
    topology = build_topology(BrokerSettings().namespace)
    typer.echo(json.dumps(topology.to_definitions(), indent=2))
