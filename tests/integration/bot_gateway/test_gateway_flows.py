"""Every flow of the issue, in Russian and English, end to end: real aiogram polling a fake Bot
API, the gateway, billing and jobs on the real broker and database; the test plays the runner."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from bot_gateway.conversation import Conversation
from bot_gateway.models import DELIVERY
from contracts.events import (
    CreditsGranted,
    CreditsGrantRefused,
    CreditsGrantRequested,
    JobAttemptFailed,
    JobCompleted,
    JobCreated,
    JobDispatchedV1,
    JobProgress,
    JobRejectReason,
    JobRejectReasonV1,
    JobRequested,
    JobRequestRejected,
    JobRequestRejectedV1,
    JobRetried,
    JobRetryOrdered,
    JobStarted,
    JobSucceeded,
    PaymentCreated,
    PaymentSucceeded,
    TopUpRequested,
    WeeklyBonusGranted,
)
from messaging.database import create_engine
from messaging.settings import DatabaseSettings
from sandbox.telegram import TgUser
from support.gateway_harness import ADMIN, Chat, Stack, image_bytes, new_user
from support.messaging import eventually

PHRASES = {
    "ru": {
        "balance": "Ваш баланс: {}",
        "welcome": "Приветственный подарок: 60",
        "photo_received": "Фото получено",
        "category": "Фото: выберите пресет",
        "confirm": "Стоимость: {} кредитов",
        "start": "Запустить",
        "accepted": "принято, ждём оплату",
        "queued": "в очереди, позиция ",
        "step": "из 2.",
        "done": "«Мультфильм»: готово",
        "ready": "«Мультфильм» готово",
        "again": "Ещё раз",
        "another": "Другой пресет",
        "refund_promise": "20 кредитов вернутся на баланс",
        "refunded": "Возвращено 20 кредитов. Баланс: 60",
        "insufficient": "стоимость 1000, на балансе 60, не хватает 940",
        "topup": "Пополнить",
        "packages": "Выберите пакет",
        "package": "100 кредитов за 100 ₽",
        "creating": "Создаю платёж",
        "pay": "Оплатите 100 ₽",
        "paid": "Платёж получен: +100 кредитов. Баланс: 160",
        "bonus": "Еженедельный бонус: +30 кредитов. Баланс: 90",
        "history": "Последние изображения:",
        "history_done": "готово · 20 кредитов",
        "credits": "пополнение",
        "own_prompt": "Свой запрос",
        "ask_prompt": "Опишите, что сделать",
        "prompt_received": "Пришлите фото для редактирования",
        "generate": "Нарисовать по тексту",
        "choose_cancel": "Что отменить?",
        "cancel_requested": "Запрошена отмена",
        "canceled": "отменено",
        "help": "Как это работает",
        "presets": "Пресеты",
        "choose_category": "Выберите категорию",
        "price_changed": "цена изменилась после подтверждения: теперь {} кредитов",
        "retried": "«Мультфильм»: поддержка перезапустила ваш неудавшийся запрос, бесплатно",
        "busy": "Сервис сейчас занят. Попробуйте через минуту; ничего не списано.",
        "ask_photo": "Пришлите фото для «Мультфильм»",
        "noted": "Запомнил: «{}». Теперь пришлите фото.",
        "prompt": "Запрос: «{}»",
    },
    "en": {
        "balance": "Your balance: {}",
        "welcome": "Welcome gift: 60",
        "photo_received": "Photo received",
        "category": "Фото: choose a preset",
        "confirm": "Price: {} credits",
        "start": "Start",
        "accepted": "accepted, waiting for payment",
        "queued": "in the queue, position ",
        "step": "of 2.",
        "done": "«Мультфильм»: done",
        "ready": "«Мультфильм» is ready",
        "again": "Again",
        "another": "Another preset",
        "refund_promise": "The 20 credits go back to your balance",
        "refunded": "20 credits returned. Balance: 60",
        "insufficient": "it costs 1000, you have 60, 940 short",
        "topup": "Top up",
        "packages": "Choose a package",
        "package": "100 credits for 100 ₽",
        "creating": "Creating the payment",
        "pay": "Pay 100 ₽",
        "paid": "Payment received: +100 credits. Balance: 160",
        "bonus": "Weekly bonus: +30 credits. Balance: 90",
        "history": "Recent images:",
        "history_done": "done · 20 credits",
        "credits": "top-up",
        "own_prompt": "Own prompt",
        "ask_prompt": "Describe what to do",
        "prompt_received": "Send a photo to edit",
        "generate": "Draw from text",
        "choose_cancel": "Which one shall I cancel?",
        "cancel_requested": "Cancel requested",
        "canceled": "canceled",
        "help": "How it works",
        "presets": "Presets",
        "choose_category": "Choose a category",
        "price_changed": "the price has changed since you confirmed it: it is {} credits now",
        "retried": "«Мультфильм»: support restarted your failed request, at no charge",
        "busy": "The service is busy right now. Please try again in a minute; nothing was charged.",
        "ask_photo": "Send a photo for «Мультфильм»",
        "noted": "Noted: «{}». Now send a photo.",
        "prompt": "Prompt: «{}»",
    },
}
LANGUAGES = pytest.mark.parametrize("language", ["ru", "en"])


async def shown_under_way(stack: Stack, chat: Chat, message_id: int, p: dict[str, str]) -> None:
    """The status message says the request is under way: «accepted» or, already, the queue
    position (a newer text replaces one not sent yet, so «accepted» may never be shown)."""

    async def under_way() -> bool:
        shown = stack.telegram.shown.get((chat.user.id, message_id))
        return shown is not None and any(p[s] in shown.text for s in ("accepted", "queued"))

    await eventually(under_way)


async def started_chat(stack: Stack, language: str) -> Chat:
    chat = Chat(stack, new_user(language))
    chat.say("/start")
    await chat.expect(PHRASES[language]["balance"].format(60))
    return chat


async def confirm_preset(chat: Chat, language: str, preset: str, price: int) -> int:
    """Photo → category → preset → confirm: the message id that becomes the status message."""
    p = PHRASES[language]
    chat.photo()
    categories = await chat.expect(p["photo_received"])
    chat.press(categories, "Фото")
    presets = await chat.expect(p["category"])
    chat.press(presets, preset)
    confirm = await chat.expect(p["confirm"].format(price))
    chat.press(confirm, p["start"])
    assert confirm.message_id is not None
    return confirm.message_id


async def created_job(stack: Stack, chat: Chat) -> JobCreated:
    (created,) = await stack.events.wait_for(JobCreated, telegram_id=chat.user.id)
    return created


@LANGUAGES
async def test_start_welcomes_with_the_balance_and_the_menu(stack: Stack, language: str) -> None:
    chat = Chat(stack, new_user(language))
    chat.say("/start")
    welcome = await chat.expect(PHRASES[language]["welcome"])
    assert PHRASES[language]["balance"].format(60) in welcome.text
    assert {b["callback_data"] for b in welcome.buttons} >= {"m:catalog", "m:topup", "m:history"}
    chat.say("/start")  # a second /start opens nothing new
    again = await chat.expect(PHRASES[language]["balance"].format(60))
    assert PHRASES[language]["welcome"] not in again.text


@LANGUAGES
async def test_photo_preset_confirm_status_and_result(stack: Stack, language: str) -> None:
    p = PHRASES[language]
    chat = await started_chat(stack, language)
    chat.photo()
    categories = await chat.expect(p["photo_received"])
    chat.press(categories, "Фото")
    presets = await chat.expect(p["category"])
    names = [button["text"] for button in presets.buttons]
    assert names[:4] == ["🎨 Мультфильм · 20", "🎌 Аниме · 30", "✏️ Эскиз · 1", "💎 Премиум · 1000"]
    chat.press(presets, "Мультфильм")
    confirm = await chat.expect(p["confirm"].format(20))
    chat.press(confirm, p["start"])
    status_id = confirm.message_id
    assert status_id is not None
    await shown_under_way(stack, chat, status_id, p)

    created = await created_job(stack, chat)
    (requested,) = stack.events.of(JobRequested, request_id=created.request_id)
    assert requested.preset_id is not None
    (image_key,) = requested.image_keys
    assert image_key.startswith(f"uploads/{chat.user.id}/")
    assert requested.language == language
    assert (stack.store_root / image_key).is_file()
    await stack.telegram.shown_eventually(chat.user.id, status_id, p["queued"])

    chat.mark()
    await stack.run_job(created.job_id, steps=2, step_pause_s=0.5)
    await stack.telegram.shown_eventually(chat.user.id, status_id, p["done"])
    result = await chat.expect(p["ready"], method="sendPhoto")
    assert result.photo
    assert result.photo.startswith(b"\x89PNG")
    assert {p["again"], p["another"]} <= {b["text"].split(" ", 1)[1] for b in result.buttons}
    edits = [c.text for c in stack.telegram.sent_to(chat.user.id, "editMessageText")]
    assert any(p["step"] in text for text in edits), edits

    chat.say("/balance")
    await chat.expect(p["balance"].format(40))

    chat.press(result, p["again"])
    await chat.expect(p["confirm"].format(20))
    chat.press(result, p["another"])
    await chat.expect(p["choose_category"])


@LANGUAGES
async def test_a_price_changed_since_the_confirmation_is_charged_only_once_confirmed(
    stack: Stack, gateway_database_url: str, language: str
) -> None:
    """The catalog reprices a preset while the confirmation is on screen (the gateway's cache
    still says the old price): the tap asks for nothing, the user reads the new price, and
    «Again» confirms the request at it."""
    p = PHRASES[language]
    chat = await started_chat(stack, language)
    chat.photo()
    chat.press(await chat.expect(p["photo_received"]), "Фото")
    chat.press(await chat.expect(p["category"]), "Аниме")
    confirm = await chat.expect(p["confirm"].format(30))
    engine = create_engine(DatabaseSettings(url=gateway_database_url))  # type: ignore[arg-type]
    try:
        await _reprice(engine, "Аниме", 35)
        chat.press(confirm, p["start"])
        refused = await chat.expect(p["price_changed"].format(35), method="editMessageText")
        assert refused.message_id == confirm.message_id
        # no result was made: no button under the refusal asks for one (it could only fail)
        assert [b["callback_data"][:2] for b in refused.buttons] == ["r:", "r:", "m:"]
        assert not any(b["callback_data"].startswith("r:file:") for b in refused.buttons)
        refusal = await price_refusal_of(stack, chat)
        user_id = refusal.user_id
        assert not stack.events.of(JobCreated, user_id=user_id)
        # v1's plainer copy of a refusal never hides the price v2 says, whichever comes first
        plain = await stack.runner_publisher.publish(
            JobRequestRejectedV1(
                request_id=refusal.request_id, user_id=user_id, chat_id=refusal.chat_id,
                reason=JobRejectReasonV1.invalid_request,
            )
        )  # fmt: skip
        await eventually(lambda: _handled(engine, plain.id))
        shown = stack.telegram.shown[(chat.user.id, refused.message_id or 0)]
        assert p["price_changed"].format(35) in shown.text  # v1 after v2: nothing changed
        await stack.runner_publisher.publish(refusal.model_copy(update={"price": 40}))
        await stack.telegram.shown_eventually(  # v2 after v1: its price shows again
            chat.user.id, refused.message_id or 0, p["price_changed"].format(40)
        )
        chat.say("/balance")
        await chat.expect(p["balance"].format(60))

        chat.press(refused, p["again"])
        again = await chat.expect(p["confirm"].format(35))
        chat.press(again, p["start"])
        (created,) = await stack.events.wait_for(JobCreated, user_id=user_id)
        assert created.price == 35
    finally:
        await _reprice(engine, "Аниме", 30)
        stack.gateway.backends.forget_catalog()
        await engine.dispose()


async def _handled(engine: Any, event_id: uuid.UUID) -> bool:
    async with engine.connect() as connection:
        found = await connection.execute(
            text(f"SELECT 1 FROM {DELIVERY.inbox.name} WHERE event_id = :id"), {"id": event_id}
        )
        return found.first() is not None


async def _reprice(engine: Any, name: str, price: int) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE presets SET price = :price WHERE name = :name"),
            {"price": price, "name": name},
        )


async def price_refusal_of(stack: Stack, chat: Chat) -> JobRequestRejected:
    customer = await stack.gateway.conversation.known(chat.user.id)
    assert customer is not None
    (refused,) = await stack.events.wait_for(JobRequestRejected, user_id=customer.user_id)
    assert refused.reason is JobRejectReason.price_changed
    return refused


@LANGUAGES
async def test_own_prompt_as_caption_and_prompt_then_photo(stack: Stack, language: str) -> None:
    p = PHRASES[language]
    chat = await started_chat(stack, language)
    chat.photo(caption="сделай небо фиолетовым")
    confirm = await chat.expect(p["confirm"].format(30))
    assert p["own_prompt"] in confirm.text
    chat.press(confirm, p["start"])
    created = await created_job(stack, chat)
    (requested,) = stack.events.of(JobRequested, request_id=created.request_id)
    assert requested.prompt == "сделай небо фиолетовым"
    assert requested.preset_id is None
    assert len(requested.image_keys) == 1

    chat.say("/start")
    menu = await chat.expect(p["balance"].format(30))
    chat.press(menu, p["own_prompt"])
    await chat.expect(p["ask_prompt"])
    chat.say("добавь радугу")
    await chat.expect(p["prompt_received"])
    chat.photo()
    confirm = await chat.expect(p["confirm"].format(30))
    assert p["own_prompt"] in confirm.text


@LANGUAGES
async def test_prompt_only_generation(stack: Stack, language: str) -> None:
    p = PHRASES[language]
    chat = await started_chat(stack, language)
    menu = stack.telegram.sent_to(chat.user.id, "sendMessage")[-1]
    chat.press(menu, p["own_prompt"])
    await chat.expect(p["ask_prompt"])
    chat.say("кот в космосе")
    offer = await chat.expect(p["prompt_received"])
    chat.press(offer, p["generate"])
    confirm = await chat.expect(p["confirm"].format(30))
    chat.press(confirm, p["start"])
    created = await created_job(stack, chat)
    assert created.workflow_type == "qwen_image"
    (requested,) = stack.events.of(JobRequested, request_id=created.request_id)
    assert requested.image_keys == []
    assert requested.prompt == "кот в космосе"


@LANGUAGES
async def test_a_failed_job_says_the_credits_came_back(stack: Stack, language: str) -> None:
    p = PHRASES[language]
    chat = await started_chat(stack, language)
    status_id = await confirm_preset(chat, language, "Мультфильм", 20)
    created = await created_job(stack, chat)
    await stack.telegram.shown_eventually(chat.user.id, status_id, p["queued"])
    chat.mark()
    await stack.runner_publisher.publish(
        JobAttemptFailed(job_id=created.job_id, attempt=1, retryable=False, reason="corrupt_image")
    )
    await stack.telegram.shown_eventually(chat.user.id, status_id, p["refund_promise"])
    await chat.expect(p["refunded"])


async def active_at(gateway_database_url: str, telegram_id: int, then: str | None = None) -> Any:
    """The user's `active_at`, then (`then`) set to another time."""
    engine = create_engine(DatabaseSettings(url=gateway_database_url))  # type: ignore[arg-type]
    user = {"id": telegram_id}
    try:
        async with engine.begin() as connection:
            at = await connection.scalar(
                text("SELECT active_at FROM gateway_users WHERE telegram_id = :id"), user
            )
            if then is not None:
                await connection.execute(
                    text("UPDATE gateway_users SET active_at = :at WHERE telegram_id = :id"),
                    {**user, "at": datetime.fromisoformat(then)},
                )
            return at
    finally:
        await engine.dispose()


