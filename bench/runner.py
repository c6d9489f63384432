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
import os
import socket
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import aio_pika
import uvicorn
from PIL import Image

from contracts.events import JobDispatched
from contracts.topology import Topology, build_topology
from gpu_runner.app import create_app
from gpu_runner.settings import RunnerSettings, StorageSettings
from gpu_runner.workflows import RenderRequest, StepObserver
from messaging.broker import create_broker, declare_topology
from messaging.publisher import EventPublisher
from messaging.settings import BrokerSettings, ServiceSettings

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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _completed(amqp_url: str, topology: Topology, expected: int) -> None:
    connection = await aio_pika.connect(amqp_url)
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


async def _cleanup(amqp_url: str, topology: Topology) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for spec in topology.queues:
            await channel.queue_delete(spec.name)
            await channel.queue_delete(spec.dlq)
        for name in topology.rpc_queues:
            await channel.queue_delete(name)
        await channel.exchange_delete(topology.events_exchange)
        await channel.exchange_delete(topology.dead_letter_exchange)


async def measure(
    amqp_url: str, jobs: int, duration_s: float, stage_ahead: int
) -> dict[str, float]:
    topology = build_topology(f"bench-runner-{uuid.uuid4().hex[:8]}")
    pipeline = FixedDurationPipeline(duration_s)
    with tempfile.TemporaryDirectory() as objects:
        (Path(objects) / "in").mkdir()
        (Path(objects) / "in" / "photo.jpg").write_bytes(_photo())
        broker_settings = BrokerSettings(url=amqp_url, namespace=topology.namespace)  # type: ignore[arg-type]
        await declare_topology(amqp_url, topology)
        sender = create_broker(broker_settings)
        await sender.connect()
        publisher = EventPublisher(sender, topology.events_exchange, source="bench", timeout_s=10)
        await asyncio.gather(
            *(
                publisher.publish(
                    JobDispatched(
                        job_id=n,
                        attempt=1,
                        workflow_type="qwen_edit_2511",
                        prompt="bench",
                        image_key="in/photo.jpg",
                    )
                )
                for n in range(1, jobs + 1)
            )
        )
        await sender.stop()
        port = _free_port()
        app = create_app(
            RunnerSettings(stage_ahead=stage_ahead, progress_interval_s=duration_s / 4),
            storage=StorageSettings(local_root=Path(objects)),
            broker=broker_settings,
            service=ServiceSettings(http_port=port),
            workflows={"qwen_edit_2511": pipeline},
        )
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        serving = asyncio.create_task(server.serve())
        try:
            await asyncio.wait_for(
                _completed(amqp_url, topology, jobs), timeout=jobs * duration_s * 5 + 60
            )
        finally:
            server.should_exit = True
            await serving
            await _cleanup(amqp_url, topology)
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
    amqp_url = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    print(f"{args.jobs} jobs of {args.duration_s * 1000:.0f} ms each, fake pipeline, real broker")
    baseline = await measure(amqp_url, args.jobs, args.duration_s, stage_ahead=0)
    print(_line("baseline (one message in hand, GPU_STAGE_AHEAD=0):", baseline))
    staged = await measure(amqp_url, args.jobs, args.duration_s, stage_ahead=1)
    print(_line("staged (next job fetched and decoded meanwhile):   ", staged))
    print(f"wall time: baseline {baseline['wall_s']:.2f} s, staged {staged['wall_s']:.2f} s")
    print(_line("BENCH", staged))


if __name__ == "__main__":
    asyncio.run(main())
