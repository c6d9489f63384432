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
    """Refuses an image when a label scores at or above its threshold, else holds it for an
    operator when a label scores at or above its hold threshold; CPU-bound and thread-safe
    (callers run it off the event loop)."""

    def __init__(
        self,
        detector: ImageDetector,
        thresholds: Mapping[str, float],
        hold_thresholds: Mapping[str, float] | None = None,
    ) -> None:
        self.detector = detector
        self._thresholds = dict(thresholds)
        self._hold_thresholds = dict(hold_thresholds or {})

    def check(self, image: Image.Image) -> Verdict:
        scores = {label: round(score, 4) for label, score in self.detector.detect(image).items()}
        refusing = _over(scores, self._thresholds)
        if refusing:
            return Verdict(refused=True, category=refusing, scores=scores, check=self.name)
        holding = _over(scores, self._hold_thresholds)
        return Verdict(
            refused=False, held=bool(holding), category=holding, scores=scores, check=self.name
        )

    @property
    def name(self) -> str:
        return f"image:{self.detector.name}"


def _over(scores: Mapping[str, float], thresholds: Mapping[str, float]) -> str:
    """The label scoring highest among those at or above their threshold, lower-cased; ""."""
    over = [label for label, limit in thresholds.items() if scores.get(label, 0.0) >= limit]
    return max(over, key=lambda label: scores[label]).lower() if over else ""
