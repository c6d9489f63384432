"""Moderation as the user meets it, in Russian and English: refused words and a refused photo
are answered at once and cost nothing (no upload kept, no job requested); a result the runner
refused fails the job, and the credits come back with the reason. The photo is refused by the
real detector on a harmless label the harness makes refusing (a face: see MODERATION)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from importlib.metadata import distribution
from pathlib import Path

import pytest
from click.testing import Result
from PIL import Image
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import CliRunner

from bot_gateway.restrictions import Restrictions
from contracts.events import (
    BalanceRefunded,
    JobAttemptFailed,
    JobCreated,
    JobFailed,
    JobRequested,
    JobSucceeded,
    UserDataErasureRequested,
)
from imagebot.cli import app as cli
from sandbox.telegram import TgUser
from support.gateway_harness import MODERATION, Chat, Stack, image_bytes, new_user
from support.messaging import eventually, scalar

PHRASES = {
    "ru": {
        "balance": "Ваш баланс: 60",
        "prompt_refused": "Не могу это сделать: запрос нарушает правила",
        "photo_refused": "Это фото нельзя использовать",
        "photo_received": "Фото получено",
        "category": "Фото: выберите пресет",
        "confirm": "Стоимость: 20 кредитов",
        "start": "Запустить",
        "queued": "в очереди, позиция ",
        "result_refused": "результат нарушил правила о контенте, поэтому не показан. 20 кредитов",
        "refunded": "Возвращено 20 кредитов. Баланс: 60",
    },
    "en": {
        "balance": "Your balance: 60",
        "prompt_refused": "I can't do that: the request breaks the rules",
        "photo_refused": "This photo can't be used",
        "photo_received": "Photo received",
        "category": "Фото: choose a preset",
        "confirm": "Price: 20 credits",
        "start": "Start",
        "queued": "in the queue, position ",
        "result_refused": "the result broke the content rules, so it is not shown. The 20 credits",
        "refunded": "20 credits returned. Balance: 60",
    },
}
LANGUAGES = pytest.mark.parametrize("language", ["ru", "en"])
REFUSED_WORDS = {"ru": "раздень её", "en": "take off her clothes"}


def face_photo() -> bytes:
    """scikit-image's astronaut (a NASA portrait, public domain) as a phone would send it."""
    path = distribution("scikit-image").locate_file("skimage/data/astronaut.png")
    buffer = io.BytesIO()
    Image.open(Path(str(path))).convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


async def started_chat(stack: Stack, language: str) -> Chat:
    chat = Chat(stack, new_user(language))
    chat.say("/start")
    await chat.expect(PHRASES[language]["balance"])
    return chat


def uploads_of(stack: Stack, chat: Chat) -> list[Path]:
    folder = stack.store_root / "uploads" / str(chat.user.id)
    return sorted(folder.iterdir()) if folder.exists() else []


@LANGUAGES
async def test_refused_words_are_answered_and_nothing_is_requested(
    stack: Stack, language: str
) -> None:
    p = PHRASES[language]
    chat = await started_chat(stack, language)
    chat.say(f"  {REFUSED_WORDS[language]} ")
    await chat.expect(p["prompt_refused"])
    chat.say("/balance")
    await chat.expect(p["balance"])
    chat.photo(caption="a cat in a hat")  # ordinary words go on as ever
    await chat.expect(p["confirm"].split(":")[0])
    assert len(uploads_of(stack, chat)) == 1
    assert stack.events.of(JobRequested, telegram_id=chat.user.id) == []


@LANGUAGES
async def test_a_refused_caption_stops_its_photo(stack: Stack, language: str) -> None:
    p = PHRASES[language]
    chat = await started_chat(stack, language)
    chat.photo(caption="n.a.k.e.d")
    await chat.expect(p["prompt_refused"])
    assert chat.said(p["photo_received"]) == []
    assert uploads_of(stack, chat) == []  # not even downloaded


@LANGUAGES
async def test_a_refused_photo_is_answered_not_kept_and_another_is_taken(
    stack: Stack, language: str
) -> None:
    p = PHRASES[language]
    chat = await started_chat(stack, language)
    chat.photo(face_photo())
    await chat.expect(p["photo_refused"])
    assert chat.said(p["photo_received"]) == []
    assert uploads_of(stack, chat) == []  # never stored
    chat.photo(image_bytes((320, 240)))
    await chat.expect(p["photo_received"])
    assert len(uploads_of(stack, chat)) == 1