@LANGUAGES
async def test_a_failed_job_retried_by_support_is_told_and_delivered(
    stack: Stack, language: str, gateway_database_url: str
) -> None:
    """A job the gateway did not ask for (an operator's retry, through the backend API) is
    followed like the user's own: they are told, in their language, then its status message
    shows the queue and is edited to done, and the result comes; nothing is charged. The
    user's own request made them active; the operator's retry does not."""
    p = PHRASES[language]
    chat = await started_chat(stack, language)
    long_ago = "2020-01-01T00:00:00+00:00"
    await active_at(gateway_database_url, chat.user.id, then=long_ago)
    status_id = await confirm_preset(chat, language, "Мультфильм", 20)
    created = await created_job(stack, chat)
    asked = await active_at(gateway_database_url, chat.user.id, then=long_ago)
    assert asked > datetime.now(UTC) - timedelta(minutes=1)
    await stack.telegram.shown_eventually(chat.user.id, status_id, p["queued"])
    await stack.runner_publisher.publish(
        JobAttemptFailed(job_id=created.job_id, attempt=1, retryable=False, reason="corrupt_image")
    )
    await chat.expect(p["refunded"])

    chat.mark()
    key = uuid.uuid4()
    retry = JobRetryOrdered(request_id=key, operator="sam", reason="fixed", job_id=created.job_id)
    await stack.runner_publisher.publish(retry)
    (retried,) = await stack.events.wait_for(JobRetried, request_id=key)
    (free,) = await stack.events.wait_for(JobCreated, job_id=retried.job_id)
    assert (free.price, free.telegram_id, free.preset_id) == (0, chat.user.id, created.preset_id)
    await chat.expect(p["retried"], method="sendMessage")
    status = await chat.expect(p["queued"], method="sendMessage")  # its own status message
    assert status.message_id not in (None, status_id)
    await stack.run_job(retried.job_id, steps=2)
    await chat.expect(p["ready"], method="sendPhoto")
    await stack.telegram.shown_eventually(chat.user.id, status.message_id, p["done"])
    assert {call.method for call in chat.said(p["done"])} == {"editMessageText"}
    chat.say("/balance")
    await chat.expect(p["balance"].format(60))  # refunded once, the retry free
    assert await active_at(gateway_database_url, chat.user.id) == datetime.fromisoformat(long_ago)


