"""`imagebot gpu ...`: checks an operator runs on a GPU host before starting the runner."""

from __future__ import annotations

import typer

from gpu_runner.failures import ModelDirectoryMissingError
from gpu_runner.settings import RunnerSettings

app = typer.Typer(help="The GPU runner.", no_args_is_help=True)


@app.command()
def check(
    load: bool = typer.Option(False, help="Also load every pipeline (slow; needs the memory)."),
) -> None:
    """Check that every served workflow's model directory exists (GPU_WORKFLOWS, GPU_MODELS_DIR)."""
    # Imported here: `imagebot` must start on images without the gpu extra (Pillow, torch).
    from gpu_runner.workflows import build_workflows

    settings = RunnerSettings()
    failed = False
    for name, workflow in build_workflows(settings).items():
        try:
            workflow.check()
            if load:
                workflow.load()
        except ModelDirectoryMissingError as exc:
            typer.echo(f"{name}: MISSING: {exc}", err=True)
            failed = True
        else:
            typer.echo(f"{name}: ok{' (loaded)' if load else ''}")
    if failed:
        raise typer.Exit(2)
