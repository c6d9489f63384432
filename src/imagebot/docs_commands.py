"""`imagebot docs`: documents generated from the code, for the teams that use our events."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from contracts.asyncapi import render_asyncapi
from messaging.settings import BrokerSettings

docs_app = typer.Typer(help="Documents generated from the contract.", no_args_is_help=True)


@docs_app.command("asyncapi")
def asyncapi(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write here (e.g. docs/asyncapi.yaml), not stdout."),
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option(help="Exchange and queue name prefix; default AMQP_NAMESPACE."),
    ] = None,
) -> None:
    """The AsyncAPI 3 document of every event, queue and request/reply method."""
    document = render_asyncapi(namespace or BrokerSettings().namespace)
    if output is None:
        typer.echo(document, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(document, encoding="utf-8")
    typer.echo(f"wrote {output}", err=True)
