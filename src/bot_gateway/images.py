"""What an upload must be before a job may use it: a real image that decodes whole, of an
allowed format, not a decompression bomb. Pure: bytes in, a verdict (and the bytes to keep)
out. HEIC/HEIF (iPhones' photos sent as files) is opened with pillow-heif and kept as JPEG, the
format every runner reads."""

from __future__ import annotations

import functools
import io
import warnings
from dataclasses import dataclass

import pillow_heif
from PIL import Image, UnidentifiedImageError

CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
HEIF = "HEIF"
"""pillow-heif's name for HEIC and HEIF alike."""
HEIF_AS_JPEG_QUALITY = 95


@functools.cache
def _open_heif_too() -> None:
    pillow_heif.register_heif_opener()


class ImageRejectedError(ValueError):
    """Why an upload cannot be used; `reason` picks the user's message."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class CheckedImage:
    format: str
    """The format kept (a HEIF upload is kept as JPEG)."""
    width: int
    height: int
    data: bytes
    """The bytes to store: the upload's own, or a HEIF upload as JPEG."""

    @property
    def extension(self) -> str:
        return "jpg" if self.format == "JPEG" else self.format.lower()

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES.get(self.format, "application/octet-stream")


def check_image(data: bytes, *, formats: frozenset[str], max_pixels: int) -> CheckedImage:
    """Identify `data` from its header, check its size, then decode it whole: `verify()` alone
    passes a truncated JPEG, which would be charged and fail in the runner."""
    _open_heif_too()
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
            reason = "heif_unsupported" if kind == HEIF else "unsupported_format"
            raise ImageRejectedError(reason, kind or "unknown")
        if width * height > max_pixels:
            raise ImageRejectedError("too_many_pixels", f"{width}x{height}")
        try:
            image.load()
        except Exception as exc:
            raise ImageRejectedError("damaged", f"{kind}: {exc}") from exc
        if kind == HEIF:
            return CheckedImage("JPEG", width, height, _as_jpeg(image))
    return CheckedImage(kind, width, height, data)


def _as_jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=HEIF_AS_JPEG_QUALITY)
    return buffer.getvalue()
