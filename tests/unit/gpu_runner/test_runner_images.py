import io

import pytest
from PIL import Image

from gpu_runner.images import InvalidImageError, decode_image, encode_png

FORMATS = frozenset({"JPEG", "PNG", "WEBP"})


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def reason(data: bytes, max_pixels: int = 1_000_000) -> str:
    with pytest.raises(InvalidImageError) as caught:
        decode_image(data, allowed_formats=FORMATS, max_pixels=max_pixels)
    assert caught.value.detail
    return caught.value.reason


def test_a_photo_is_turned_upright_and_rgb() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    photo = Image.new("L", (40, 20), 128)
    image = decode_image(
        encoded(photo, "JPEG", exif=exif), allowed_formats=FORMATS, max_pixels=10_000
    )
    assert (image.mode, image.size) == ("RGB", (20, 40))


def test_bad_input_is_refused_with_a_reason() -> None:
    assert reason(b"plain text, no image") == "unsupported_image"
    assert reason(encoded(Image.new("RGB", (8, 8)), "GIF")) == "unsupported_image"
    assert reason(encoded(Image.new("RGB", (300, 300), (1, 2, 3)), "PNG")[:100]) == "corrupt_image"
    assert reason(encoded(Image.new("RGB", (1001, 1000)), "PNG")) == "too_many_pixels"


def test_a_decompression_bomb_is_refused_before_it_is_decoded() -> None:
    bomb = encoded(Image.new("1", (20_000, 20_000)), "PNG")  # 400 MP in a few kilobytes
    assert len(bomb) < 100_000
    assert reason(bomb, max_pixels=50_000_000) == "too_many_pixels"


def test_results_are_png() -> None:
    data = encode_png(Image.new("RGB", (16, 16), (9, 9, 9)))
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.getpixel((0, 0))) == ("PNG", (9, 9, 9))
