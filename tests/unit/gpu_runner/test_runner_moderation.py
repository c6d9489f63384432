"""Results pass the moderation after the render and before they are stored or reported: a
refused one fails the attempt for good with the verdict (jobs fails the job, billing refunds)."""

import sys
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from contracts.envelope import Envelope, Event, RawEnvelope, new_envelope
from contracts.events import JobAttemptFailed, JobCompleted, JobDispatchedV1
from gpu_runner.app import Settings, create_app
from gpu_runner.failures import ModerationUnavailableError
from gpu_runner.runner import Runner
from gpu_runner.settings import RunnerSettings
from gpu_runner.workflows import RenderRequest, StepObserver
from moderation import ImageDetector, Moderation, ModerationSettings, create_moderation
from moderation.nudenet_detector import NudeNetDetector
from object_store import LocalObjectStore


class Publisher:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def publish(self, event: Event, *, cause: Envelope[Any] | None = None) -> RawEnvelope:
        self.events.append(event)
        return new_envelope(event, source="test", cause=cause)


class Painter:
    """Renders a picture made here: shapes on a gradient, or a photo it is given."""

    name = "qwen_image"
    needs_image = False

    def __init__(self, picture: Image.Image | None = None) -> None:
        self.picture = picture
        self.renders = 0

    def check(self) -> None: ...

    def load(self) -> None: ...

    def total_steps(self) -> int:
        return 2

    def seed_for(self, job_id: int, dispatched_seed: int | None) -> int:
        return 1

    def render(self, request: RenderRequest, on_step: StepObserver) -> Image.Image:
        self.renders += 1
        on_step(1, 2)
        on_step(2, 2)
        if self.picture is not None:
            return self.picture
        image = Image.linear_gradient("L").convert("RGB").resize((320, 240))
        ImageDraw.Draw(image).ellipse((40, 40, 200, 160), fill=(200, 120, 40))
        return image


class StubDetector:
    name = "stub"

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores
        self.seen: list[tuple[int, int]] = []

    def detect(self, image: Image.Image) -> dict[str, float]:
        self.seen.append(image.size)
        return self.scores


def moderated(detector: ImageDetector, thresholds: str | None = None) -> Moderation:
    settings = (
        ModerationSettings()
        if thresholds is None
        else ModerationSettings(image_thresholds=thresholds)
    )
    return create_moderation(settings, detector=detector)


def run_job(tmp_path: Path, painter: Painter, moderation: Moderation) -> Runner:
    return Runner(
        {"qwen_image": painter},
        LocalObjectStore(tmp_path),
        Publisher(),
        RunnerSettings(workflows="qwen_image", runner_id="r1", progress_interval_s=0),
        moderation=moderation,
    )


def dispatch() -> tuple[JobDispatchedV1, RawEnvelope]:
    job = JobDispatchedV1(job_id=5, attempt=1, workflow_type="qwen_image", prompt="a fox")
    return job, new_envelope(job, source="jobs", correlation_id="request-5")


async def test_a_refused_result_fails_the_attempt_for_good_and_is_not_stored(
    tmp_path: Path,
) -> None:
    detector = StubDetector({"BUTTOCKS_EXPOSED": 0.8, "FACE_FEMALE": 0.7})
    painter = Painter()
    runner = run_job(tmp_path, painter, moderated(detector))
    outcome = await runner.run(*dispatch())
    assert isinstance(outcome, JobAttemptFailed)
    assert (outcome.reason, outcome.retryable) == ("moderation_refused", False)
    assert outcome.detail == (
        "image:stub refused: buttocks_exposed (BUTTOCKS_EXPOSED=0.80, FACE_FEMALE=0.70)"
    )
    assert detector.seen == [(320, 240)]  # the rendered image itself
    assert painter.renders == 1
    assert not (tmp_path / "results").exists()  # never stored, so never deliverable


async def test_an_allowed_result_is_stored_and_reported(tmp_path: Path) -> None:
    detector = StubDetector({"FACE_MALE": 0.9})
    outcome = await run_job(tmp_path, Painter(), moderated(detector)).run(*dispatch())
    assert isinstance(outcome, JobCompleted)
    assert (tmp_path / outcome.result_key).is_file()
    assert detector.seen == [(320, 240)]


def astronaut() -> Image.Image:
    path = distribution("scikit-image").locate_file("skimage/data/astronaut.png")
    return Image.open(Path(str(path))).convert("RGB")


async def test_the_real_detector_refuses_a_result_on_a_label_the_operator_set(
    tmp_path: Path,
) -> None:
    detector = NudeNetDetector()
    strict = run_job(tmp_path / "a", Painter(astronaut()), moderated(detector, "FACE_FEMALE=0.5"))
    refused = await strict.run(*dispatch())
    assert isinstance(refused, JobAttemptFailed)
    assert refused.reason == "moderation_refused"
    assert refused.detail.startswith("image:nudenet refused: face_female (FACE_FEMALE=0.")
    default = run_job(tmp_path / "b", Painter(astronaut()), moderated(detector))
    assert isinstance(await default.run(*dispatch()), JobCompleted)


def test_a_runner_with_moderation_on_and_no_detector_does_not_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "nudenet", None)  # as if the extra were not installed
    runner = RunnerSettings(workflows="qwen_image", runner_id="r1")
    painter = {"qwen_image": Painter()}
    with pytest.raises(ModerationUnavailableError, match="MODERATION_ENABLED=false"):
        create_app(Settings(runner=runner), workflows=painter)
    off = Settings(runner=runner, moderation=ModerationSettings(enabled=False))
    assert create_app(off, workflows=painter) is not None
