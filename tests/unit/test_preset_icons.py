"""A preset's icon: an uploaded image is checked whole and keyed by its content; the bot's
buttons show a text icon and never an image's key."""

from __future__ import annotations

import io

import pytest
from aiogram.utils.i18n import I18n
from PIL import Image

from backend_api.catalog import IconError, icon_image
from bot_gateway import keyboards
from bot_gateway.app import LOCALES
from contracts.rpc import PresetCatalog, PresetView


def picture(kind: str, size: tuple[int, int] = (40, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(out, format=kind)
    return out.getvalue()


@pytest.mark.parametrize(
    ("kind", "extension", "content_type"),
    [("PNG", "png", "image/png"), ("JPEG", "jpg", "image/jpeg"), ("WEBP", "webp", "image/webp")],
)
def test_an_image_is_keyed_by_its_content(kind: str, extension: str, content_type: str) -> None:
    data = picture(kind)
    key, found_type = icon_image(data)
    assert key.startswith("presets/icons/")
    assert key.endswith(f".{extension}")
    assert found_type == content_type
    assert icon_image(data)[0] == key
    assert icon_image(picture(kind, (41, 40)))[0] != key


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (b"GIF89a not really", "PNG, JPEG or WebP"),
        (picture("GIF"), "PNG, JPEG or WebP"),
        (picture("PNG")[:-30], "PNG, JPEG or WebP"),  # truncated: fails to decode
        (picture("PNG", (1025, 8)), "1024"),
        (b"\x89PNG" + bytes(256 * 1024), "KiB"),
    ],
)
def test_anything_else_is_refused_with_the_reason(data: bytes, why: str) -> None:
    with pytest.raises(IconError, match=why):
        icon_image(data)


def test_the_bot_shows_a_text_icon_and_never_an_image_key() -> None:
    def preset(preset_id: int, name: str, icon: str | None) -> PresetView:
        return PresetView(
            id=preset_id,
            category="Фото",
            name=name,
            icon=icon,
            price=30,
            order_index=preset_id,
            workflow_type="qwen_edit_2511",
            needs_image=True,
        )

    catalog = PresetCatalog(
        revision="r1",
        custom_prompt_price=10,
        presets=[
            preset(1, "Аниме", "🎌"),
            preset(2, "Акварель", "presets/icons/" + "a" * 64 + ".png"),
            preset(3, "Эскиз", None),
        ],
    )
    i18n = I18n(path=LOCALES, default_locale="ru", domain="messages")
    with i18n.context(), i18n.use_locale("ru"):
        markup = keyboards.presets(catalog, "Фото")
    labels = [row[0].text for row in markup.inline_keyboard]
    assert labels[:3] == ["🎌 Аниме · 30", "Акварель · 30", "Эскиз · 30"]
