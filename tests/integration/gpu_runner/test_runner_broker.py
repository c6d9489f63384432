"""The runner on the real broker: outcomes, bad input, duplicates, cancel, crashes, poison."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import time
from pathlib import Path

import pytest
from PIL import Image

from contracts.events import JobCanceled, JobDispatched, JobDispatchedV1, JobFailed
from contracts.topology import Topology
from gpu_runner.settings import RunnerSettings
from object_store import LocalObjectStore
from support.messaging import drain
from support.runner import (
    IMAGEBOT,
    Reports,
    dispatched_envelope,
    png,
    publish,
    publish_raw,
    runner_process_env,
    serving_runner,
)

PILLOW = RunnerSettings(workflows="pillow_filter", progress_interval_s=0)


def job(
    job_id: int, prompt: str = "grayscale", image_key: str | None = "in/photo.png"
) -> JobDispatchedV1:
    return JobDispatchedV1(
        job_id=job_id, attempt=1, workflow_type="pillow_filter", prompt=prompt, image_key=image_key
    )


@pytest.fixture
def objects(tmp_path: Path) -> Path:
    root = tmp_path / "objects"
    (root / "in").mkdir(parents=True)
    (root / "in" / "photo.png").write_bytes(png())
    return root


async def test_a_dispatched_job_is_started_progressed_completed_and_never_run_twice(
    amqp_url: str, topology: Topology, objects: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPU_PILLOW_FILTER_STEPS", "3")
    reports = Reports(amqp_url, topology)
    async with serving_runner(amqp_url, topology, objects, PILLOW):
        await publish(amqp_url, topology, job(1))
        [completed] = await reports.wait_for("job.completed", 1)
        # A duplicate of the finished dispatch: the stored result is reported, nothing reruns.
        await publish(amqp_url, topology, job(1))
        await reports.wait_for("job.completed", 1, count=2)

    [started] = reports.of("job.started", 1)
    assert started["total_steps"] == 3
    assert [p["step"] for p in reports.of("job.progress", 1)] == [1, 2]  # 3 of 3: completed
    assert completed["result_key"] == "results/1-request-1.png"
    assert reports.of("job.completed", 1)[1]["result_key"] == completed["result_key"]
    with Image.open(objects / completed["result_key"]) as result:
        assert result.size == (64, 48)
        assert len(set(result.get_flattened_data())) == 1
        red, green, blue = result.getpixel((0, 0))  # type: ignore[misc]
        assert red == green == blue  # grayscale of the red input


async def test_an_albums_images_are_all_given_to_the_workflow_in_order(
    amqp_url: str, topology: Topology, objects: Path
) -> None:
    """JobDispatched v2 (an album): each image is loaded and the workflow gets them all, the
    first as the reference; pillow_filter shows them side by side, at the first one's height."""
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    for n, colour in enumerate(colours):
        buffer = io.BytesIO()
        Image.new("RGB", (40 + 20 * n, 30 if n != 1 else 60), colour).save(buffer, "PNG")
        (objects / "in" / f"album-{n}.png").write_bytes(buffer.getvalue())
    album = JobDispatched(
        job_id=21,
        attempt=1,
        workflow_type="pillow_filter",
        prompt="blur",
        image_keys=[f"in/album-{n}.png" for n in range(3)],
    )
    reports = Reports(amqp_url, topology)
    async with serving_runner(amqp_url, topology, objects, PILLOW):
        await publish(amqp_url, topology, album)
        [completed] = await reports.wait_for("job.completed", 21)
    with Image.open(objects / completed["result_key"]) as result:
        assert result.size == (40 + 30 + 80, 30)  # the second (60 px high) scaled to 30 px
        middles = [result.getpixel((x, 15)) for x in (20, 40 + 15, 40 + 30 + 40)]
    strongest = [max(range(3), key=lambda c: pixel[c]) for pixel in middles]  # type: ignore[index]
    assert strongest == [0, 1, 2]  # red, green, blue: in the order sent


