"""What the runner needs from a workflow, whatever runs it (diffusers pipeline, Pillow, ...)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from PIL import Image

    from gpu_runner.settings import SeedPolicy

StepObserver = Callable[[int, int], None]
"""Called as `(step, total_steps)` after each step, on the inference thread; raising
`JobCanceledError` from it stops the job."""


@dataclass(frozen=True)
class RenderRequest:
    prompt: str
    image: Image.Image | None
    """The (first) input image: the reference whose size the output follows."""
    seed: int
    more_images: tuple[Image.Image, ...] = ()
    """An album's second and third images, in the order the user sent them."""

    @property
    def images(self) -> list[Image.Image]:
        """Every input image, the reference first."""
        return [self.image, *self.more_images] if self.image is not None else []


class Workflow(Protocol):
    name: str
    needs_image: bool

    def check(self) -> None:
        """Raise `ModelDirectoryMissingError` when what the workflow loads is absent."""

    def load(self) -> None:
        """Load once per process (on the inference thread); later renders reuse it."""

    def total_steps(self) -> int: ...

    def seed_for(self, job_id: int, dispatched_seed: int | None) -> int: ...

    def render(self, request: RenderRequest, on_step: StepObserver) -> Image.Image: ...


def choose_seed(policy: SeedPolicy, fixed: int, job_id: int, dispatched: int | None) -> int:
    """`job`: the dispatch's seed, else one derived from the job id, so a retry reproduces it."""
    if policy == "fixed":
        return fixed
    if policy == "random":
        return random.SystemRandom().randrange(2**63)
    if dispatched is not None:
        return dispatched
    digest = hashlib.sha256(f"imagebot-job-{job_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