@LANGUAGES
async def test_insufficient_credits_show_the_shortfall_and_a_topup_button(
    stack: Stack, language: str
) -> None:
    p = PHRASES[language]
    chat = await started_chat(stack, language)
    status_id = await confirm_preset(chat, language, "Премиум", 1000)
    shown = await stack.telegram.shown_eventually(chat.user.id, status_id, p["insufficient"])
    assert [p["topup"]] == [b["text"].split(" ", 1)[1] for b in shown.buttons]
    chat.say("/balance")
    await chat.expect(p["balance"].format(60))


@LANGUAGES
async def test_topup_pays_and_says_so(stack: Stack, language: str) -> None:
    p = PHRASES[language]
    chat = await started_chat(stack, language)
    chat.say("/topup")
    packages = await chat.expect(p["packages"])
    chat.press(packages, p["package"])
    await chat.expect(p["creating"])
    link = await chat.expect(p["pay"])
    assert link.buttons[0]["url"].startswith(
        stack.yookassa.api_url.removesuffix("/v3") + "/checkout/"
    )
    (created,) = await stack.events.wait_for(PaymentCreated, chat_id=chat.user.id)
    chat.mark()
    assert await stack.pay(created.payment_id) == 200
    await chat.expect(p["paid"])
    # every event of the top-up, the gateway's request included, reads as one story
    await stack.events.wait_for(PaymentSucceeded, payment_id=created.payment_id)
    story = [
        (type(event).__name__, envelope.correlation_id)
        for envelope, event in stack.events.received
        if (isinstance(event, TopUpRequested) and event.telegram_id == chat.user.id)
        or (
            isinstance(event, PaymentCreated | PaymentSucceeded)
            and event.payment_id == created.payment_id
        )
    ]
    assert sorted(story) == [
        ("PaymentCreated", str(created.request_id)),
        ("PaymentSucceeded", str(created.request_id)),
        ("TopUpRequested", str(created.request_id)),
    ]

    chat.say("/history")
    history = await chat.expect(p["credits"])
    assert "+100" in history.text


