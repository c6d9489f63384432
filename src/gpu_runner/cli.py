"""`imagebot gpu ...`: checks an operator runs on a GPU host before starting the runner."""

from __future__ import annotations

import typer

from gpu_runner.failures import CannotStartError
from gpu_runner.settings import RunnerSettings

app = typer.Typer(help="The GPU runner.", no_args_is_help=True)


@app.command()
def check(
    load: bool = typer.Option(False, help="Also load every pipeline (slow; needs the memory)."),
) -> None:
    """Check what the runner checks at start: every served workflow's model directory and LoRA,
    its profile, and (on a GPU) that they fit its free memory (GPU_WORKFLOWS, GPU_MODELS_DIR)."""
    # Imported here: `imagebot` must start on images without the gpu extra (Pillow, torch).
    from gpu_runner.workflows import build_workflows, check_memory

    settings = RunnerSettings()
    failed = False
    workflows = build_workflows(settings)
    for name, workflow in workflows.items():
        try:
            workflow.check()
        except CannotStartError as exc:
            typer.echo(f"{name}: MISSING: {exc}", err=True)
            failed = True
        else:
            typer.echo(f"{name}: ok")
    if failed:
        raise typer.Exit(2)
    try:
        check_memory(workflows.values(), settings)
        for name, workflow in workflows.items() if load else ():
            workflow.load()
            typer.echo(f"{name}: loaded")
    except CannotStartError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