@LANGUAGES
async def test_a_refused_result_is_refunded_and_explained(stack: Stack, language: str) -> None:
    p = PHRASES[language]
    chat = await started_chat(stack, language)
    chat.photo()
    categories = await chat.expect(p["photo_received"])
    chat.press(categories, "Фото")
    presets = await chat.expect(p["category"])
    chat.press(presets, "Мультфильм")
    confirm = await chat.expect(p["confirm"])
    chat.press(confirm, p["start"])
    assert confirm.message_id is not None
    (created,) = await stack.events.wait_for(JobCreated, telegram_id=chat.user.id)
    await stack.telegram.shown_eventually(chat.user.id, confirm.message_id, p["queued"])
    chat.mark()
    verdict = "image:nudenet refused: buttocks_exposed (BUTTOCKS_EXPOSED=0.81)"
    await stack.runner_publisher.publish(
        JobAttemptFailed(
            job_id=created.job_id,
            attempt=1,
            retryable=False,
            reason="moderation_refused",
            detail=verdict,
        )
    )
    await stack.telegram.shown_eventually(chat.user.id, confirm.message_id, p["result_refused"])
    await chat.expect(p["refunded"])
    (failed,) = await stack.events.wait_for(JobFailed, job_id=created.job_id)
    assert failed.reason == "moderation_refused"
    assert verdict in failed.detail  # the decision and its scores travel with the job
    (refund,) = await stack.events.wait_for(BalanceRefunded, job_id=created.job_id)
    assert (refund.amount, refund.balance) == (20, 60)


SUSPENSION = {
    "ru": {"slowed": "Несколько запросов отклонено: подождите", "suspended": "приостановлены до"},
    "en": {"slowed": "Several requests were refused: please wait", "suspended": "suspended until"},
}


async def operator(*arguments: str, database_url: str) -> Result:
    """`imagebot moderation ...` as an operator runs it (its own engine, on this database)."""
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, cli, ["moderation", *arguments], env={"DATABASE_URL": database_url}
    )


async def decisions(stack: Stack, telegram_id: int) -> list[tuple[str, str, str, str]]:
    restrictions = Restrictions.of(stack.gateway.runtime.unit_of_work, MODERATION)
    rows = await restrictions.log(telegram_id)
    return [(row.subject, row.decision, row.category, row.actor) for row in reversed(rows)]


@LANGUAGES
async def test_repeated_refusals_slow_down_then_suspend_until_an_operator_lifts_it(
    stack: Stack, language: str, gateway_database_url: str
) -> None:
    p, s = PHRASES[language], SUSPENSION[language]
    chat = await started_chat(stack, language)
    for _ in range(2):
        chat.say(REFUSED_WORDS[language])
        await chat.expect(p["prompt_refused"])
    chat.say("a cat in a hat")  # two refusals: slowed down for MODERATION.slowdown_s
    await chat.expect(s["slowed"])
    assert stack.events.of(JobRequested, telegram_id=chat.user.id) == []
    await asyncio.sleep(MODERATION.slowdown_s + 0.2)  # a wait, not a measurement
    chat.say(REFUSED_WORDS[language])  # the third: suspended
    await chat.expect(p["prompt_refused"])
    chat.say("a cat in a hat")
    await chat.expect(s["suspended"])
    chat.photo()
    await chat.expect(s["suspended"])
    assert uploads_of(stack, chat) == []
    assert await decisions(stack, chat.user.id) == [
        *[("prompt", "refused", "undressing", "moderation")] * 3,
        ("account", "suspended", "", "moderation"),
    ]
    lifted = await operator(
        "unban", str(chat.user.id), "--reason", "appeal granted", "--operator", "alice",
        database_url=gateway_database_url,
    )  # fmt: skip
    assert lifted.exit_code == 0, lifted.output
    chat.say("/balance")
    await chat.expect(p["balance"])
    assert (await decisions(stack, chat.user.id))[-1] == ("account", "unbanned", "", "alice")