async def test_bad_input_is_a_permanent_failure_with_a_reason_never_a_loop(
    amqp_url: str, topology: Topology, objects: Path
) -> None:
    (objects / "in" / "text.png").write_bytes(b"hello, not an image")
    (objects / "in" / "cut.png").write_bytes(png((300, 300))[:200])
    (objects / "in" / "huge.png").write_bytes(png((5000, 5000), (0, 0, 0)))
    cases = {
        11: job(11, image_key="in/text.png"),
        12: job(12, image_key="in/cut.png"),
        13: job(13, image_key="in/huge.png"),
        14: job(14, image_key="in/nothing-here.png"),
        15: job(15, image_key=None),
        16: job(16, prompt="make it van gogh"),
    }
    unknown_workflow = dispatched_envelope(job(17)).model_dump(mode="json")
    unknown_workflow["data"]["workflow_type"] = "sdxl_turbo"
    reports = Reports(amqp_url, topology)
    settings = RunnerSettings(workflows="pillow_filter", max_input_pixels=10_000_000)
    async with serving_runner(amqp_url, topology, objects, settings):
        await publish(amqp_url, topology, *cases.values())
        await publish_raw(
            amqp_url,
            "job.dispatched.pillow_filter",
            json.dumps(unknown_workflow).encode(),
            topology,
        )
        failures = await reports.wait_for("job.attempt_failed", count=7)

    reasons = {failure["job_id"]: failure["reason"] for failure in failures}
    assert reasons == {
        11: "unsupported_image",
        12: "corrupt_image",
        13: "too_many_pixels",
        14: "missing_image",
        15: "missing_image",
        16: "unknown_filter",
        17: "unsupported_workflow",
    }
    assert not any(failure["retryable"] for failure in failures)
    assert all(failure["detail"] for failure in failures)
    assert reports.of("job.started", 11) == []  # refused before taking the device
    queue = topology.gpu_queues["pillow_filter"]
    assert await drain(amqp_url, queue.dlq, idle_s=0.3) == []
    assert await drain(amqp_url, queue.name, idle_s=0.3) == []


