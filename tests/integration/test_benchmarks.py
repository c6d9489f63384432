"""Every benchmark but the fault suite runs at a tiny size, so that none rots unnoticed.

Benchmarks run in full only on demand (`make bench`, `make bench-*`); here each runs as a
process, as `make` runs it, on the real PostgreSQL and RabbitMQ (throwaway databases and broker
namespaces of its own), with arguments that make it small. It must finish its work (exit
status 0: each bench exits non-zero when a job, debit or message did not get through), say what
it did, and print its figures last as `BENCH key=value ...`: exactly the keys it always prints,
each a finite number above zero (a count of refusals, such as HTTP 429s, may be zero).
The figures of a tiny run on a shared machine mean nothing; that they exist does.

All five start at once (they mostly wait on the servers and on each other's CPU) and each test
collects its own. The fault suite (bench/chaos.py) restarts the servers, so it is type-checked
and linted with the others but never run here.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 300.0
"""One tiny bench takes seconds; this only stops a stuck one from hanging the run."""


@dataclass(frozen=True)
class Bench:
    arguments: tuple[str, ...]
    figures: frozenset[str]
    """Every key of the BENCH line."""
    may_be_zero: frozenset[str] = frozenset()
    """Counts of what should not happen: a non-negative whole number."""
    says: tuple[str, ...] = ()
    """Patterns the output must match (one line each): the work it reports done."""


BENCHES = {
    "system": Bench(
        (
            *("--jobs", "5", "--rate", "5", "--seconds", "1"),
            *("--deliver-rate", "3", "--deliver-seconds", "1"),
            *("--ceiling-messages", "200", "--ceiling-s", "0.3"),
        ),
        frozenset({"jobs_per_s", "start_p50_ms", "start_p99_ms", "deliver_p99_ms", "efficiency"}),
        says=(
            r"^at 5 jobs/s for 1 s \(5 jobs\): ",
            r"^5 jobs at once: jobs_per_s=",
            r"^within Telegram's budget .* at 3 jobs/s for 1 s: deliver_p50_ms=",
        ),
    ),
    "billing": Bench(
        ("--accounts", "50", "--debits", "100", "--hot-debits", "50", "--webhooks", "10"),
        frozenset({"debits_per_s", "hot_debits_per_s", "webhooks_per_s", "ceiling_per_s", "ratio"}),
        says=(r"^accounts drifting from their ledger after the run: 0$",),
    ),
    "jobs": Bench(
        ("--jobs", "20", "--concurrency", "5"),
        frozenset({"jobs_per_s", "p50_ms", "p99_ms"}),
        says=(r"^baseline broker hop ", r"^jobs request → dispatch \(20 jobs, concurrency 5\): "),
    ),
    "runner": Bench(
        ("--jobs", "4", "--duration-s", "0.04"),
        frozenset({"utilization", "gap_ms_p50", "gap_ms_p99"}),
        says=(r"^baseline \(one message in hand", r"^staged \(next job fetched"),
    ),
    "gateway": Bench(
        ("--chats", "20"),
        frozenset({"sent", "rate_per_s", "http_429"}),
        may_be_zero=frozenset({"http_429"}),
        says=(r"^baseline \(no limiter\): attempted=20 ", r" delivered=20 unsent_rows=0 "),
    ),
    "moderation": Bench(
        ("--images", "3", "--prompts", "40"),
        frozenset(
            {"photo_cpu_ms", "photo_wall_ms", "astronaut_cpu_ms", "astronaut_wall_ms", "prompt_us"}
        ),
        says=(r"^photo 1280x960: 3 checks, ", r"^astronaut 512x512: 3 checks, "),
    ),
    "chat": Bench(
        (
            *("--quick-users", "1", "--taps", "3", "--chats", "30"),
            *("--crowd", "3", "--seconds", "2", "--pause-s", "0.5", "1"),
        ),
        frozenset({"quick_p50_ms", "quick_p99_ms", "crowd_p99_ms", "http_429"}),
        may_be_zero=frozenset({"http_429"}),
        says=(r"^baseline quick user ", r"^crowd of 3 .* the broadcast meanwhile sent [1-9]"),
    ),
    "backend": Bench(
        ("--users", "300", "--jobs", "1500", "--payments", "300", "--samples", "2"),
        frozenset({"search_p99_ms", "list_p99_ms", "dashboard_p99_ms", "rows"}),
        says=(
            r"^search telegram id +n= +2 ",
            r"^payments by status, currency, days +n= +1 ",
            r"^dashboard 30 days +n= +1 ",
            r"^the target \(p99 <= 200 ms for searches and first pages\) "
            r"is (NOT )?met at 2,100 rows",
        ),
    ),
    "gpu": Bench(
        ("--size", "tiny", "--device", "cpu"),
        frozenset({"s_per_image_40", "s_per_image_4", "peak_gib", "first_over_steady"}),
        says=(
            r"^built tiny components on cpu ",
            r"^40 steps, true CFG 4: s_per_image=",
            r"^Lightning 4 steps: s_per_image=\S+ \(measured whole\)",
            r"^first job after warm-up: ",
        ),
    ),
}

BENCH_LINE = re.compile(r"BENCH(?: [a-z][a-z0-9_]*=\S+)+")


@dataclass(frozen=True)
class Run:
    status: int | None
    output: str
    seconds: float


async def _run(name: str, bench: Bench, env: dict[str, str]) -> Run:
    began = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "bench" / f"{name}.py"),
        *bench.arguments,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), TIMEOUT_S)
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
        return Run(None, output.decode(errors="replace"), time.monotonic() - began)
    return Run(process.returncode, output.decode(errors="replace"), time.monotonic() - began)


@pytest.fixture(scope="module")
async def runs(
    postgres_server_url: str, amqp_url: str
) -> AsyncIterator[dict[str, asyncio.Task[Run]]]:
    env = {**os.environ, "DATABASE_URL": postgres_server_url, "AMQP_URL": amqp_url}
    tasks = {
        name: asyncio.create_task(_run(name, bench, env), name=f"bench.{name}")
        for name, bench in BENCHES.items()
    }
    yield tasks
    for task in tasks.values():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def figures_of(output: str, bench: Bench) -> dict[str, float]:
    """The figures of the BENCH line, which must be the output's last; fails on anything off."""
    lines = output.rstrip().splitlines()
    assert lines, "no output"
    last = lines[-1]
    assert BENCH_LINE.fullmatch(last), f"the last line is not a BENCH line: {last!r}"
    pairs = [pair.split("=", 1) for pair in last.split()[1:]]
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), f"a figure printed twice: {last!r}"
    assert set(keys) == bench.figures, f"figures {sorted(keys)}, expected {sorted(bench.figures)}"
    figures: dict[str, float] = {}
    for key, text in pairs:
        value = float(text)  # ValueError on anything but a number
        assert math.isfinite(value), f"{key}={text} is not finite"
        if key in bench.may_be_zero:
            assert value >= 0, f"{key}={text} is no count"
            assert value.is_integer(), f"{key}={text} is no count"
        else:
            assert value > 0, f"{key}={text}: a figure of zero means nothing was measured"
        figures[key] = value
    return figures