@LANGUAGES
async def test_weekly_bonus_message(stack: Stack, language: str) -> None:
    p = PHRASES[language]
    chat = await started_chat(stack, language)
    created = await stack.gateway.conversation.known(chat.user.id)
    assert created is not None
    chat.mark()
    await stack.runner_publisher.publish(
        WeeklyBonusGranted(
            user_id=created.user_id,
            telegram_id=chat.user.id,
            amount=30,
            balance=90,
            week="2026-W48",
            granted_at="2026-11-25T10:00:00+03:00",  # type: ignore[arg-type]
        )
    )
    await chat.expect(p["bonus"])


@LANGUAGES
async def test_history_lists_recent_jobs(stack: Stack, language: str) -> None:
    p = PHRASES[language]
    chat = await started_chat(stack, language)
    status_id = await confirm_preset(chat, language, "Мультфильм", 20)
    created = await created_job(stack, chat)
    await stack.run_job(created.job_id, steps=1)
    await stack.telegram.shown_eventually(chat.user.id, status_id, p["done"])
    chat.say("/history")
    history = await chat.expect(p["history"])
    assert f"#{created.job_id}" in history.text
    assert p["history_done"] in history.text


@LANGUAGES
async def test_cancel_a_queued_job_and_get_the_credits_back(stack: Stack, language: str) -> None:
    p = PHRASES[language]
    chat = await started_chat(stack, language)
    status_id = await confirm_preset(chat, language, "Мультфильм", 20)
    await created_job(stack, chat)
    await stack.telegram.shown_eventually(chat.user.id, status_id, p["queued"])
    chat.say("/cancel")
    choose = await chat.expect(p["choose_cancel"])
    query = chat.press(choose, "Мультфильм")
    assert p["cancel_requested"] in await chat.alert(query)
    await stack.telegram.shown_eventually(chat.user.id, status_id, p["canceled"])
    await chat.expect(p["refunded"])


