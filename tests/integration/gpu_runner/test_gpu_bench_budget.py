"""bench/gpu.py keeps to its time budget: a lent GPU's command is killed at its limit, and a run
killed among the levers would lose the BENCH line, which comes last."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_past_its_budget_the_gpu_bench_starts_no_lever_and_still_prints_its_figures() -> None:
    run = subprocess.run(
        [sys.executable, "bench/gpu.py", "--size", "tiny", "--device", "cpu", "--budget-s", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.rstrip().splitlines()
    skipped = [line for line in lines if "not measured: past the 0 s budget" in line]
    assert len(skipped) == 2, run.stdout  # the tiny run's one lever, on both variants
    assert not [line for line in lines if "+ step cache" in line and "s_per_image=" in line]
    assert lines[-1].startswith("BENCH s_per_image_40="), run.stdout