async def test_a_cancel_stops_the_running_job_within_one_step(
    amqp_url: str, topology: Topology, objects: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step_s = 0.25
    monkeypatch.setenv("GPU_PILLOW_FILTER_STEPS", "40")
    monkeypatch.setenv("GPU_PILLOW_FILTER_STEP_DELAY_S", str(step_s))
    reports = Reports(amqp_url, topology)
    async with serving_runner(amqp_url, topology, objects, PILLOW):
        await publish(amqp_url, topology, job(21))
        await reports.wait_for("job.progress", 21, count=3)
        seen_step = max(p["step"] for p in reports.of("job.progress", 21))
        canceled_at = time.monotonic()
        await publish(
            amqp_url, topology, JobCanceled(job_id=21, user_id=1, chat_id=1, was_running=True)
        )
        [failed] = await reports.wait_for("job.attempt_failed", 21)
        stopped_after_s = time.monotonic() - canceled_at

    assert failed["reason"] == "canceled"
    assert not failed["retryable"]
    stopped_step = int(failed["detail"].split()[3])  # "canceled after step N of 40"
    # The step running when the cancel arrived is the last one (one more may have ended while
    # the test read the progress it had seen).
    assert seen_step <= stopped_step <= seen_step + 2
    assert stopped_after_s < 2 * step_s + 1.0
    assert reports.of("job.completed", 21) == []
    assert not (objects / "results" / "21.png").exists()


async def test_a_job_that_failed_for_good_stops_running_too(
    amqp_url: str, topology: Topology, objects: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs gave up on it (timed out, refunded): a copy still running must not go on."""
    monkeypatch.setenv("GPU_PILLOW_FILTER_STEPS", "40")
    monkeypatch.setenv("GPU_PILLOW_FILTER_STEP_DELAY_S", "0.25")
    reports = Reports(amqp_url, topology)
    async with serving_runner(amqp_url, topology, objects, PILLOW):
        await publish(amqp_url, topology, job(22))
        await reports.wait_for("job.progress", 22, count=2)
        await publish(
            amqp_url, topology, JobFailed(job_id=22, user_id=1, chat_id=1, reason="timeout")
        )
        [failed] = await reports.wait_for("job.attempt_failed", 22)

    assert failed["reason"] == "canceled"
    assert reports.of("job.completed", 22) == []


async def test_a_runner_killed_mid_job_leaves_it_to_another_which_completes_it_once(
    amqp_url: str, topology: Topology, objects: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await publish(amqp_url, topology, job(31))
    reports = Reports(amqp_url, topology)
    doomed = await asyncio.create_subprocess_exec(
        IMAGEBOT,
        "run",
        "gpu_runner",
        env=runner_process_env(
            amqp_url,
            topology,
            objects,
            gpu_workflows="pillow_filter",
            gpu_progress_interval_s=0,
            gpu_pillow_filter_steps=100,
            gpu_pillow_filter_step_delay_s=0.1,
        ),
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await reports.wait_for("job.progress", 31, count=2)
    finally:
        doomed.send_signal(signal.SIGKILL)
        assert await doomed.wait() == -signal.SIGKILL

    monkeypatch.setenv("GPU_PILLOW_FILTER_STEPS", "2")
    async with serving_runner(amqp_url, topology, objects, PILLOW):
        await reports.wait_for("job.completed", 31)
        await asyncio.sleep(0.5)
        await reports.take()

    assert len(reports.of("job.started", 31)) == 2  # once per runner
    assert len(reports.of("job.completed", 31)) == 1
    assert await LocalObjectStore(objects).exists("results/31-request-31.png")
    assert await drain(amqp_url, topology.gpu_queues["pillow_filter"].name, idle_s=0.3) == []


async def test_a_dispatch_that_kills_every_runner_ends_in_the_dlq(
    amqp_url: str, topology: Topology, objects: Path
) -> None:
    await publish(amqp_url, topology, job(41, prompt="crash"))
    queue = topology.gpu_queues["pillow_filter"]
    crashes = 0
    dead: list[object] = []
    while not dead and crashes < 10:
        runner = await asyncio.create_subprocess_exec(
            IMAGEBOT.replace("imagebot", "python"),
            "-m",
            "support.crashing_runner",
            env=runner_process_env(amqp_url, topology, objects, gpu_workflows="pillow_filter"),
            stderr=asyncio.subprocess.DEVNULL,
        )
        code = await asyncio.wait_for(runner.wait(), timeout=60)
        assert code == -signal.SIGKILL
        crashes += 1
        dead = list(await drain(amqp_url, queue.dlq, idle_s=0.3))

    assert len(dead) == 1
    assert crashes == 6  # the first delivery and 5 redeliveries (x-delivery-limit 5)
    # Something that is not an event at all goes to the DLQ at once, not through the runner.
    await publish_raw(amqp_url, "job.dispatched.pillow_filter", b"\x00not json", topology)
    # (the runner refuses it; no runner runs here, so start one briefly)
    async with serving_runner(amqp_url, topology, objects, PILLOW):
        for _ in range(100):
            if dead := list(await drain(amqp_url, queue.dlq, idle_s=0.2)):
                break
    assert [message.body for message in dead] == [b"\x00not json"]  # type: ignore[attr-defined]


async def test_a_missing_model_directory_stops_the_runner_before_it_takes_a_job(
    amqp_url: str, topology: Topology, objects: Path, tmp_path: Path
) -> None:
    waiting = JobDispatchedV1(job_id=51, attempt=1, workflow_type="qwen_image", prompt="a fox")
    await publish(amqp_url, topology, waiting)
    process = await asyncio.create_subprocess_exec(
        IMAGEBOT,
        "run",
        "gpu_runner",
        env=runner_process_env(
            amqp_url, topology, objects, gpu_workflows="qwen_image", gpu_models_dir=tmp_path
        ),
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 2
    assert f"no diffusers model in {tmp_path / 'Qwen-Image'}" in stderr.decode()
    [still_queued] = await drain(amqp_url, topology.gpu_queues["qwen_image"].name, idle_s=0.3)
    assert json.loads(still_queued.body)["data"]["job_id"] == 51
