"""A sticky CUDA error on the real broker: the attempt is reported, the process stops taking
jobs and exits non-zero, and the jobs it held wait in the queue for a runner that works."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from contracts.events import JobDispatched
from contracts.topology import Topology
from gpu_runner.__main__ import DEVICE_LOST_EXIT
from support.messaging import drain
from support.runner import IMAGEBOT, Reports, publish, runner_process_env


async def test_a_sticky_cuda_error_reports_the_attempt_and_exits_non_zero(
    amqp_url: str, topology: Topology, tmp_path: Path
) -> None:
    jobs = [
        JobDispatched(job_id=job_id, attempt=1, workflow_type="qwen_image", prompt="a fox")
        for job_id in (61, 62, 63)
    ]
    await publish(amqp_url, topology, *jobs)
    reports = Reports(amqp_url, topology)
    process = await asyncio.create_subprocess_exec(
        IMAGEBOT.replace("imagebot", "python"),
        "-m",
        "support.broken_device",
        env=runner_process_env(
            amqp_url, topology, tmp_path, gpu_workflows="qwen_image", gpu_stage_ahead=2
        ),
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == DEVICE_LOST_EXIT, stderr.decode()[-3000:]

    [failed] = await reports.wait_for("job.attempt_failed", 61)
    assert (failed["reason"], failed["retryable"]) == ("gpu_device_lost", True)
    assert "illegal memory access" in failed["detail"]
    await reports.take()
    assert [started["job_id"] for started in reports.of("job.started")] == [61]
    assert reports.of("job.attempt_failed", 62) == reports.of("job.attempt_failed", 63) == []
    waiting = await drain(amqp_url, topology.gpu_queues["qwen_image"].name, idle_s=0.3)
    assert sorted(json.loads(m.body)["data"]["job_id"] for m in waiting) == [62, 63]
    assert "device unusable" in stderr.decode()
