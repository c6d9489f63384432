"""The gateway's pure rules: job phases, language choice, flood control, image checks."""

from __future__ import annotations

import io

import pillow_heif
import pytest
from PIL import Image

from bot_gateway.domain import (
    JobState,
    Move,
    Phase,
    advances,
    locale_for,
    moved_to,
    on_progress,
    on_started,
    rubles,
    start_source,
)
from bot_gateway.images import ImageRejectedError, check_image
from bot_gateway.settings import TelegramSettings
from bot_gateway.throttling import FloodGuard, Verdict

FORMATS = frozenset({"JPEG", "PNG", "WEBP"})
pillow_heif.register_heif_opener()  # to make HEIC samples


def encoded(size: tuple[int, int], kind: str, *, noise: bool = False) -> bytes:
    buffer = io.BytesIO()
    image = Image.effect_noise(size, 64).convert("RGB") if noise else Image.new("RGB", size, 9)
    image.save(buffer, format=kind)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("current", "new", "expected"),
    [
        ("requested", Phase.created, True),
        ("queued", Phase.running, True),
        ("running", Phase.running, True),  # progress after progress
        ("running", Phase.queued, False),  # a late JobQueued never hides progress
        ("running", Phase.completed, True),
        ("completed", Phase.running, False),  # a late progress never hides the result
        ("completed", Phase.failed, False),
        ("failed", Phase.completed, False),
        ("requested", Phase.rejected, True),
        ("queued", Phase.canceled, True),
    ],
)
def test_a_job_moves_forward_only(current: str, new: Phase, expected: bool) -> None:
    assert advances(current, new) is expected


def test_a_start_runs_the_job_unless_it_ended_or_its_progress_came_first() -> None:
    queued = JobState(Phase.queued)
    assert on_started(queued, 1, 4) == Move(JobState(Phase.running, 1, 0, 4))
    assert on_started(JobState(Phase.running, 1, 2, 4), 1, 4) is None  # progress overtook it
    assert on_started(JobState(Phase.running, 2, 1, 4), 1, 4) is None  # an earlier attempt
    ended = JobState(Phase.completed, 1, 4, 4)
    assert on_started(ended, 1, 4) is None
    assert on_started(ended, 2, 4) == Move(JobState(Phase.completed, 2, 0, 4), shown=False)


def test_progress_counts_per_attempt_and_never_goes_back() -> None:
    running = JobState(Phase.running, 1, 2, 4)
    assert on_progress(running, 1, 3, 4) == Move(JobState(Phase.running, 1, 3, 4))
    assert on_progress(running, 1, 2, 4) is None  # a duplicate or a straggler
    assert on_progress(running, 2, 1, 4) == Move(JobState(Phase.running, 2, 1, 4))  # a retry
    assert on_progress(JobState(Phase.running, 2, 1, 4), 1, 4, 4) is None
    assert on_progress(JobState(Phase.queued), 1, 1, 4) == Move(JobState(Phase.running, 1, 1, 4))
    ended = JobState(Phase.canceled, 1, 2, 4)
    assert on_progress(ended, 1, 3, 4) is None
    assert on_progress(ended, 2, 1, 4) == Move(JobState(Phase.canceled, 2, 0, 4), shown=False)


def test_a_phase_is_reached_forward_only() -> None:
    assert moved_to(JobState(Phase.created), Phase.queued) == Move(JobState(Phase.queued))
    assert moved_to(JobState(Phase.running, 1, 2, 3), Phase.queued) is None
    assert moved_to(JobState(Phase.running, 1, 2, 3), Phase.completed) == Move(
        JobState(Phase.completed, 1, 2, 3)
    )


@pytest.mark.parametrize(
    ("code", "expected"),
    [("ru", "ru"), ("en", "en"), ("en-GB", "en"), ("de", "en"), ("uk", "en"), (None, "ru"),
     ("", "ru")],
)  # fmt: skip
def test_english_for_a_language_the_bot_does_not_speak(code: str | None, expected: str) -> None:
    assert locale_for(code, ("ru", "en"), "ru", "en") == expected


@pytest.mark.parametrize("code", [None, "ru", "en-GB", "de"])
def test_the_language_chosen_in_the_menu_wins_over_telegrams(code: str | None) -> None:
    assert locale_for(code, ("ru", "en"), "ru", "en", chosen="en") == "en"
    assert locale_for(code, ("ru", "en"), "en", "en", chosen="ru") == "ru"
    assert locale_for(code, ("ru", "en"), "ru", "en", chosen="de") == locale_for(
        code, ("ru", "en"), "ru", "en"
    )