@LANGUAGES
async def test_help_and_the_catalog_from_the_menu(stack: Stack, language: str) -> None:
    p = PHRASES[language]
    chat = await started_chat(stack, language)
    chat.say("/help")
    await chat.expect(p["help"])
    menu = stack.telegram.sent_to(chat.user.id, "sendMessage")[0]
    chat.press(menu, p["presets"])
    categories = await chat.expect(p["choose_category"])
    assert {b["text"] for b in categories.buttons} >= {"Фото", "Генерация"}
    chat.press(categories, "Генерация")
    presets = await chat.expect("Генерация")
    chat.press(presets, "Пейзаж")
    await chat.expect(p["confirm"].format(10))  # text to image: no photo needed


@LANGUAGES
async def test_words_after_a_preset_before_the_photo_refine_it(stack: Stack, language: str) -> None:
    """Preset first, then words, then the photo: the words are kept for the photo, as a
    caption would be, and the preset follows them."""
    p = PHRASES[language]
    chat = await started_chat(stack, language)
    menu = stack.telegram.sent_to(chat.user.id, "sendMessage")[0]
    chat.press(menu, p["presets"])
    chat.press(await chat.expect(p["choose_category"]), "Фото")
    chat.press(await chat.expect(p["category"]), "Мультфильм")
    await chat.expect(p["ask_photo"])
    chat.say("сделай небо фиолетовым")
    await chat.expect(p["noted"].format("сделай небо фиолетовым"))
    chat.photo()
    confirm = await chat.expect(p["confirm"].format(20))
    assert p["prompt"].format("сделай небо фиолетовым") in confirm.text
    assert "«Мультфильм»" in confirm.text
    chat.press(confirm, p["start"])
    created = await created_job(stack, chat)
    (requested,) = stack.events.of(JobRequested, request_id=created.request_id)
    assert (requested.preset_id is not None, requested.prompt) == (True, "сделай небо фиолетовым")
    assert len(requested.image_keys) == 1