@pytest.mark.parametrize("name", list(BENCHES))
async def test_the_benchmark_runs_at_a_tiny_size(
    name: str, runs: dict[str, asyncio.Task[Run]]
) -> None:
    bench = BENCHES[name]
    run = await runs[name]
    where = f"bench/{name}.py {' '.join(bench.arguments)} ({run.seconds:.1f} s):\n{run.output}"
    assert run.status is not None, f"still running after {TIMEOUT_S:.0f} s: {where}"
    assert run.status == 0, f"exit status {run.status}: {where}"
    for pattern in bench.says:
        assert re.search(pattern, run.output, re.MULTILINE), f"no line matches {pattern!r}: {where}"
    figures = figures_of(run.output, bench)
    if name == "gateway":
        assert figures["sent"] == 20, where
    print(f"bench/{name}.py: {run.seconds:.1f} s, {run.output.rstrip().splitlines()[-1]}")


@pytest.mark.parametrize(
    "line",
    [
        "BENCH sent=20 rate_per_s=28.9",  # a figure missing
        "BENCH sent=20 rate_per_s=0.0 http_429=0",  # a figure of zero
        "BENCH sent=20 rate_per_s=nan http_429=0",
        "BENCH sent=20 rate_per_s=inf http_429=0",
        "BENCH sent=20 rate_per_s=28.9 http_429=-1",
        "BENCH sent=20 rate_per_s=28.9 http_429=0 extra=1",
        "BENCH sent=20 sent=20 rate_per_s=28.9 http_429=0",
        "BENCH sent=20 rate_per_s=fast http_429=0",
        "BENCH sent=20 rate_per_s=28.9 http_429=0\nthe end",  # not the last line
        "",
    ],
)
def test_a_bench_line_that_is_off_fails(line: str) -> None:
    with pytest.raises((AssertionError, ValueError)):
        figures_of(line, BENCHES["gateway"])


def test_a_good_bench_line_passes() -> None:
    line = "BENCH sent=20 rate_per_s=28.9 http_429=0"
    assert figures_of(f"baseline …\n{line}\n", BENCHES["gateway"]) == {
        "sent": 20,
        "rate_per_s": 28.9,
        "http_429": 0,
    }