async def test_an_operator_bans_with_a_reason_the_user_is_shown(
    stack: Stack, gateway_database_url: str
) -> None:
    chat = Chat(stack, new_user("en"))  # banned before a word (a free user's standing is
    banned = await operator(  # kept for a few seconds: MODERATION_STANDING_CACHE_S)
        "ban", str(chat.user.id), "--reason", "spam and abuse", "--operator", "bob",
        database_url=gateway_database_url,
    )  # fmt: skip
    assert banned.exit_code == 0, banned.output
    chat.say("/start")
    await chat.expect("The bot is closed to you: spam and abuse")
    chat.photo()
    await chat.expect("The bot is closed to you: spam and abuse")
    assert uploads_of(stack, chat) == []
    shown = await operator("log", str(chat.user.id), database_url=gateway_database_url)
    assert f"{chat.user.id} bob account banned - spam and abuse" in shown.output
    again = await operator(
        "unban", str(chat.user.id), "--reason", "mistake", database_url=gateway_database_url
    )
    assert again.exit_code == 0, again.output
    chat.say("/start")
    await chat.expect("Your balance: 60")
    nothing = await operator(
        "unban", str(chat.user.id), "--reason", "twice", database_url=gateway_database_url
    )
    assert nothing.exit_code == 1  # nothing to lift: said so, not pretended


ERASURE = {
    "ru": {"explained": "/deletemydata удаляет", "button": "Удалить мои данные", "done": "Удалено"},
    "en": {"explained": "/deletemydata erases", "button": "Erase my data", "done": "Erased"},
}


@LANGUAGES
async def test_deletemydata_erases_photos_prompts_and_profile_and_keeps_the_money(
    stack: Stack, language: str, gateway_sessions: async_sessionmaker[AsyncSession]
) -> None:
    p, e = PHRASES[language], ERASURE[language]
    user = TgUser(id=new_user().id, first_name="Ada", language_code=language, username="ada_l")
    chat = Chat(stack, user)
    chat.say("/start")
    await chat.expect(p["balance"])
    chat.photo(caption="a fox in the snow")
    confirm = await chat.expect(p["confirm"].split(":")[0])
    chat.press(confirm, p["start"])
    (created,) = await stack.events.wait_for(JobCreated, telegram_id=user.id)
    await stack.run_job(created.job_id)
    await stack.events.wait_for(JobSucceeded, job_id=created.job_id)
    result = stack.store_root / "results" / f"{created.job_id}.png"
    assert result.exists()
    assert len(uploads_of(stack, chat)) == 1
    ledger = f"SELECT count(*) FROM billing_ledger WHERE user_id = {created.user_id}"
    entries = await scalar(gateway_sessions, ledger)  # the welcome gift and the debit
    for table in ("users", "gateway_users"):  # the profile as known before
        named = f"SELECT username FROM {table} WHERE telegram_id = {user.id}"
        assert await scalar(gateway_sessions, named) == "ada_l"

    chat.say("/deletemydata")
    explained = await chat.expect(e["explained"])
    chat.press(explained, e["button"])
    await chat.expect(e["done"])
    assert uploads_of(stack, chat) == []
    assert not result.exists()
    (erasure,) = await stack.events.wait_for(UserDataErasureRequested, telegram_id=user.id)
    assert erasure.user_id == created.user_id

    def erased(sql: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return bool(await scalar(gateway_sessions, sql))

        return check

    job_erased = "SELECT prompt IS NULL AND image_path IS NULL FROM jobs WHERE id = {}"
    await eventually(erased(job_erased.format(created.job_id)))
    await eventually(erased(f"SELECT username IS NULL FROM users WHERE telegram_id = {user.id}"))
    assert await scalar(
        gateway_sessions,
        f"SELECT prompt IS NULL AND image_key IS NULL AND result_key IS NULL "
        f"FROM gateway_jobs WHERE job_id = {created.job_id}",
    )
    assert await scalar(
        gateway_sessions,
        f"SELECT username IS NULL FROM gateway_users WHERE telegram_id = {user.id}",
    )
    assert await scalar(gateway_sessions, ledger) == entries  # the money's record stays
    assert (
        await scalar(gateway_sessions, f"SELECT balance FROM users WHERE telegram_id = {user.id}")
        == 60 - created.price
    )