async def test_a_duplicate_completion_sends_one_photo(stack: Stack) -> None:
    chat = await started_chat(stack, "ru")
    status_id = await confirm_preset(chat, "ru", "Мультфильм", 20)
    created = await created_job(stack, chat)
    completed = await stack.run_job(created.job_id, steps=1)
    await stack.telegram.shown_eventually(chat.user.id, status_id, "готово")
    await stack.runner_publisher.publish(completed)  # a second report of the same result
    await stack.runner_publisher.publish(completed)
    await stack.events.wait_for(type(completed), count=3, job_id=created.job_id)
    assert len(stack.events.of(JobSucceeded, job_id=created.job_id)) == 1  # jobs decided once
    chat.mark()
    chat.say("/help")  # handled after the duplicates: the photo would have gone out by now
    await chat.expect("Как это работает")
    assert len(stack.telegram.sent_to(chat.user.id, "sendPhoto")) == 1


async def test_progress_edits_are_thinned_but_the_final_state_shows(stack: Stack) -> None:
    chat = await started_chat(stack, "ru")
    status_id = await confirm_preset(chat, "ru", "Мультфильм", 20)
    created = await created_job(stack, chat)
    await stack.telegram.shown_eventually(chat.user.id, status_id, "в очереди")
    await stack.run_job(created.job_id, steps=30, step_pause_s=0.01)
    await stack.telegram.shown_eventually(chat.user.id, status_id, "готово")
    edits = [
        call
        for call in stack.telegram.sent_to(chat.user.id, "editMessageText")
        if call.message_id == status_id
    ]
    assert len(edits) < 15, [c.text for c in edits]  # 30 progress reports, far fewer edits


async def test_admins_get_stats_and_broadcast_through_the_sender(stack: Stack) -> None:
    listener = await started_chat(stack, "ru")
    admin = Chat(stack, ADMIN)
    admin.say("/stats")
    stats = await admin.expect("Users: ")
    assert "Messages waiting: " in stats.text
    admin.say("/broadcast Новые пресеты!")
    queued = await admin.expect("Broadcast queued for ")
    assert int(queued.text.split("for ")[1].split()[0]) >= 2
    await listener.expect("Новые пресеты!")
    listener.say("/stats")  # not an admin: just text the bot does not understand
    await listener.expect("Не понял")
    assert listener.said("Users: ") == []


async def test_a_retried_attempt_reports_its_own_steps(stack: Stack) -> None:
    chat = await started_chat(stack, "ru")
    status_id = await confirm_preset(chat, "ru", "Мультфильм", 20)
    created = await created_job(stack, chat)
    await stack.events.wait_for(JobDispatchedV1, job_id=created.job_id)
    await stack.runner_publisher.publish(
        JobStarted(job_id=created.job_id, attempt=1, runner_id="r1", total_steps=4)
    )
    await stack.runner_publisher.publish(
        JobProgress(job_id=created.job_id, attempt=1, step=3, total_steps=4)
    )
    await stack.telegram.shown_eventually(chat.user.id, status_id, "шаг 3 из 4")
    await stack.runner_publisher.publish(
        JobAttemptFailed(
            job_id=created.job_id, attempt=1, retryable=True, reason="gpu_out_of_memory"
        )
    )
    await stack.events.wait_for(JobDispatchedV1, job_id=created.job_id, attempt=2)
    await stack.runner_publisher.publish(
        JobStarted(job_id=created.job_id, attempt=2, runner_id="r2", total_steps=4)
    )
    await stack.runner_publisher.publish(
        JobProgress(job_id=created.job_id, attempt=2, step=1, total_steps=4)
    )
    await stack.telegram.shown_eventually(chat.user.id, status_id, "шаг 1 из 4")
    await stack.runner_publisher.publish(  # a straggler of the first attempt changes nothing
        JobProgress(job_id=created.job_id, attempt=1, step=4, total_steps=4)
    )
    completed = await stack.run_job(created.job_id, steps=1)
    assert completed.attempt == 2
    await stack.telegram.shown_eventually(chat.user.id, status_id, "готово")
    texts = [c.text for c in stack.telegram.sent_to(chat.user.id, "editMessageText")]
    assert not any("шаг 4 из 4" in text for text in texts)


