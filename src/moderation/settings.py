"""`MODERATION_*`: whether inputs and results are checked, by what, and how strictly.

The gateway (prompts and uploads) and the runners (results) read the same variables.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

NUDITY_THRESHOLDS = (
    "FEMALE_GENITALIA_EXPOSED=0.45,MALE_GENITALIA_EXPOSED=0.45,ANUS_EXPOSED=0.45,"
    "FEMALE_BREAST_EXPOSED=0.5,BUTTOCKS_EXPOSED=0.55"
)


NUDITY_HOLD_THRESHOLDS = (
    "FEMALE_GENITALIA_EXPOSED=0.3,MALE_GENITALIA_EXPOSED=0.3,ANUS_EXPOSED=0.3,"
    "FEMALE_BREAST_EXPOSED=0.35,BUTTOCKS_EXPOSED=0.4"
)


class ModerationSettings(BaseSettings):
    """On by default: a service that cannot moderate refuses to start unless this is off."""

    model_config = SettingsConfigDict(env_prefix="MODERATION_", env_file=".env", extra="ignore")

    enabled: bool = True
    """False runs without any check (explicitly; never the fallback for a missing detector)."""
    image_thresholds: str = NUDITY_THRESHOLDS
    """`LABEL=score,...`: the detector's labels that refuse an image at or above their score
    (the category recorded is the label); nudenet's labels are in docs/architecture.md."""
    image_hold_thresholds: str = NUDITY_HOLD_THRESHOLDS
    """`LABEL=score,...`: an input photo scoring at or above one of these (and below every
    refuse threshold) is held for an operator's decision (the gateway's moderation queue);
    empty: nothing is held. A result is never held: it is delivered or refused."""
    shared_upload_accounts: int = Field(default=3, ge=0)
    """This many accounts uploading the same picture (its decoded pixels) flag each of them
    to billing (a farming signal: no weekly bonus until they pay); 0: not counted."""
    detector_threads: int = Field(default=1, ge=1, le=16)
    """CPU threads the image detector's model may use per check."""
    prompt_lists: str = ""
    """A YAML file of categories → entries replacing the built-in ru/en lists
    (`moderation/prompt_lists.yaml`, which says how entries read); empty: the built-in ones."""
    prompt_words: str = ""
    """`entry,entry,...` refused as category `custom`, beside the lists."""
    refusal_window_s: float = Field(default=3600.0, gt=0)
    """Refusals of one user are counted over this window (the gateway's restrictions)."""
    slowdown_after: int = Field(default=3, ge=1)
    """From this many refusals in the window, the user waits `slowdown_s` after each one."""
    slowdown_s: float = Field(default=60.0, ge=0)
    suspend_after: int = Field(default=5, ge=1)
    """This many refusals in the window suspend the user for `suspension_s`."""
    suspension_s: float = Field(default=86400.0, gt=0)
    standing_cache_s: float = Field(default=2.0, ge=0)
    """How long a gateway takes a user for free before reading their standing again: an
    operator's ban takes effect within this (a restricted user is read at every update)."""

    @field_validator("image_thresholds", "image_hold_thresholds")
    @classmethod
    def _readable_thresholds(cls, value: str) -> str:
        cls.thresholds_of(value)
        return value

    @staticmethod
    def thresholds_of(value: str) -> dict[str, float]:
        pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
        try:
            thresholds = {label.strip(): float(score) for label, score in pairs}
        except ValueError as exc:
            raise ValueError(
                f"MODERATION_IMAGE_THRESHOLDS: LABEL=score,...; got {value!r}"
            ) from exc
        if any(not 0 < score <= 1 for score in thresholds.values()):
            raise ValueError("MODERATION_IMAGE_THRESHOLDS: every score is in (0, 1]")
        return thresholds

    @property
    def thresholds(self) -> dict[str, float]:
        return self.thresholds_of(self.image_thresholds)

    @property
    def hold_thresholds(self) -> dict[str, float]:
        return self.thresholds_of(self.image_hold_thresholds)

    @property
    def lists_file(self) -> Path | None:
        return Path(self.prompt_lists) if self.prompt_lists else None

    @property
    def extra_words(self) -> list[str]:
        return [word.strip() for word in self.prompt_words.split(",") if word.strip()]
