"""Moderation as a stage any service can run: prompts against word and pattern lists, images
against a detector's scores. Pluggable per check (`ImageDetector`), configured by
`MODERATION_*`, and closed when it cannot work: enabled without a detector installed, it
refuses to be built (`ModerationUnavailableError`), so the service does not start.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from moderation.images import ImageCheck, ImageDetector
from moderation.settings import ModerationSettings
from moderation.text import PromptCheck, normalise
from moderation.verdicts import ALLOWED, Verdict

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "ImageCheck",
    "ImageDetector",
    "Moderation",
    "ModerationSettings",
    "ModerationUnavailableError",
    "PromptCheck",
    "Verdict",
    "create_moderation",
    "normalise",
]


class ModerationUnavailableError(RuntimeError):
    """Moderation is on but cannot run: the service must not start."""


class Moderation:
    """The checks a service runs; with none (moderation off) everything is allowed."""

    def __init__(self, prompts: PromptCheck | None, images: ImageCheck | None) -> None:
        self.prompts = prompts
        self.images = images

    @classmethod
    def off(cls) -> Moderation:
        return cls(None, None)

    def check_prompt(self, prompt: str) -> Verdict:
        return self.prompts.check(prompt) if self.prompts and prompt else ALLOWED

    async def check_image(self, image: Image.Image) -> Verdict:
        """Run off the event loop (tens of milliseconds of CPU per image)."""
        if self.images is None:
            return ALLOWED
        return await asyncio.to_thread(self.images.check, image)


def create_moderation(
    settings: ModerationSettings, *, detector: ImageDetector | None = None
) -> Moderation:
    """The checks `MODERATION_*` asks for, with `detector` or the installed nudenet one."""
    if not settings.enabled:
        return Moderation.off()
    prompts = PromptCheck.from_files(settings.lists_file, settings.extra_words)
    images = ImageCheck(
        detector or _nudenet(settings), settings.thresholds, settings.hold_thresholds
    )
    return Moderation(prompts, images)


def _nudenet(settings: ModerationSettings) -> ImageDetector:
    try:
        from moderation.nudenet_detector import NudeNetDetector

        return NudeNetDetector(threads=settings.detector_threads)
    except ImportError as exc:
        raise ModerationUnavailableError(
            "MODERATION_ENABLED is on but no image detector is installed "
            f"({exc}): install imagebot[moderation], or set MODERATION_ENABLED=false "
            "to run without moderation"
        ) from exc