async def test_a_canceled_job_the_runner_still_completes_sends_no_photo(
    stack: Stack, gateway_database_url: str
) -> None:
    """The runner's last report arrives after the cancel (and its refund): jobs ignores it, so
    the user keeps the refund and gets no result."""
    p = PHRASES["ru"]
    chat = await started_chat(stack, "ru")
    status_id = await confirm_preset(chat, "ru", "Мультфильм", 20)
    created = await created_job(stack, chat)
    await stack.events.wait_for(JobDispatchedV1, job_id=created.job_id)
    await stack.runner_publisher.publish(
        JobStarted(job_id=created.job_id, attempt=1, runner_id="r1", total_steps=2)
    )
    await stack.telegram.shown_eventually(chat.user.id, status_id, "работа началась")
    chat.say("/cancel")
    choose = await chat.expect(p["choose_cancel"])
    chat.press(choose, "Мультфильм")
    await stack.telegram.shown_eventually(chat.user.id, status_id, p["canceled"])
    await chat.expect(p["refunded"])

    key = f"results/{created.job_id}.png"
    (stack.store_root / key).parent.mkdir(parents=True, exist_ok=True)
    (stack.store_root / key).write_bytes(image_bytes((32, 32), "PNG"))
    late = await stack.runner_publisher.publish(
        JobCompleted(job_id=created.job_id, attempt=1, result_key=key, duration_ms=900, seed=1)
    )
    engine = create_engine(DatabaseSettings(url=gateway_database_url))  # type: ignore[arg-type]
    try:

        async def jobs_handled_it() -> bool:
            async with engine.connect() as connection:
                found = await connection.execute(
                    text("SELECT 1 FROM jobs_inbox WHERE event_id = :id"), {"id": late.id}
                )
                return found.first() is not None

        await eventually(jobs_handled_it)
        async with engine.connect() as connection:
            succeeded = await connection.execute(
                text(
                    "SELECT count(*) FROM jobs_outbox WHERE routing_key = 'job.succeeded' "
                    "AND (envelope -> 'data' ->> 'job_id')::int = :job"
                ),
                {"job": created.job_id},
            )
            assert succeeded.scalar_one() == 0  # decided in the same commit as the claim
    finally:
        await engine.dispose()
    chat.mark()
    chat.say("/help")  # handled after the late report: a photo would be on its way by now
    await chat.expect("Как это работает")
    assert stack.telegram.sent_to(chat.user.id, "sendPhoto") == []
    assert not stack.events.of(JobSucceeded, job_id=created.job_id)
    assert len([c for c in stack.telegram.sent_to(chat.user.id, "sendMessage")
                if p["refunded"] in c.text]) == 1  # fmt: skip


async def test_an_admin_grants_credits_in_russian_and_both_sides_are_told(stack: Stack) -> None:
    receiver = await started_chat(stack, "ru")
    admin = Chat(stack, TgUser(id=ADMIN.id, first_name=ADMIN.first_name, language_code="ru"))
    for unusable in ("/grant", f"/grant {receiver.user.id}", f"/grant {receiver.user.id} -5",
                     f"/grant {receiver.user.id} 0", f"/grant id{receiver.user.id} 5",
                     f"/grant {receiver.user.id} 99999999"):  # fmt: skip
        admin.say(unusable)
        await admin.expect("Использование: /grant <telegram_id> <кредиты> [причина]")
    assert not stack.events.of(CreditsGrantRequested, telegram_id=receiver.user.id)

    admin.say(f"/grant {receiver.user.id} 25 победа в конкурсе")
    await admin.expect(f"Начисление 25 кредитов пользователю {receiver.user.id} передано")
    await admin.expect(f"✅ {receiver.user.id} получил 25 кредитов. Его баланс: 85.")
    await receiver.expect("🎁 Вам начислено 25 кредитов. Баланс: 85.")
    (requested,) = stack.events.of(CreditsGrantRequested, telegram_id=receiver.user.id)
    assert (requested.admin_telegram_id, requested.credits, requested.reason) == (
        ADMIN.id, 25, "победа в конкурсе",
    )  # fmt: skip
    (granted,) = stack.events.of(CreditsGranted, telegram_id=receiver.user.id)
    assert (granted.request_id, granted.balance) == (requested.request_id, 85)
    receiver.say("/balance")
    await receiver.expect(PHRASES["ru"]["balance"].format(85))
    receiver.say("/history")
    history = await receiver.expect("+25 · подарок")
    assert history.text.count("подарок") == 1

    stranger = new_user("ru")  # never talked to the bot: billing has no account
    admin.say(f"/grant {stranger.id} 5")
    await admin.expect(f"❌ Нет аккаунта с Telegram id {stranger.id}: 5 кредитов не начислено")
    (refused,) = await stack.events.wait_for(CreditsGrantRefused, telegram_id=stranger.id)
    assert refused.reason == "unknown_account"
    assert stack.telegram.sent_to(stranger.id, "sendMessage") == []


async def test_a_non_admins_grant_is_not_understood_and_grants_nothing(stack: Stack) -> None:
    user = await started_chat(stack, "ru")
    user.say(f"/grant {user.user.id} 1000 мне нужнее")
    await user.expect("Не понял")
    user.say("/balance")  # handled after /grant: a grant would have been requested by now
    await user.expect(PHRASES["ru"]["balance"].format(60))
    assert not stack.events.of(CreditsGrantRequested, telegram_id=user.user.id)
    assert user.said("передано") == []


