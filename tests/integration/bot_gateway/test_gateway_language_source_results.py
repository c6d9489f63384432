"""The language switch in the menu, /start links' sources, and results after delivery (sent
again from /history while kept, in original quality as a file, "again" as a new request with a
new seed), in Russian and English, end to end: real aiogram against the fake Bot API, the
gateway, billing and jobs on the real broker and database; the test plays the runner."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.events import JobCreated, JobDispatchedV1, JobRequested
from support.gateway_harness import Chat, Stack, new_user
from support.messaging import eventually

PHRASES = {
    "ru": {
        "balance": "Ваш баланс: {}",
        "menu_button": "Язык",
        "choose_language": "Выберите язык:",
        "name": "Русский",
        "chosen": "Готово: теперь я говорю по-русски.",
        "menu": "Что делаем?",
        "history_button": "История",
        "photo_received": "Фото получено",
        "category": "Фото: выберите пресет",
        "confirm": "Стоимость: {} кредитов",
        "start": "Запустить",
        "done": "«Мультфильм»: готово",
        "ready": "«Мультфильм» готово",
        "original": "В исходном качестве",
        "original_caption": "«Мультфильм» в исходном качестве.",
        "history": "Последние изображения:",
        "kept": "Результаты хранятся 30 дн.",
        "not_kept": "Этот результат больше не хранится: результаты хранятся 30 дн.",
        "again": "Ещё раз",
        "outdated": "Эта кнопка устарела",
    },
    "en": {
        "balance": "Your balance: {}",
        "menu_button": "Language",
        "choose_language": "Choose the language:",
        "name": "English",
        "chosen": "Done: I will speak English from now on.",
        "menu": "What shall we do?",
        "history_button": "History",
        "photo_received": "Photo received",
        "category": "Фото: choose a preset",
        "confirm": "Price: {} credits",
        "start": "Start",
        "done": "«Мультфильм»: done",
        "ready": "«Мультфильм» is ready",
        "original": "Original quality",
        "original_caption": "«Мультфильм» in original quality.",
        "history": "Recent images:",
        "kept": "Results are kept for 30 days",
        "not_kept": "This result is no longer kept: results are kept for 30 days.",
        "again": "Again",
        "outdated": "This button is outdated",
    },
}
OTHER = {"ru": "en", "en": "ru"}
LANGUAGES = pytest.mark.parametrize("language", ["ru", "en"])


async def started_chat(stack: Stack, language: str) -> Chat:
    chat = Chat(stack, new_user(language))
    chat.say("/start")
    await chat.expect(PHRASES[language]["balance"].format(60))
    return chat


async def paid_result(stack: Stack, chat: Chat, language: str) -> tuple[JobCreated, Any]:
    """Photo → «Мультфильм» (20 credits) → Start → the runner's result: the job and the photo."""
    p = PHRASES[language]
    chat.photo()
    chat.press(await chat.expect(p["photo_received"]), "Фото")
    chat.press(await chat.expect(p["category"]), "Мультфильм")
    confirm = await chat.expect(p["confirm"].format(20))
    chat.press(confirm, p["start"])
    (created,) = await stack.events.wait_for(JobCreated, telegram_id=chat.user.id)
    chat.mark()
    await stack.run_job(created.job_id, steps=1)
    result = await chat.expect(p["ready"], method="sendPhoto")
    await stack.telegram.shown_eventually(chat.user.id, confirm.message_id or 0, p["done"])
    return created, result


async def user_row(engine: AsyncEngine, telegram_id: int) -> Any:
    async with engine.connect() as connection:
        found = await connection.execute(
            text(
                "SELECT language, chosen_language, source, source_at FROM gateway_users "
                "WHERE telegram_id = :id"
            ),
            {"id": telegram_id},
        )
        return found.one()


