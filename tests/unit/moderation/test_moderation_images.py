"""The image check: thresholds and categories with a stub detector, the real detector (nudenet's
model from its wheel) on a harmless label, and closing when it is missing."""

import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest
from PIL import Image

from moderation import (
    ImageCheck,
    ModerationSettings,
    ModerationUnavailableError,
    create_moderation,
)
from moderation.nudenet_detector import NudeNetDetector


class StubDetector:
    name = "stub"

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores

    def detect(self, image: Image.Image) -> dict[str, float]:
        return self.scores


def blank() -> Image.Image:
    return Image.new("RGB", (512, 512), "white")


def astronaut() -> Image.Image:
    """A standard test photo with a face (NASA's, public domain), shipped by scikit-image."""
    path = Path(str(distribution("scikit-image").locate_file("skimage/data/astronaut.png")))
    return Image.open(path).convert("RGB")


def test_a_label_at_its_threshold_refuses_and_every_score_is_recorded() -> None:
    check = ImageCheck(
        StubDetector({"BUTTOCKS_EXPOSED": 0.6, "FEET_EXPOSED": 0.9, "ANUS_EXPOSED": 0.45}),
        ModerationSettings().thresholds,
    )
    verdict = check.check(blank())
    assert verdict.refused
    assert verdict.category == "buttocks_exposed"  # the highest of those over their threshold
    assert verdict.scores == {"BUTTOCKS_EXPOSED": 0.6, "FEET_EXPOSED": 0.9, "ANUS_EXPOSED": 0.45}
    assert verdict.summary() == (
        "image:stub refused: buttocks_exposed "
        "(ANUS_EXPOSED=0.45, BUTTOCKS_EXPOSED=0.60, FEET_EXPOSED=0.90)"
    )


def test_a_score_between_the_hold_and_the_refuse_threshold_holds() -> None:
    settings = ModerationSettings()
    check = ImageCheck(
        StubDetector({"BUTTOCKS_EXPOSED": 0.45, "FEMALE_BREAST_EXPOSED": 0.36}),
        settings.thresholds,
        settings.hold_thresholds,
    )
    verdict = check.check(blank())
    assert (verdict.refused, verdict.held) == (False, True)
    assert verdict.category == "buttocks_exposed"  # the highest of those over their hold score
    assert verdict.summary().startswith("image:stub held: buttocks_exposed (")
    refusing = ImageCheck(
        StubDetector({"BUTTOCKS_EXPOSED": 0.55, "FEMALE_BREAST_EXPOSED": 0.36}),
        settings.thresholds,
        settings.hold_thresholds,
    ).check(blank())
    assert (refusing.refused, refusing.held, refusing.category) == (True, False, "buttocks_exposed")
    below = ImageCheck(
        StubDetector({"BUTTOCKS_EXPOSED": 0.39}), settings.thresholds, settings.hold_thresholds
    ).check(blank())
    assert (below.refused, below.held, below.category) == (False, False, "")
    unheld = ImageCheck(
        StubDetector({"BUTTOCKS_EXPOSED": 0.45}),
        settings.thresholds,
        ModerationSettings(image_hold_thresholds="").hold_thresholds,
    ).check(blank())
    assert (unheld.refused, unheld.held) == (False, False)  # nothing held when none are set


def test_the_real_detector_holds_on_a_harmless_label_made_holding() -> None:
    """The cameraman (scikit-image, public domain): a man's face, held at FACE_MALE=0.5."""
    path = Path(str(distribution("scikit-image").locate_file("skimage/data/camera.png")))
    settings = ModerationSettings(image_hold_thresholds="FACE_MALE=0.5")
    moderation = create_moderation(settings)
    assert moderation.images is not None
    verdict = moderation.images.check(Image.open(path).convert("RGB"))
    assert (verdict.refused, verdict.held, verdict.category) == (False, True, "face_male")
    assert moderation.images.check(blank()).held is False


def test_scores_under_their_thresholds_pass() -> None:
    check = ImageCheck(
        StubDetector({"FEMALE_BREAST_EXPOSED": 0.49, "FACE_FEMALE": 0.99}),
        ModerationSettings().thresholds,
    )
    verdict = check.check(blank())
    assert not verdict.refused
    assert verdict.scores == {"FEMALE_BREAST_EXPOSED": 0.49, "FACE_FEMALE": 0.99}


def test_thresholds_are_read_from_settings() -> None:
    settings = ModerationSettings(image_thresholds="FEET_EXPOSED=0.3, BELLY_EXPOSED=1")
    assert settings.thresholds == {"FEET_EXPOSED": 0.3, "BELLY_EXPOSED": 1.0}
    with pytest.raises(ValueError, match="LABEL=score"):
        ModerationSettings(image_thresholds="FEET_EXPOSED")
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        ModerationSettings(image_thresholds="FEET_EXPOSED=1.5")


@pytest.fixture(scope="module")
def nudenet() -> NudeNetDetector:
    return NudeNetDetector(threads=1)


def test_the_real_detector_finds_the_face_in_a_test_photo(nudenet: NudeNetDetector) -> None:
    scores = nudenet.detect(astronaut())
    assert scores.get("FACE_FEMALE", 0) > 0.5
    assert not set(scores) & set(ModerationSettings().thresholds)  # nothing refused by default


def test_the_real_detector_stays_quiet_on_a_blank_image(nudenet: NudeNetDetector) -> None:
    assert nudenet.detect(blank()) == {}


async def test_a_harmless_label_made_refusing_refuses_through_the_real_detector(
    nudenet: NudeNetDetector,
) -> None:
    settings = ModerationSettings(image_thresholds="FACE_FEMALE=0.5")
    moderation = create_moderation(settings, detector=nudenet)
    face = await moderation.check_image(astronaut())
    assert face.refused
    assert face.category == "face_female"
    assert face.check == "image:nudenet"
    assert not (await moderation.check_image(blank())).refused


def test_the_installed_detector_is_the_default() -> None:
    moderation = create_moderation(ModerationSettings())
    assert moderation.images is not None
    assert moderation.images.name == "image:nudenet"


def test_enabled_without_a_detector_installed_refuses_to_be_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "nudenet", None)  # import nudenet raises ImportError
    with pytest.raises(ModerationUnavailableError, match="MODERATION_ENABLED=false"):
        create_moderation(ModerationSettings())
    assert create_moderation(ModerationSettings(enabled=False)).images is None
