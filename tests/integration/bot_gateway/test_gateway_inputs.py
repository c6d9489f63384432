"""What people really send, against real jobs and billing, in Russian and English: captions
(forwarded ones too), damaged and HEIC images, long texts split by Telegram, text at the menu,
groups, taps answered too late, blocking and coming back, languages and deep links."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable

import pillow_heif
import pytest
from PIL import Image
from sqlalchemy import text as sql
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.events import JobRequested
from support.gateway_harness import ADMIN, Chat, Stack, new_user
from support.messaging import eventually

SAY = {
    "ru": {
        "balance": "Ваш баланс: 60",
        "photo_received": "Фото получено",
        "confirm": "Стоимость: 30 кредитов",
        "quote": "Запрос: «{}»",
        "start": "Запустить",
        "damaged": "Это изображение повреждено или не докачалось",
        "too_long": "Описание слишком длинное: {} символов, можно не больше 1000",
        "photo_kept": "Фото сохранено: пришлите описание покороче",
        "ask_prompt": "Опишите, что сделать",
        "prompt_received": "Пришлите фото для редактирования",
        "own_prompt": "Свой запрос",
        "offered": "«{}»\nНарисовать это? Или пришлите фото, чтобы изменить его по этим словам.",
        "draw": "Нарисовать по тексту",
        "unknown": "Не понял",
        "private_only": "Я работаю только в личных чатах",
        "open_private": "Открыть личный чат",
    },
    "en": {
        "balance": "Your balance: 60",
        "photo_received": "Photo received",
        "confirm": "Price: 30 credits",
        "quote": "Prompt: «{}»",
        "start": "Start",
        "damaged": "This image is damaged or incomplete",
        "too_long": "The description is too long: {} characters, at most 1000",
        "photo_kept": "The photo is kept: send a shorter description",
        "ask_prompt": "Describe what to do",
        "prompt_received": "Send a photo to edit",
        "own_prompt": "Own prompt",
        "offered": "«{}»\nDraw this? Or send a photo to edit with these words.",
        "draw": "Draw from text",
        "unknown": "I did not understand that",
        "private_only": "I work in private chats only",
        "open_private": "Open a private chat",
    },
}
COMMAND = {"type": "bot_command", "offset": 0, "length": 6}
SPLIT_WINDOW_S = 1.0
"""GATEWAY_SPLIT_TEXT_WINDOW_S as the stack runs it (the default)."""
LANGUAGES = pytest.mark.parametrize("language", ["ru", "en"])
FORWARDED = {
    "forward_origin": {
        "type": "channel",
        "date": 1_700_000_000,
        "chat": {"id": -1001234567890, "type": "channel", "title": "Daily memes"},
        "message_id": 77,
    }
}


async def started_chat(stack: Stack, language: str) -> Chat:
    chat = Chat(stack, new_user(language))
    chat.say("/start")
    await chat.expect(SAY[language]["balance"])
    return chat


def requested_by(stack: Stack, chat: Chat) -> list[JobRequested]:
    return stack.events.of(JobRequested, telegram_id=chat.user.id)


@LANGUAGES
async def test_a_caption_is_the_prompt_quoted_before_paying(stack: Stack, language: str) -> None:
    s = SAY[language]
    chat = await started_chat(stack, language)
    chat.photo(caption="  make the sky purple ")
    confirm = await chat.expect(s["confirm"])
    assert s["quote"].format("make the sky purple") in confirm.text
    chat.press(confirm, s["start"])
    (requested,) = await stack.events.wait_for(JobRequested, telegram_id=chat.user.id)
    assert requested.prompt == "make the sky purple"


@LANGUAGES
async def test_a_forwarded_posts_caption_is_not_the_users_prompt(
    stack: Stack, language: str
) -> None:
    s = SAY[language]
    chat = await started_chat(stack, language)
    chat.photo(caption="Subscribe to Daily memes!", **FORWARDED)
    offer = await chat.expect(s["photo_received"])
    assert "Subscribe" not in offer.text
    assert chat.said(s["confirm"]) == []
    assert requested_by(stack, chat) == []


def noisy(kind: str, size: tuple[int, int] = (256, 256)) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise(size, 64).convert("RGB").save(buffer, format=kind)
    return buffer.getvalue()


@LANGUAGES
async def test_a_damaged_image_is_refused_at_upload_and_never_charged(
    stack: Stack, language: str
) -> None:
    """A JPEG cut short passes `verify()`; decoded whole it is refused before any request."""
    s = SAY[language]
    chat = await started_chat(stack, language)
    whole = noisy("JPEG")
    chat.photo(whole[: len(whole) * 3 // 5], caption="make it brighter")
    await chat.expect(s["damaged"])
    chat.document(whole[:-400], mime_type="image/jpeg", file_name="IMG_0001.jpg")
    await chat.expect(s["damaged"])
    assert chat.said(s["confirm"]) == []
    assert requested_by(stack, chat) == []


@LANGUAGES
async def test_an_iphone_heic_file_is_accepted_and_kept_as_jpeg(
    stack: Stack, language: str
) -> None:
    s = SAY[language]
    chat = await started_chat(stack, language)
    pillow_heif.register_heif_opener()
    chat.document(
        noisy("HEIF", (60, 40)),
        mime_type="image/heic",
        file_name="IMG_0002.HEIC",
        caption="make it brighter",
    )
    confirm = await chat.expect(s["confirm"])
    chat.press(confirm, s["start"])
    (requested,) = await stack.events.wait_for(JobRequested, telegram_id=chat.user.id)
    (image_key,) = requested.image_keys
    assert image_key.endswith(".jpg")
    with Image.open(stack.store_root / image_key) as kept:
        assert (kept.format, kept.size) == ("JPEG", (60, 40))


@LANGUAGES
async def test_a_long_text_split_by_telegram_is_refused_once_as_a_whole(
    stack: Stack, language: str
) -> None:
    """Telegram sends 4,596 characters as 4,096 + 500: one refusal for all of it, and the
    tail is not taken for the prompt."""
    s = SAY[language]
    chat = await started_chat(stack, language)
    menu = stack.telegram.sent_to(chat.user.id, "sendMessage")[-1]
    chat.press(menu, s["own_prompt"])
    await chat.expect(s["ask_prompt"])
    chat.say("x" * 4096)
    stack.telegram.say(chat.user, "y" * 500)
    await chat.expect(s["too_long"].format(4096 + 1 + 500))
    await asyncio.sleep(SPLIT_WINDOW_S * 2)
    assert len(chat.said(s["too_long"].split("{}")[0])) == 1
    assert chat.said(s["prompt_received"]) == []
    chat.say("a small red boat")  # the prompt, at last: still asked for
    await chat.expect(s["prompt_received"])


@LANGUAGES
async def test_a_photo_with_an_over_long_caption_is_kept(stack: Stack, language: str) -> None:
    s = SAY[language]
    chat = await started_chat(stack, language)
    chat.photo(caption="z" * 1500)
    await chat.expect(s["photo_kept"])
    assert s["too_long"].format(1500) in chat.said(s["photo_kept"])[0].text
    chat.say("make it snow")
    confirm = await chat.expect(s["confirm"])
    assert s["quote"].format("make it snow") in confirm.text
    chat.press(confirm, s["start"])
    (requested,) = await stack.events.wait_for(JobRequested, telegram_id=chat.user.id)
    assert requested.prompt == "make it snow"
    assert len(requested.image_keys) == 1


@LANGUAGES
async def test_text_at_the_menu_is_offered_as_a_prompt(stack: Stack, language: str) -> None:
    s = SAY[language]
    chat = await started_chat(stack, language)
    chat.say("a lighthouse in a storm")
    offer = await chat.expect(s["offered"].format("a lighthouse in a storm"))
    assert chat.said(s["unknown"]) == []
    chat.press(offer, s["draw"])
    confirm = await chat.expect(s["confirm"])
    assert s["quote"].format("a lighthouse in a storm") in confirm.text
    chat.press(confirm, s["start"])
    (requested,) = await stack.events.wait_for(JobRequested, telegram_id=chat.user.id)
    assert (requested.prompt, requested.image_keys) == ("a lighthouse in a storm", [])

    chat.say("make it black and white")  # then a photo: edited with these words
    await chat.expect(s["offered"].format("make it black and white"))
    chat.photo()
    confirm = await chat.expect(s["confirm"])
    assert s["quote"].format("make it black and white") in confirm.text


@LANGUAGES
async def test_in_a_group_the_bot_points_to_the_private_chat_once(
    stack: Stack, language: str
) -> None:
    """Added to a group, it says once where it works; commands, texts and photos there get
    nothing more: no balance, no menu, and no account for a member who never wrote privately."""
    s = SAY[language]
    member = new_user(language)
    group = {"id": -(10**12) - member.id % 10**9, "type": "supergroup", "title": "Friends"}
    stack.telegram.member_status(member, "left", "member", chat=group)
    pointer = await stack.telegram.wait_for(group["id"], s["private_only"])
    assert pointer.button(s["open_private"])["url"] == "https://t.me/fake_bot?start=group"
    for text in ("/start", "/balance@fake_bot", "/topup", "hello bot"):
        stack.telegram.send(member, chat=group, text=text)
    stack.telegram.send(member, chat=group, text="/start", entities=[COMMAND])
    stack.telegram.send_photo(member, noisy("JPEG", (32, 32)), chat=group)
    stack.telegram.member_status(member, "member", "left", chat=group)  # removed, added again
    stack.telegram.member_status(member, "left", "member", chat=group)
    stack.telegram.say(member, "/start")  # the private chat works as ever
    await stack.telegram.wait_for(member.id, s["balance"])
    assert [call.text for call in stack.telegram.sent_to(group["id"])] == [pointer.text]
    assert await stack.gateway.conversation.known(member.id) is not None

    stranger = new_user(language)  # only ever in the group: taps the pointer's message
    query = stack.telegram.press(stranger, pointer.message_id or 0, "m:balance", chat=group)
    answer = await stack.telegram.answer_to(query)
    assert s["private_only"] in answer.params["text"]
    assert await stack.gateway.conversation.known(stranger.id) is None
    assert len(stack.telegram.sent_to(group["id"])) == 1


@LANGUAGES
async def test_a_tap_answered_too_late_still_does_what_was_tapped(
    stack: Stack, language: str
) -> None:
    """Telegram refuses the answer ("query is too old"): the job is requested all the same."""
    s = SAY[language]
    chat = await started_chat(stack, language)
    chat.photo(caption="make it autumn")
    confirm = await chat.expect(s["confirm"])
    chat.mark()
    query = stack.telegram.press(
        chat.user, confirm.message_id or 0, confirm.button(s["start"])["callback_data"],
        too_late=True,
    )  # fmt: skip
    (requested,) = await stack.events.wait_for(JobRequested, telegram_id=chat.user.id)
    assert requested.prompt == "make it autumn"
    assert query in stack.telegram.expired_queries
    await stack.telegram.answer_to(query)  # it was tried, and refused


async def blocked(engine: AsyncEngine, telegram_id: int) -> bool:
    async with engine.connect() as connection:
        found = await connection.execute(
            sql("SELECT blocked FROM gateway_users WHERE telegram_id = :id"), {"id": telegram_id}
        )
        return bool(found.scalar_one())


@LANGUAGES
async def test_blocking_is_marked_at_once_and_coming_back_gets_broadcasts_again(
    stack: Stack, gateway_engine: AsyncEngine, language: str
) -> None:
    s = SAY[language]
    chat = await started_chat(stack, language)
    user = chat.user
    stack.telegram.member_status(user, "member", "kicked")  # blocks the bot
    await eventually(lambda: blocked(gateway_engine, user.id))
    stack.telegram.member_status(user, "kicked", "member")  # unblocks it
    await eventually(lambda: not_(blocked(gateway_engine, user.id)))

    stack.telegram.member_status(user, "member", "kicked")
    await eventually(lambda: blocked(gateway_engine, user.id))
    chat.say("/start")  # simply writes again
    await chat.expect(s["balance"])
    assert not await blocked(gateway_engine, user.id)
    admin = Chat(stack, ADMIN)
    admin.say(f"/broadcast news for {user.id}")
    await chat.expect(f"news for {user.id}")


async def not_(check: Awaitable[bool]) -> bool:
    return not await check


COMMAND_MENU = {
    "ru": ["Главное меню", "Ваш баланс", "Пополнить баланс"],
    "en": ["Main menu", "Your balance", "Top up the balance"],
}
MENU_RECEIPT = {"ru": "Почта или телефон для чеков", "en": "Email or phone for receipts"}
MENU_ERASE = {"ru": "Удалить мои данные", "en": "Delete my data"}


@LANGUAGES
async def test_the_command_menu_is_published_in_each_language(stack: Stack, language: str) -> None:
    """setMyCommands at startup: ru and en, and English as the default for other languages."""
    published = {
        call.params.get("language_code"): call.params["commands"]
        for call in stack.telegram.calls
        if call.method == "setMyCommands"
    }
    expected = COMMAND_MENU[language]
    for code in (language, None) if language == "en" else (language,):
        commands = published[code]
        commands = json.loads(commands) if isinstance(commands, str) else commands
        assert [c["command"] for c in commands][:3] == ["start", "balance", "topup"]
        assert [c["description"] for c in commands][:3] == expected
        described = {c["command"]: c["description"] for c in commands}
        assert described["receipt"] == MENU_RECEIPT[language]  # every command is listed
        assert described["deletemydata"] == MENU_ERASE[language]


async def test_a_language_the_bot_does_not_speak_gets_english(stack: Stack) -> None:
    chat = Chat(stack, new_user("de"))
    chat.say("/start")
    await chat.expect(SAY["en"]["balance"])
    chat.say("ein Leuchtturm im Sturm")
    await chat.expect(SAY["en"]["offered"].format("ein Leuchtturm im Sturm"))


@LANGUAGES
async def test_words_typed_at_the_confirmation_refine_its_preset(
    stack: Stack, language: str
) -> None:
    """Photo, preset, and then the user's own words: they refine the preset (as a caption or
    words before the photo would), not 'I did not understand'."""
    s = SAY[language]
    chat = await started_chat(stack, language)
    chat.photo()
    offer = await chat.expect(s["photo_received"])
    chat.press(offer, "Фото")
    presets = await chat.expect("Фото:")
    chat.press(presets, "Аниме")
    await chat.expect(s["confirm"])
    chat.say("make the hair blue")
    confirm = await chat.expect(s["quote"].format("make the hair blue"))
    assert s["confirm"] in confirm.text
    assert chat.said(s["unknown"]) == []
    chat.press(confirm, s["start"])
    (requested,) = await stack.events.wait_for(JobRequested, telegram_id=chat.user.id)
    assert requested.prompt == "make the hair blue"
    assert requested.preset_id is not None
    assert len(requested.image_keys) == 1