async def test_a_double_tapped_start_asks_for_one_job(stack: Stack) -> None:
    p = PHRASES["ru"]
    chat = await started_chat(stack, "ru")
    chat.photo()
    categories = await chat.expect(p["photo_received"])
    chat.press(categories, "Фото")
    presets = await chat.expect(p["category"])
    chat.press(presets, "Мультфильм")
    confirm = await chat.expect(p["confirm"].format(20))
    chat.press(confirm, p["start"])
    chat.press(confirm, p["start"])  # a second tap before the first was answered

    created = await created_job(stack, chat)
    await asyncio.sleep(1.0)  # room for a second request to show up, were there one
    requests = stack.events.of(JobRequested, telegram_id=chat.user.id)
    assert [r.request_id for r in requests] == [created.request_id]


async def test_a_start_tapped_again_later_says_the_job_is_under_way(stack: Stack) -> None:
    """No answer came soon enough (the gateway died, say), so the user taps Start again: the
    bot says the job is on its way instead of calling the button outdated, which made users
    start over and pay for a second job."""
    p = PHRASES["ru"]
    chat = await started_chat(stack, "ru")
    chat.photo()
    categories = await chat.expect(p["photo_received"])
    chat.press(categories, "Фото")
    presets = await chat.expect(p["category"])
    chat.press(presets, "Мультфильм")
    confirm = await chat.expect(p["confirm"].format(20))
    chat.press(confirm, p["start"])
    created = await created_job(stack, chat)
    await shown_under_way(stack, chat, confirm.message_id or 0, p)

    chat.press(confirm, p["start"])
    await chat.expect("Это задание уже запущено")
    assert not chat.said("устарела")
    requests = stack.events.of(JobRequested, telegram_id=chat.user.id)
    assert [r.request_id for r in requests] == [created.request_id]


async def test_a_start_that_failed_midway_can_be_tapped_again(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The draft outlives a Start whose request never committed (a crash, the database gone):
    the re-tapped Start asks for the job instead of calling the button outdated."""
    p = PHRASES["ru"]
    chat = await started_chat(stack, "ru")
    chat.photo()
    categories = await chat.expect(p["photo_received"])
    chat.press(categories, "Фото")
    presets = await chat.expect(p["category"])
    chat.press(presets, "Мультфильм")
    confirm = await chat.expect(p["confirm"].format(20))
    request_job = Conversation.request_job
    failures: list[str] = []

    async def fail_once(self: Conversation, *args: Any, **kwargs: Any) -> uuid.UUID:
        if not failures:
            failures.append("failed")
            raise ConnectionError("the database went away")
        return await request_job(self, *args, **kwargs)

    monkeypatch.setattr(Conversation, "request_job", fail_once)
    chat.press(confirm, p["start"])
    while not failures:  # noqa: ASYNC110  (the failure is ours, not an event to wait on)
        await asyncio.sleep(0.02)
    chat.press(confirm, p["start"])  # nothing happened, so the user taps again

    created = await created_job(stack, chat)
    await shown_under_way(stack, chat, confirm.message_id or 0, p)
    requests = stack.events.of(JobRequested, telegram_id=chat.user.id)
    assert [r.request_id for r in requests] == [created.request_id]


@LANGUAGES
async def test_a_start_that_failed_after_its_tap_was_answered_says_so_in_the_chat(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, language: str
) -> None:
    """The Start stopped the spinner, then the database went away: Telegram refuses a second
    answer to the tap, so the user reads "busy" in the chat instead of an alert never shown."""
    p = PHRASES[language]
    chat = await started_chat(stack, language)
    chat.photo(caption="make it autumn")
    confirm = await chat.expect(p["confirm"].format(30))

    async def broken(self: Conversation, *args: Any, **kwargs: Any) -> uuid.UUID:
        raise ConnectionError("the database went away")

    monkeypatch.setattr(Conversation, "request_job", broken)
    query = chat.press(confirm, p["start"])
    told = await chat.expect(p["busy"])
    assert told.method == "sendMessage"
    answer = await stack.telegram.answer_to(query)
    assert not answer.params.get("text")  # the tap's own answer: the spinner stopped, no alert


async def test_a_result_too_oblong_for_a_photo_arrives_as_a_file(stack: Stack) -> None:
    """Telegram refuses photos with a side ratio over 20: the paid result still goes out."""
    p = PHRASES["ru"]
    chat = await started_chat(stack, "ru")
    chat.photo()
    categories = await chat.expect(p["photo_received"])
    chat.press(categories, "Фото")
    presets = await chat.expect(p["category"])
    chat.press(presets, "Мультфильм")
    confirm = await chat.expect(p["confirm"].format(20))
    chat.press(confirm, p["start"])
    created = await created_job(stack, chat)

    chat.mark()
    await stack.run_job(created.job_id, size=(2100, 100))
    await chat.expect(p["ready"], method="sendDocument")
