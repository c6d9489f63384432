"""How busy the runner keeps its device: 100 back-to-back jobs of a fixed-duration fake pipeline.

Through the real runner loop and the real broker (AMQP_URL), twice in one run: first the
baseline, a runner holding strictly one message (GPU_STAGE_AHEAD=0: the next job is fetched
and decoded only after the previous outcome is published), then the default, which stages the
next job while the current one runs. Prints utilization (busy time over wall time, first start
to last end) and the gaps between jobs; the last line is the default runner's.

    make bench-runner          # or: python bench/runner.py --jobs 100 --duration-s 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import aio_pika  # noqa: E402
from PIL import Image  # noqa: E402

from bench.common import amqp_url, configure, publish, throwaway_namespace  # noqa: E402
from contracts.envelope import new_envelope  # noqa: E402
from contracts.events import JobDispatchedV1  # noqa: E402
from contracts.topology import Topology  # noqa: E402
from gpu_runner.app import create_app  # noqa: E402
from gpu_runner.workflows import RenderRequest, StepObserver  # noqa: E402

STEPS = 8


class FixedDurationPipeline:
    """Stands in for a diffusion pipeline: `duration_s` of device time in `STEPS` steps."""

    name = "qwen_edit_2511"
    needs_image = True

    def __init__(self, duration_s: float) -> None:
        self._step_s = duration_s / STEPS
        self.spans: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def check(self) -> None:
        """Nothing to load."""

    def load(self) -> None:
        """Nothing to load."""

    def total_steps(self) -> int:
        return STEPS

    def seed_for(self, job_id: int, dispatched_seed: int | None) -> int:
        return job_id

    def render(self, request: RenderRequest, on_step: StepObserver) -> Image.Image:
        started = time.perf_counter()
        for step in range(1, STEPS + 1):
            time.sleep(self._step_s)  # a GPU kernel: the GIL is free meanwhile
            on_step(step, STEPS)
        with self._lock:
            self.spans.append((started, time.perf_counter()))
        assert request.image is not None
        return request.image


def _photo() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((1024, 768), 64).convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


async def _completed(topology: Topology, expected: int) -> None:
    connection = await aio_pika.connect(amqp_url())
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(topology.service_queues["jobs"].name, ensure=False)
        seen = 0
        async with queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                if message.type == "job.completed":
                    seen += 1
                    if seen == expected:
                        return


async def _dispatch(topology: Topology, jobs: int) -> None:
    """JobDispatched (v1: one image) in the workflow's queue, as jobs dispatches them."""
    connection = await aio_pika.connect(amqp_url())
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(topology.events_exchange, ensure=False)
        for n in range(1, jobs + 1):
            event = JobDispatchedV1(  # one image: what jobs dispatches in v1
                job_id=n,
                attempt=1,
                workflow_type="qwen_edit_2511",
                prompt="bench",
                image_key="in/photo.jpg",
            )
            await publish(exchange, new_envelope(event, source="bench"), event.routing_key())


async def measure(jobs: int, duration_s: float, stage_ahead: int) -> dict[str, float]:
    pipeline = FixedDurationPipeline(duration_s)
    with tempfile.TemporaryDirectory() as objects:
        (Path(objects) / "in").mkdir()
        (Path(objects) / "in" / "photo.jpg").write_bytes(_photo())
        async with throwaway_namespace("runner") as topology:
            await _dispatch(topology, jobs)
            configure(
                AMQP_URL=amqp_url(),
                AMQP_NAMESPACE=topology.namespace,
                GPU_STAGE_AHEAD=str(stage_ahead),
                GPU_PROGRESS_INTERVAL_S=str(duration_s / 4),
                STORAGE_BACKEND="local",
                STORAGE_LOCAL_ROOT=objects,
                SERVICE_GRACEFUL_TIMEOUT_S="5",
            )
            async with create_app(workflows={"qwen_edit_2511": pipeline}):
                try:
                    await asyncio.wait_for(
                        _completed(topology, jobs), timeout=jobs * duration_s * 5 + 60
                    )
                except TimeoutError:
                    raise SystemExit(
                        f"{len(pipeline.spans)} of {jobs} jobs completed (GPU_STAGE_AHEAD="
                        f"{stage_ahead}) before the bench gave up"
                    ) from None
    spans = sorted(pipeline.spans)
    busy = sum(end - start for start, end in spans)
    wall = spans[-1][1] - spans[0][0]
    gaps_ms = sorted((b[0] - a[1]) * 1000 for a, b in itertools.pairwise(spans))
    return {
        "jobs": len(spans),
        "utilization": busy / wall,
        "gap_ms_p50": statistics.median(gaps_ms),
        "gap_ms_p99": gaps_ms[min(len(gaps_ms) - 1, round(0.99 * (len(gaps_ms) - 1)))],
        "wall_s": wall,
    }


def _line(label: str, result: dict[str, float]) -> str:
    return (
        f"{label} utilization={result['utilization']:.4f} gap_ms_p50={result['gap_ms_p50']:.2f} "
        f"gap_ms_p99={result['gap_ms_p99']:.2f}"
    )


async def main() -> None:
    logging.disable(logging.INFO)  # FastStream logs every message received and processed
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--duration-s", type=float, default=0.2, help="device time per job")
    args = parser.parse_args()
    if args.jobs < 2:
        parser.error("--jobs: at least 2 (the gaps are between jobs)")
    print(f"{args.jobs} jobs of {args.duration_s * 1000:.0f} ms each, fake pipeline, real broker")
    baseline = await measure(args.jobs, args.duration_s, stage_ahead=0)
    print(_line("baseline (one message in hand, GPU_STAGE_AHEAD=0):", baseline))
    staged = await measure(args.jobs, args.duration_s, stage_ahead=1)
    print(_line("staged (next job fetched and decoded meanwhile):   ", staged))
    print(f"wall time: baseline {baseline['wall_s']:.2f} s, staged {staged['wall_s']:.2f} s")
    print(_line("BENCH", staged))


if __name__ == "__main__":
    asyncio.run(main())
