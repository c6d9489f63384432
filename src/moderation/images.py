"""The image check: a detector's label scores against per-label thresholds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from moderation.verdicts import Verdict

if TYPE_CHECKING:
    from PIL import Image


class ImageDetector(Protocol):
    """Anything that scores an image by label (the highest score of each label it found)."""

    name: str

    def detect(self, image: Image.Image) -> Mapping[str, float]: ...


class ImageCheck:
    """Refuses an image when a label scores at or above its threshold; CPU-bound and
    thread-safe (callers run it off the event loop)."""

    def __init__(self, detector: ImageDetector, thresholds: Mapping[str, float]) -> None:
        self.detector = detector
        self._thresholds = dict(thresholds)

    def check(self, image: Image.Image) -> Verdict:
        scores = {label: round(score, 4) for label, score in self.detector.detect(image).items()}
        over = sorted(
            (label for label, limit in self._thresholds.items() if scores.get(label, 0.0) >= limit),
            key=lambda label: -scores[label],
        )
        category = over[0].lower() if over else ""
        return Verdict(refused=bool(over), category=category, scores=scores, check=self.name)

    @property
    def name(self) -> str:
        return f"image:{self.detector.name}"
