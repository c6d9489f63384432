"""Whether the served workflows fit the device, checked before anything loads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gpu_runner.failures import InsufficientMemoryError
from gpu_runner.workflows.components import GIB, same_files


@dataclass(frozen=True)
class Need:
    """Device memory one part of a workflow takes: weights of a component, or working memory."""

    part: str
    bytes: int
    directory: Path | None = None
    """A shareable component's files: another workflow's with the same files is shared."""
    working: bool = False
    """Memory a render takes while it runs: one job runs at a time, so the largest counts."""
    loading: int = 0
    """Bytes held beyond `bytes` while it loads: an FP8 transformer loads in bf16, then shrinks."""


class Measurable(Protocol):
    name: str

    def memory_needs(self) -> list[Need]: ...


@dataclass(frozen=True)
class Line:
    workflow: str
    part: str
    bytes: int
    shared_with: str | None = None
    loading: int = 0
    working: bool = False


def plan(workflows: Sequence[Measurable]) -> list[Line]:
    """Every workflow's parts; a component whose files an earlier workflow loads counts once.
    Working memory counts once too (one job runs at a time): the largest workflow's."""
    lines: list[Line] = []
    loaded: list[tuple[Path, str]] = []
    working: list[Line] = []
    for workflow in workflows:
        for need in workflow.memory_needs():
            if need.working:
                working.append(Line(workflow.name, need.part, need.bytes, working=True))
                continue
            if need.directory is None:
                lines.append(Line(workflow.name, need.part, need.bytes, loading=need.loading))
                continue
            owner = next((o for d, o in loaded if same_files(need.directory, d)), None)
            if owner is None:
                loaded.append((need.directory, workflow.name))
                lines.append(Line(workflow.name, need.part, need.bytes))
            else:
                lines.append(Line(workflow.name, need.part, 0, shared_with=owner))
    if working:
        largest = max(working, key=lambda line: line.bytes)
        lines += [
            w if w is largest else Line(w.workflow, w.part, 0, "one job at a time") for w in working
        ]
    return lines


def peak(lines: Sequence[Line]) -> int:
    """Bytes the plan holds at its height: serving (every weight and one job's working memory),
    or loading, when a transformer is still unquantized beside every other weight (no job runs
    then, and what a warm-up render held is free again)."""
    serving = sum(line.bytes for line in lines)
    working = sum(line.bytes for line in lines if line.working)
    loading = max((line.loading for line in lines), default=0)
    return max(serving, serving - working + loading)


def describe(lines: Sequence[Line]) -> str:
    rows = [
        f"  {line.workflow:<28} {line.part:<14} "
        + (f"shared ({line.shared_with})" if line.shared_with else f"{line.bytes / GIB:6.1f} GiB")
        + (f" (+{line.loading / GIB:.1f} GiB while it loads)" if line.loading else "")
        for line in lines
    ]
    serving = sum(line.bytes for line in lines)
    rows.append(f"  {'total':<43} {serving / GIB:6.1f} GiB")
    if (height := peak(lines)) > serving:
        rows.append(f"  {'while loading, at most':<43} {height / GIB:6.1f} GiB")
    return "\n".join(rows)


def check_fits(
    workflows: Sequence[Measurable], free: int, total: int, device: str, served: Sequence[str]
) -> list[Line]:
    """Raise `InsufficientMemoryError` (naming what each part needs) when the plan is over the
    device's free memory; otherwise return the plan."""
    lines = plan(workflows)
    needed = peak(lines)
    if needed > free:
        raise InsufficientMemoryError(
            f"GPU_WORKFLOWS={','.join(served)} needs about {needed / GIB:.1f} GiB on {device}, "
            f"which has {free / GIB:.1f} GiB free of {total / GIB:.1f} GiB:\n{describe(lines)}\n"
            "Serve fewer workflows per process (docs/deployment.md lists what fits per GPU size), "
            "or free the device."
        )
    return lines
