"""Each bad input gets its localized answer, nothing is charged and nothing requested."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot_gateway.app import build
from contracts.events import JobRequested, JobRequestRejected
from contracts.topology import Topology
from messaging.settings import BrokerSettings
from sandbox.telegram import TelegramSandbox
from support.gateway_harness import (
    FLOOD_INTERVAL_S,
    FLOOD_LIMIT,
    MAX_TEST_PIXELS,
    MAX_UNFINISHED,
    Chat,
    Stack,
    gateway_settings,
    image_bytes,
    new_user,
)

ANSWERS = {
    "ru": {
        "balance": "Ваш баланс: 60",
        "not_a_photo": "Пришлите, пожалуйста, фото",
        "too_large": "Файл слишком большой: боты могут скачивать файлы до 20 МБ",
        "pixels": "максимум 1 мегапиксель.",
        "format": "Этот формат не поддерживается",
        "prompt": "Описание слишком длинное: 1001 символ, можно не больше 1000",
        "ask_prompt": "Опишите, что сделать",
        "stale": "Эта кнопка устарела",
        "flood": "Слишком много сообщений подряд",
        "cap": "у вас уже слишком много изображений в работе",
        "busy": "Сервис сейчас занят",
        "unknown": "Не понял",
        "offered": "Нарисовать это?",
        "confirm": "Стоимость: 1 кредит.",
        "photo_received": "Фото получено",
        "choose_preset": "выберите пресет",
        "start": "Запустить",
    },
    "en": {
        "balance": "Your balance: 60",
        "not_a_photo": "Please send a photo",
        "too_large": "The file is too large: bots can download files up to 20 MB",
        "pixels": "at most 1 megapixel.",
        "format": "This format is not supported",
        "prompt": "The description is too long: 1001 characters, at most 1000",
        "ask_prompt": "Describe what to do",
        "stale": "This button is outdated",
        "flood": "Too many messages at once",
        "cap": "you already have too many images in progress",
        "busy": "The service is busy right now",
        "unknown": "I did not understand that",
        "offered": "Draw this?",
        "confirm": "Price: 1 credit.",
        "photo_received": "Photo received",
        "choose_preset": "choose a preset",
        "start": "Start",
    },
}
LANGUAGES = pytest.mark.parametrize("language", ["ru", "en"])


async def started_chat(stack: Stack, language: str) -> Chat:
    chat = Chat(stack, new_user(language))
    chat.say("/start")
    await chat.expect(ANSWERS[language]["balance"])
    return chat


def requested_by(stack: Stack, chat: Chat) -> list[JobRequested]:
    return stack.events.of(JobRequested, telegram_id=chat.user.id)


@LANGUAGES
async def test_things_that_are_not_photos(stack: Stack, language: str) -> None:
    a = ANSWERS[language]
    chat = await started_chat(stack, language)
    chat.mark()
    stack.telegram.send_sticker(chat.user)
    await chat.expect(a["not_a_photo"])
    chat.document(b"%PDF-1.4 not an image", mime_type="application/pdf", file_name="cv.pdf")
    await chat.expect(a["not_a_photo"])
    chat.document(b"\xff\xd8 garbage, not a jpeg", mime_type="image/jpeg", file_name="x.jpg")
    await chat.expect(a["not_a_photo"])
    chat.say("/nonsense")
    await chat.expect(a["unknown"])
    assert requested_by(stack, chat) == []


@LANGUAGES
async def test_a_file_over_the_download_limit(stack: Stack, language: str) -> None:
    chat = await started_chat(stack, language)
    chat.photo(size=25 * 1024 * 1024)
    await chat.expect(ANSWERS[language]["too_large"])
    chat.document(image_bytes(), mime_type="image/png", file_name="big.png", size=21 * 2**20)
    await chat.expect(ANSWERS[language]["too_large"])
    assert not any(call.method == "getFile" for call in stack.telegram.sent_to(chat.user.id))


@LANGUAGES
async def test_too_many_pixels(stack: Stack, language: str) -> None:
    chat = await started_chat(stack, language)
    side = int(MAX_TEST_PIXELS**0.5) + 10
    chat.document(image_bytes((side, side), "PNG"), mime_type="image/png", file_name="big.png")
    await chat.expect(ANSWERS[language]["pixels"])


@LANGUAGES
async def test_an_unsupported_format(stack: Stack, language: str) -> None:
    chat = await started_chat(stack, language)
    chat.document(image_bytes(kind="GIF"), mime_type="image/gif", file_name="cat.gif")
    await chat.expect(ANSWERS[language]["format"])
    chat.document(image_bytes(kind="BMP"), mime_type="image/bmp", file_name="cat.bmp")
    await chat.expect(ANSWERS[language]["format"])


@LANGUAGES
async def test_a_prompt_too_long(stack: Stack, language: str) -> None:
    a = ANSWERS[language]
    chat = await started_chat(stack, language)
    chat.photo(caption="x" * 1001)
    await chat.expect(a["prompt"])
    menu = stack.telegram.sent_to(chat.user.id, "sendMessage")[0]
    chat.press_data(menu.message_id or 0, "m:prompt")
    await chat.expect(a["ask_prompt"])
    chat.say("y" * 1001)
    await chat.expect(a["prompt"])
    assert requested_by(stack, chat) == []


@LANGUAGES
async def test_stale_and_forged_buttons(stack: Stack, language: str) -> None:
    a = ANSWERS[language]
    chat = await started_chat(stack, language)
    other = await started_chat(stack, language)
    other.photo()
    offer = await other.expect(a["photo_received"])
    other.press(offer, "Фото")
    presets = await other.expect(a["choose_preset"])
    other.press(presets, "Эскиз")
    confirm = await other.expect(ANSWERS[language]["confirm"])
    other.press(confirm, a["start"])
    (request,) = await stack.events.wait_for(JobRequested, telegram_id=other.user.id)
    message_id = confirm.message_id or 0

    for data in (
        "d:start:0123456789ab",  # a confirm button of a draft that is not (any more) the user's
        "x:" + request.request_id.hex,  # cancel someone else's job
        "x:not-a-uuid",
        "r:again:" + request.request_id.hex,  # repeat someone else's job
        "c:deadbeef:0",  # a catalog revision that no longer exists
        "p:999999",  # an unknown preset
        "k:gold",  # an unknown top-up package
        "zz:forged",
        "",
    ):
        query = chat.press_data(message_id, data)
        assert a["stale"] in await chat.alert(query), data
        await asyncio.sleep(FLOOD_INTERVAL_S)  # no faster than the flood limit refills
    assert requested_by(stack, chat) == []


@LANGUAGES
async def test_a_flood_is_answered_once_and_dropped(stack: Stack, language: str) -> None:
    a = ANSWERS[language]
    chat = await started_chat(stack, language)
    chat.mark()
    for n in range(2 * FLOOD_LIMIT):
        stack.telegram.say(chat.user, f"spam {n}")
    await chat.expect(a["flood"])
    await asyncio.sleep(0.5)
    assert len(chat.said(a["flood"])) == 1
    assert len(chat.said(a["offered"])) < 2 * FLOOD_LIMIT


@LANGUAGES
async def test_a_job_over_the_users_cap_is_refused_uncharged(stack: Stack, language: str) -> None:
    a = ANSWERS[language]
    chat = await started_chat(stack, language)
    status = 0
    for _ in range(MAX_UNFINISHED + 1):
        chat.photo()
        offer = await chat.expect(a["photo_received"])
        chat.press(offer, "Фото")
        presets = await chat.expect(a["choose_preset"])
        chat.press(presets, "Эскиз")
        confirm = await chat.expect(a["confirm"])
        chat.press(confirm, a["start"])
        status = confirm.message_id or 0
        await asyncio.sleep(4 * FLOOD_INTERVAL_S)  # four updates per round: refilled
    user_id = await _account(stack, chat)
    (rejected,) = await stack.events.wait_for(JobRequestRejected, user_id=user_id)
    assert rejected.reason == "active_jobs_cap"
    await stack.telegram.shown_eventually(chat.user.id, status, a["cap"])


async def _account(stack: Stack, chat: Chat) -> int:
    customer = await stack.gateway.conversation.known(chat.user.id)
    assert customer is not None
    return customer.user_id


@pytest.fixture
async def lonely_gateway(
    gateway_database_url: str, amqp_url: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[TelegramSandbox]:
    """A gateway whose billing and jobs never answer (nobody serves its namespace)."""
    telegram = TelegramSandbox()
    await telegram.start()
    settings = gateway_settings(
        gateway_database_url,
        amqp_url,
        topology,
        telegram,
        tmp_path,
        broker=BrokerSettings(url=amqp_url, namespace=topology.namespace, rpc_timeout_s=0.5),  # type: ignore[arg-type]
    )
    gateway = build(settings)
    async with gateway.app:
        yield telegram
    await telegram.stop()


@LANGUAGES
async def test_billing_or_jobs_not_answering(
    lonely_gateway: TelegramSandbox, language: str
) -> None:
    user = new_user(language)
    lonely_gateway.say(user, "/start")
    answer = await lonely_gateway.wait_for(user.id, ANSWERS[language]["busy"])
    assert answer.method == "sendMessage"


@pytest.mark.parametrize(
    ("language", "tap"),
    [("ru", "m:balance"), ("en", "m:topup"), ("ru", "m:history"), ("en", "m:catalog")],
)
async def test_a_tap_waiting_on_billing_or_jobs_stops_its_spinner_first(
    stack: Stack, lonely_gateway: TelegramSandbox, language: str, tap: str
) -> None:
    """Balance, packages, history and the catalog ask billing or jobs: the tap is answered
    before they do (here they never will), and "busy" comes into the chat after."""
    chat = await started_chat(stack, language)  # known: no account is opened on the tap
    query = lonely_gateway.press(chat.user, 1, tap)
    busy = await lonely_gateway.wait_for(chat.user.id, ANSWERS[language]["busy"])
    answer = await lonely_gateway.answer_to(query)
    assert (answer.params.get("text"), busy.method) == (None, "sendMessage")
    assert answer.at < busy.at
