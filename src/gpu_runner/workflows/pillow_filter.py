"""Cheap CPU filters: lets the system run (and be tested) on machines without a GPU."""

from __future__ import annotations

import time
from collections.abc import Callable

from PIL import Image, ImageFilter, ImageOps

from gpu_runner.failures import AttemptFailure
from gpu_runner.settings import PillowFilterSettings
from gpu_runner.workflows.base import RenderRequest, StepObserver, choose_seed

FILTERS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "grayscale": lambda image: ImageOps.grayscale(image).convert("RGB"),
    "invert": ImageOps.invert,
    "mirror": ImageOps.mirror,
    "flip": ImageOps.flip,
    "blur": lambda image: image.filter(ImageFilter.GaussianBlur(4)),
    "sharpen": lambda image: image.filter(ImageFilter.SHARPEN),
    "contour": lambda image: image.filter(ImageFilter.CONTOUR),
    "emboss": lambda image: image.filter(ImageFilter.EMBOSS),
    "autocontrast": ImageOps.autocontrast,
}


class PillowFilterWorkflow:
    """The job's prompt names the filter (e.g. a preset whose prompt is `grayscale`)."""

    name = "pillow_filter"
    needs_image = True

    def __init__(self, settings: PillowFilterSettings) -> None:
        self._settings = settings

    def check(self) -> None:
        """Nothing to load."""

    def load(self) -> None:
        """Nothing to load."""

    def total_steps(self) -> int:
        return self._settings.steps

    def seed_for(self, job_id: int, dispatched_seed: int | None) -> int:
        return choose_seed("job", 0, job_id, dispatched_seed)

    def render(self, request: RenderRequest, on_step: StepObserver) -> Image.Image:
        apply = FILTERS.get(request.prompt.strip().lower())
        if apply is None:
            raise AttemptFailure(
                "unknown_filter",
                f"pillow_filter knows {', '.join(sorted(FILTERS))}; got {request.prompt[:50]!r}",
                retryable=False,
            )
        assert request.image is not None  # the runner refuses image-less jobs first
        result = apply(side_by_side(request.images))
        for step in range(1, self._settings.steps + 1):
            time.sleep(self._settings.step_delay_s)
            on_step(step, self._settings.steps)
        return result


def side_by_side(images: list[Image.Image]) -> Image.Image:
    """An album as one picture: each image at the first one's height, left to right."""
    if len(images) == 1:
        return images[0]
    height = images[0].height
    scaled = [
        image
        if image.height == height
        else image.resize((max(1, round(image.width * height / image.height)), height))
        for image in images
    ]
    joined = Image.new("RGB", (sum(image.width for image in scaled), height))
    left = 0
    for image in scaled:
        joined.paste(image.convert("RGB"), (left, 0))
        left += image.width
    return joined