@pytest.mark.parametrize(
    ("payload", "source"),
    [
        ("group", "group"),
        ("spring_promo-2", "spring_promo-2"),
        ("x" * 64, "x" * 64),
        ("x" * 65, None),
        ("", None),
        (None, None),
        ("a b", None),
        ("promo!", None),
        ("Весна", None),
        ("ref=42", None),
        ("ref\n42", None),
    ],
)
def test_a_start_payload_is_a_source_only_as_a_link_can_carry_it(
    payload: str | None, source: str | None
) -> None:
    assert start_source(payload) == source


def test_rubles_from_kopecks() -> None:
    assert [rubles(10000), rubles(12345), rubles(5)] == ["100", "123.45", "0.05"]


def test_flood_guard_takes_a_burst_warns_once_then_drops_until_it_refills() -> None:
    now = [0.0]
    guard = FloodGuard(burst=3, interval_s=1.0, clock=lambda: now[0])
    assert [guard.check(1) for _ in range(3)] == [Verdict.allow] * 3
    assert guard.check(1) is Verdict.warn
    assert guard.check(1) is Verdict.drop
    assert guard.check(2) is Verdict.allow  # someone else is not affected
    now[0] = 1.0  # one more has room
    assert [guard.check(1) for _ in range(2)] == [Verdict.allow, Verdict.warn]
    now[0] = 10.0  # the whole burst again
    assert [guard.check(1) for _ in range(4)] == [Verdict.allow] * 3 + [Verdict.warn]


def truncated_jpeg() -> bytes:
    """A JPEG cut in its body: `Image.verify()` passes it, decoding it fails."""
    whole = encoded((96, 96), "JPEG", noise=True)
    cut = whole[: len(whole) * 3 // 5]
    with Image.open(io.BytesIO(cut)) as image:
        image.verify()  # what the check did alone before
    return cut


def test_allowed_images_pass_with_their_format() -> None:
    checked = check_image(encoded((40, 30), "PNG"), formats=FORMATS, max_pixels=10_000)
    assert (checked.format, checked.width, checked.height) == ("PNG", 40, 30)
    assert checked.extension == "png"
    assert check_image(encoded((8, 8), "JPEG"), formats=FORMATS, max_pixels=100).extension == "jpg"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not an image at all", "not_an_image"),
        (encoded((8, 8), "GIF"), "unsupported_format"),
        (encoded((8, 8), "BMP"), "unsupported_format"),
        (encoded((200, 100), "PNG"), "too_many_pixels"),
        (encoded((64, 64), "PNG")[:60], "damaged"),  # truncated
        (truncated_jpeg(), "damaged"),
        (encoded((8, 8), "HEIF"), "heif_unsupported"),  # when HEIF is not allowed
    ],
)
def test_bad_images_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ImageRejectedError) as refused:
        check_image(data, formats=FORMATS, max_pixels=10_000)
    assert refused.value.reason == reason


def test_a_heic_upload_is_kept_as_jpeg() -> None:
    checked = check_image(encoded((40, 30), "HEIF"), formats=FORMATS | {"HEIF"}, max_pixels=10_000)
    assert (checked.format, checked.width, checked.height) == ("JPEG", 40, 30)
    assert (checked.extension, checked.content_type) == ("jpg", "image/jpeg")
    with Image.open(io.BytesIO(checked.data)) as image:
        assert (image.format, image.size) == ("JPEG", (40, 30))


def test_an_allowed_format_is_kept_as_uploaded() -> None:
    data = encoded((40, 30), "PNG")
    assert check_image(data, formats=FORMATS, max_pixels=10_000).data == data


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    """A tiny file claiming 30000 × 30000 pixels: refused before any decoding."""
    bomb = _png_header(30000, 30000)
    with pytest.raises(ImageRejectedError) as refused:
        check_image(bomb, formats=FORMATS, max_pixels=40_000_000)
    assert refused.value.reason == "too_many_pixels"


def _png_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def test_placeholder_secrets_are_refused_outside_development() -> None:
    with pytest.raises(ValueError, match="TELEGRAM_BOT_TOKEN"):
        TelegramSettings(environment="production")
    with pytest.raises(ValueError, match="TELEGRAM_WEBHOOK_SECRET"):
        TelegramSettings(environment="production", bot_token="1:real", mode="webhook")  # type: ignore[arg-type]
    assert TelegramSettings(admin_ids="1, 2").admins == frozenset({1, 2})
