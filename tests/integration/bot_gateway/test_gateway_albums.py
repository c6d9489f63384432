"""An album (several photos sent together, as several updates sharing a media_group_id) is one
request: answered once, edited together, end to end through real jobs and billing."""

from __future__ import annotations

import asyncio
import io
import uuid

import pytest
from PIL import Image

from contracts.events import JobDispatched, JobRequested
from support.gateway_harness import Chat, Stack, new_user

LANGUAGES = pytest.mark.parametrize("language", ["ru", "en"])
SAY = {
    "ru": {
        "balance": "Ваш баланс: 60",
        "received": "Получено фото: {}",
        "category": "Фото: выберите пресет",
        "confirm": "Стоимость: 20 кредитов",
        "photos": "Фото: {}",
        "quote": "Запрос: «{}»",
        "start": "Запустить",
        "again": "Ещё раз",
        "too_many": "Здесь фото: 4, а один запрос редактирует вместе до 3",
    },
    "en": {
        "balance": "Your balance: 60",
        "received": "{} photos received",
        "category": "Фото: choose a preset",
        "confirm": "Price: 20 credits",
        "photos": "Photos: {}",
        "quote": "Prompt: «{}»",
        "start": "Start",
        "again": "Again",
        "too_many": "That is 4 photos: one request edits up to 3 together",
    },
}
SETTLE_S = 1.0
"""Longer than the album's gathering window (GATEWAY_ALBUM_WINDOW_S, 0.6 s): a second answer
would have come by then."""
WIDTHS = (40, 50, 60, 70)
"""Each photo of an album its own width, so the order they are kept in shows."""


async def started_chat(stack: Stack, language: str) -> Chat:
    chat = Chat(stack, new_user(language))
    chat.say("/start")
    await chat.expect(SAY[language]["balance"])
    return chat


def send_album(chat: Chat, count: int, caption: str | None = None) -> None:
    """`count` photos as Telegram sends an album: one update each, one media_group_id, the
    caption (if any) on the first."""
    chat.mark()
    group = uuid.uuid4().hex[:16]
    for n in range(count):
        buffer = io.BytesIO()
        Image.new("RGB", (WIDTHS[n], 30), (60 * n, 90, 120)).save(buffer, format="JPEG")
        chat.telegram.send_photo(
            chat.user,
            buffer.getvalue(),
            caption=caption if n == 0 else None,
            media_group_id=group,
        )


def widths(stack: Stack, keys: list[str]) -> list[int]:
    sizes = []
    for key in keys:
        with Image.open(stack.store_root / key) as kept:
            sizes.append(kept.width)
    return sizes


@LANGUAGES
async def test_an_album_of_three_is_answered_once_and_edited_together(
    stack: Stack, language: str
) -> None:
    s = SAY[language]
    chat = await started_chat(stack, language)
    before = len(chat.telegram.sent_to(chat.user.id))
    send_album(chat, 3)
    categories = await chat.expect(s["received"].format(3))
    chat.press(categories, "Фото")
    presets = await chat.expect(s["category"])
    await asyncio.sleep(SETTLE_S)
    assert chat.telegram.sent_to(chat.user.id)[before:] == [categories, presets]  # answered once
    chat.press(presets, "Мультфильм")
    confirm = await chat.expect(s["confirm"])
    assert s["photos"].format(3) in confirm.text
    chat.press(confirm, s["start"])

    (requested,) = await stack.events.wait_for(JobRequested, telegram_id=chat.user.id)
    assert len(requested.image_keys) == 3
    assert widths(stack, requested.image_keys) == [40, 50, 60]  # in the order sent
    (dispatched,) = await stack.events.wait_for(JobDispatched, image_keys=requested.image_keys)
    assert dispatched.workflow_type == "qwen_edit_2511"

    await stack.run_job(dispatched.job_id)
    result = await chat.expect("", method="sendPhoto")
    chat.press(result, s["again"])  # the same album, edited again
    again = await chat.expect(s["confirm"])
    assert s["photos"].format(3) in again.text


@LANGUAGES
async def test_an_albums_caption_is_the_prompt_for_all_its_photos(
    stack: Stack, language: str
) -> None:
    s = SAY[language]
    chat = await started_chat(stack, language)
    caption = "put the person from the first photo into the second"
    before = len(chat.telegram.sent_to(chat.user.id))
    send_album(chat, 2, caption=caption)
    confirm = await chat.expect(s["quote"].format(caption))
    assert s["photos"].format(2) in confirm.text
    await asyncio.sleep(SETTLE_S)
    assert chat.telegram.sent_to(chat.user.id)[before:] == [confirm]  # one answer for both
    chat.press(confirm, s["start"])
    (requested,) = await stack.events.wait_for(JobRequested, telegram_id=chat.user.id)
    assert widths(stack, requested.image_keys) == [40, 50]
    assert requested.prompt == caption


@LANGUAGES
async def test_an_album_of_four_is_refused_once_and_nothing_requested(
    stack: Stack, language: str
) -> None:
    s = SAY[language]
    chat = await started_chat(stack, language)
    before = len(chat.telegram.sent_to(chat.user.id))
    send_album(chat, 4)
    refusal = await chat.expect(s["too_many"])
    await asyncio.sleep(SETTLE_S)
    assert chat.telegram.sent_to(chat.user.id)[before:] == [refusal]
    assert stack.events.of(JobRequested, telegram_id=chat.user.id) == []