@LANGUAGES
async def test_the_language_chosen_in_the_menu_wins_over_telegrams(
    stack: Stack, gateway_engine: AsyncEngine, language: str
) -> None:
    """Telegram keeps saying the user's language is `language`; they pick the other one in the
    menu, and every later message speaks it: replies, the menu, the job's status and result."""
    chosen = OTHER[language]
    p, q = PHRASES[language], PHRASES[chosen]
    chat = await started_chat(stack, language)
    menu = stack.telegram.sent_to(chat.user.id, "sendMessage")[-1]
    assert f"{p['menu_button']} · {q['menu_button']}" in menu.button("🌐")["text"]
    chat.press(menu, "🌐")
    languages = await chat.expect(p["choose_language"])
    assert [b["text"] for b in languages.buttons] == ["🇷🇺 Русский", "🇬🇧 English"]
    chat.press(languages, q["name"])
    switched = await chat.expect(q["chosen"])
    assert q["menu"] in switched.text
    assert q["history_button"] in switched.button("🕘")["text"]
    row = await user_row(gateway_engine, chat.user.id)
    assert (row.language, row.chosen_language) == (chosen, chosen)

    chat.say("/balance")
    await chat.expect(q["balance"].format(60))
    chat.say("/start")
    await chat.expect(q["balance"].format(60))
    await paid_result(stack, chat, chosen)  # each step, status and result in the chosen one
    assert (await user_row(gateway_engine, chat.user.id)).language == chosen

    chat.press(switched, "🌐")  # and back
    chat.press(await chat.expect(q["choose_language"]), p["name"])
    await chat.expect(p["chosen"])
    chat.say("/balance")
    await chat.expect(p["balance"].format(40))


@LANGUAGES
async def test_a_forged_language_changes_nothing(
    stack: Stack, gateway_engine: AsyncEngine, language: str
) -> None:
    chat = await started_chat(stack, language)
    menu = stack.telegram.sent_to(chat.user.id, "sendMessage")[-1]
    query = chat.press_data(menu.message_id or 0, "l:de")
    assert PHRASES[language]["outdated"] in await chat.alert(query)
    row = await user_row(gateway_engine, chat.user.id)
    assert (row.language, row.chosen_language) == (language, None)


@LANGUAGES
async def test_a_start_link_records_where_the_user_came_from_the_first_kept(
    stack: Stack, gateway_engine: AsyncEngine, language: str
) -> None:
    p = PHRASES[language]
    chat = Chat(stack, new_user(language))
    chat.say("/start spring_promo-2")
    await chat.expect(p["balance"].format(60))
    row = await user_row(gateway_engine, chat.user.id)
    assert row.source == "spring_promo-2"
    assert row.source_at is not None
    chat.say("/start group")  # a later link does not replace where they came from
    await chat.expect(p["balance"].format(60))
    assert (await user_row(gateway_engine, chat.user.id)).source == "spring_promo-2"


@LANGUAGES
async def test_only_what_a_start_link_can_carry_is_recorded(
    stack: Stack, gateway_engine: AsyncEngine, language: str
) -> None:
    """A payload Telegram's links cannot carry (typed by hand) is no source; the user is
    welcomed all the same, and the group pointer's link (?start=group) is one."""
    p = PHRASES[language]
    chat = Chat(stack, new_user(language))
    for typed in ("/start", "/start Весна", "/start a b", "/start promo!", "/start " + "x" * 65):
        chat.say(typed)
        await chat.expect(p["balance"].format(60))
        assert (await user_row(gateway_engine, chat.user.id)).source is None, typed
    chat.say("/start " + "x" * 64)
    await chat.expect(p["balance"].format(60))
    assert (await user_row(gateway_engine, chat.user.id)).source == "x" * 64

    pointed = Chat(stack, new_user(language))
    pointed.say("/start group")
    await pointed.expect(p["balance"].format(60))
    assert (await user_row(gateway_engine, pointed.user.id)).source == "group"


