"""What an upload must be before a job may use it: a real image, of an allowed format, not a
decompression bomb. Pure: bytes in, a verdict out."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


class ImageRejectedError(ValueError):
    """Why an upload cannot be used; `reason` picks the user's message."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class CheckedImage:
    format: str
    width: int
    height: int

    @property
    def extension(self) -> str:
        return "jpg" if self.format == "JPEG" else self.format.lower()

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES.get(self.format, "application/octet-stream")


def check_image(data: bytes, *, formats: frozenset[str], max_pixels: int) -> CheckedImage:
    """Identify `data` from its header (no full decode), then verify its structure."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageRejectedError("too_many_pixels", str(exc)) from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageRejectedError("not_an_image", str(exc)) from exc
    with image:
        kind = (image.format or "").upper()
        width, height = image.size
        if kind not in formats:
            raise ImageRejectedError("unsupported_format", kind or "unknown")
        if width * height > max_pixels:
            raise ImageRejectedError("too_many_pixels", f"{width}x{height}")
        try:
            image.verify()
        except Exception as exc:
            raise ImageRejectedError("not_an_image", f"corrupt {kind}: {exc}") from exc
    return CheckedImage(kind, width, height)
