"""The runner's /healthz, /readyz and /metrics on the real broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aio_pika
import aiohttp
import pytest
import uvicorn

from contracts.events import JobDispatchedV1
from contracts.topology import Topology
from gpu_runner.app import Settings as RunnerApp
from gpu_runner.app import create_app
from gpu_runner.settings import RunnerSettings
from messaging.settings import BrokerSettings, ServiceSettings
from object_store import StorageSettings
from support.messaging import eventually
from support.runner import Reports, free_port, png, publish


async def get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.text()


def sample(metrics: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    series = f"{name}{{{wanted}}}" if labels else name
    for line in metrics.splitlines():
        if line.startswith(f"{series} "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{{{wanted}}} in the metrics")


async def test_a_runner_is_ready_reports_busy_time_and_turns_unready_without_its_consumer(
    amqp_url: str, topology: Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPU_PILLOW_FILTER_STEPS", "4")
    monkeypatch.setenv("GPU_PILLOW_FILTER_STEP_DELAY_S", "0.05")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "photo.png").write_bytes(png())
    port = free_port()
    settings = RunnerSettings(workflows="pillow_filter", runner_id="health-test")
    app = create_app(
        RunnerApp(
            runner=settings,
            storage=StorageSettings(local_root=tmp_path),
            broker=BrokerSettings(url=amqp_url, namespace=topology.namespace),  # type: ignore[arg-type]
            service=ServiceSettings(http_port=port, graceful_timeout_s=5),
        ),
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: _ready(port), timeout_s=30)
        assert await get(port, "/readyz") == (200, "ready")
        reports = Reports(amqp_url, topology)
        await publish(
            amqp_url,
            topology,
            JobDispatchedV1(
                job_id=31, attempt=1, workflow_type="pillow_filter", prompt="grayscale",
                image_key="in/photo.png",
            ),
        )  # fmt: skip
        await reports.wait_for("job.completed", 31)
        await eventually(lambda: _acked(port, topology), timeout_s=10)
        status, metrics = await get(port, "/metrics")
        assert status == 200
        busy = sample(
            metrics,
            "imagebot_gpu_busy_seconds_total",
            runner="health-test",
            workflow="pillow_filter",
        )
        assert busy >= 4 * 0.05
        assert 0 < sample(metrics, "imagebot_gpu_busy_ratio", runner="health-test") <= 1
        assert sample(metrics, "imagebot_ready") == 1

        await _delete_queue(amqp_url, topology.gpu_queues["pillow_filter"].name)
        await eventually(lambda: _status(port, "/readyz", 503), timeout_s=10)
        assert await get(port, "/healthz") == (200, "ok")  # alive, just not ready
        assert sample((await get(port, "/metrics"))[1], "imagebot_ready") == 0
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=30)


async def _ready(port: int) -> bool:
    try:
        return (await get(port, "/readyz"))[0] == 200
    except aiohttp.ClientError:
        return False


async def _status(port: int, path: str, status: int) -> bool:
    return (await get(port, path))[0] == status


async def _acked(port: int, topology: Topology) -> bool:
    _, metrics = await get(port, "/metrics")
    queue = topology.gpu_queues["pillow_filter"].name
    try:
        consumed = sample(
            metrics,
            "imagebot_messages_consumed_total",
            queue=queue,
            event_type="job.dispatched",
            outcome="ok",
        )
    except AssertionError:
        return False
    return consumed == 1


async def _delete_queue(amqp_url: str, name: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(name)