@LANGUAGES
async def test_a_result_in_original_quality_and_again_from_history(
    stack: Stack, language: str
) -> None:
    p = PHRASES[language]
    chat = await started_chat(stack, language)
    created, result = await paid_result(stack, chat, language)
    stored = (stack.store_root / f"results/{created.job_id}.png").read_bytes()

    chat.press(result, p["original"])
    original = await chat.expect(p["original_caption"], method="sendDocument")
    assert original.photo == stored  # the file itself, not Telegram's recompressed photo

    chat.say("/history")
    history = await chat.expect(p["history"])
    assert p["kept"] in history.text
    button = history.button(f"#{created.job_id}")
    assert button["text"] == f"📥 #{created.job_id} · Мультфильм"
    chat.press(history, f"#{created.job_id}")
    again = await chat.expect(p["ready"], method="sendPhoto")
    assert again.photo == stored
    assert {b["text"] for b in again.buttons} == {b["text"] for b in result.buttons}
    assert not chat.said(p["original_caption"])  # the photo, not the file


@LANGUAGES
async def test_a_result_past_its_retention_is_not_offered_and_is_deleted(
    stack: Stack, gateway_engine: AsyncEngine, language: str
) -> None:
    p = PHRASES[language]
    chat = await started_chat(stack, language)
    created, result = await paid_result(stack, chat, language)
    chat.say("/history")
    history = await chat.expect(p["history"])
    assert history.button(f"#{created.job_id}")

    async with gateway_engine.begin() as connection:  # a month passes
        await connection.execute(
            text(
                "UPDATE gateway_jobs SET completed_at = now() - interval '31 days' "
                "WHERE job_id = :id"
            ),
            {"id": created.job_id},
        )
    path = stack.store_root / f"results/{created.job_id}.png"
    month_ago = time.time() - 31 * 86400
    os.utime(path, (month_ago, month_ago))

    chat.say("/history")
    history_now = await chat.expect(p["history"])
    assert f"#{created.job_id}" in history_now.text
    assert p["kept"] not in history_now.text
    assert not history_now.buttons
    for action in ("file", "send"):  # buttons from before
        query = chat.press_data(result.message_id or 0, f"r:{action}:{created.request_id.hex}")
        assert await chat.alert(query) == p["not_kept"]
    assert not chat.said(p["ready"])

    assert await stack.gateway.results.purge() >= 1
    assert not path.exists()


@LANGUAGES
async def test_someone_elses_result_is_never_sent(stack: Stack, language: str) -> None:
    p = PHRASES[language]
    owner = await started_chat(stack, language)
    created, _ = await paid_result(stack, owner, language)
    other = await started_chat(stack, language)
    menu = stack.telegram.sent_to(other.user.id, "sendMessage")[-1]
    for action in ("file", "send"):
        query = other.press_data(menu.message_id or 0, f"r:{action}:{created.request_id.hex}")
        assert p["outdated"] in await other.alert(query)
    assert not other.said(p["ready"])
    assert not other.said(p["original_caption"])


@LANGUAGES
async def test_again_is_a_new_request_at_the_confirmed_price_with_a_new_seed(
    stack: Stack, language: str
) -> None:
    p = PHRASES[language]
    chat = await started_chat(stack, language)
    first, result = await paid_result(stack, chat, language)
    chat.press(result, p["again"])
    confirm = await chat.expect(p["confirm"].format(20))
    chat.press(confirm, p["start"])

    def made_again() -> list[JobCreated]:
        return [
            created
            for created in stack.events.of(JobCreated, telegram_id=chat.user.id)
            if created.request_id != first.request_id
        ]

    async def asked_again() -> bool:
        return bool(made_again())

    await eventually(asked_again)
    second = made_again()[0]
    assert second.job_id != first.job_id
    (requested,) = stack.events.of(JobRequested, request_id=second.request_id)
    assert requested.price == second.price == 20
    seeds = [
        (await stack.events.wait_for(JobDispatchedV1, job_id=job.job_id))[0].seed
        for job in (first, second)
    ]
    assert None not in seeds
    assert seeds[0] != seeds[1]
    await stack.run_job(second.job_id, steps=1)
    await chat.expect(p["ready"], method="sendPhoto")
    chat.say("/balance")
    await chat.expect(p["balance"].format(20))  # 60 - 20 - 20: each run paid once
