"""`imagebot presets import FILE` and `imagebot presets export`: the catalog as YAML."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer

from jobs.catalog import (
    CatalogError,
    ImportResult,
    PresetSpec,
    export_catalog,
    import_catalog,
    read_catalog_file,
)
from jobs.models import DELIVERY
from jobs.repository import CatalogRepository
from jobs.settings import JobsSettings
from messaging.database import create_engine, create_session_factory
from messaging.relay import publish_outbox
from messaging.settings import DatabaseSettings
from messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

presets_app = typer.Typer(help="The preset catalog (YAML).", no_args_is_help=True)


@presets_app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="Catalog YAML: `presets:` and a list of presets.")],
) -> None:
    """Upsert the file's presets by category + name (DATABASE_URL); announce the change."""
    try:
        specs = read_catalog_file(file)
    except CatalogError as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(1) from exc
    result, published = asyncio.run(_import(specs))
    typer.echo(
        f"{len(specs)} presets: {result.created} created, {result.updated} updated, "
        f"{result.unchanged} unchanged; catalog revision {result.revision}"
    )
    if not published:
        typer.echo(
            "PresetsChanged waits in the outbox: the broker was unreachable; "
            "the running jobs service publishes it",
            err=True,
        )


@presets_app.command("export")
def export_command(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Print (or write) every preset as catalog YAML, in display order."""
    text = asyncio.run(_export())
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)


async def _import(specs: list[PresetSpec]) -> tuple[ImportResult, bool]:
    engine = create_engine(DatabaseSettings())
    sessions = create_session_factory(engine)
    try:
        async with UnitOfWork(engine, DELIVERY, source="jobs") as uow:
            result = await import_catalog(uow, specs, JobsSettings().custom_prompt_price)
        return result, await publish_outbox(sessions, DELIVERY, source="jobs")
    finally:
        await engine.dispose()


async def _export() -> str:
    engine = create_engine(DatabaseSettings())
    try:
        async with create_session_factory(engine)() as session:
            return await export_catalog(CatalogRepository(session))
    finally:
        await engine.dispose()
