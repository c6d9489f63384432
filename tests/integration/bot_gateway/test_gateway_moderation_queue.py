"""The moderation queue as the user meets it, in Russian and English: a photo the detector finds
borderline (the real detector on a harmless label the harness makes holding: a man's face, see
MODERATION) is taken, but Start puts the request in the queue instead of requesting a job; the
user is told it is being checked and nothing is charged. Approved (in the CLI), the job is
requested as the user asked it, at the price they were shown; rejected (by the backend API's
command), the user is told and nothing is charged. Each step is in the audit log and announced.
Identical uploads across accounts are reported to billing, which flags them."""

from __future__ import annotations

import asyncio
import io
import random
import uuid
from importlib.metadata import distribution
from pathlib import Path

import pytest
from aiogram.utils.i18n import I18n
from click.testing import Result
from PIL import Image
from sqlalchemy import text
from typer.testing import CliRunner

from bot_gateway.fingerprints import pixel_digest
from bot_gateway.moderation_cli import LOCALES
from bot_gateway.moderation_queue import ModerationQueue
from bot_gateway.restrictions import Restrictions
from contracts.events import (
    BalanceDebited,
    JobCreated,
    JobRequested,
    ModerationDecided,
    ModerationDecisionRefused,
    ModerationDecisionRequested,
    ModerationHeld,
    ModerationRefused,
    SharedUploadSeen,
    UserRestricted,
)
from contracts.rpc import GetUserModeration, ListHeld
from imagebot.cli import app as cli
from object_store import StorageSettings, create_object_store
from sandbox.telegram import Call
from support.gateway_harness import MODERATION, Chat, Stack, new_user
from support.messaging import eventually

PHRASES = {
    "ru": {
        "photo_received": "Фото получено",
        "category": "Фото: выберите пресет",
        "confirm": "Стоимость: 20 кредитов",
        "start": "Запустить",
        "held": "модератор проверяет ваше фото перед запуском",
        "queued": "в очереди, позиция ",
        "rejected": "модератор проверил ваше фото, и его нельзя использовать",
        "balance": "Ваш баланс: 60",
        "under_way": "Это задание уже запущено",
    },
    "en": {
        "photo_received": "Photo received",
        "category": "Фото: choose a preset",
        "confirm": "Price: 20 credits",
        "start": "Start",
        "held": "a moderator checks your photo before the job starts",
        "queued": "in the queue, position ",
        "rejected": "a moderator checked your photo, and it can't be used",
        "balance": "Your balance: 60",
        "under_way": "This job is already under way",
    },
}
LANGUAGES = pytest.mark.parametrize("language", ["ru", "en"])


async def started_chat(stack: Stack, language: str) -> Chat:
    chat = Chat(stack, new_user(language))
    chat.say("/start")
    await chat.expect(PHRASES[language]["balance"])
    return chat


async def operator(*arguments: str, database_url: str) -> Result:
    """`imagebot moderation ...` as an operator runs it (its own engine, on this database)."""
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, cli, ["moderation", *arguments], env={"DATABASE_URL": database_url}
    )


async def decisions(stack: Stack, telegram_id: int) -> list[tuple[str, str, str, str]]:
    """The user's audit log, oldest first: subject, decision, category, who."""
    rows = await Restrictions.of(stack.gateway.runtime.unit_of_work, MODERATION).log(telegram_id)
    return [(row.subject, row.decision, row.category, row.actor) for row in reversed(rows)]


def cameraman() -> bytes:
    """scikit-image's cameraman (public domain): the detector sees a man's face in it."""
    path = distribution("scikit-image").locate_file("skimage/data/camera.png")
    buffer = io.BytesIO()
    Image.open(Path(str(path))).convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def queue_of(stack: Stack) -> ModerationQueue:
    """The queue's reads, as the gateway answers the backend API."""
    unit_of_work = stack.gateway.runtime.unit_of_work
    return ModerationQueue(
        unit_of_work,
        create_object_store(StorageSettings(local_root=stack.store_root)),
        I18n(path=LOCALES, default_locale="ru", domain="messages"),
        default_language="ru",
        restrictions=Restrictions.of(unit_of_work, MODERATION),
    )


async def held_request(stack: Stack, language: str) -> tuple[Chat, Call, int]:
    """A user whose cameraman photo, with a preset at 20 credits, was held at Start: the chat,
    the confirmation (now the request's status message) and the queue item's id."""
    p = PHRASES[language]
    chat = await started_chat(stack, language)
    chat.photo(cameraman())
    categories = await chat.expect(p["photo_received"])
    chat.press(categories, "Фото")
    presets = await chat.expect(p["category"])
    chat.press(presets, "Мультфильм")
    confirm = await chat.expect(p["confirm"])
    chat.press(confirm, p["start"])
    assert confirm.message_id is not None
    await stack.telegram.shown_eventually(chat.user.id, confirm.message_id, p["held"])
    (held,) = await stack.events.wait_for(ModerationHeld, telegram_id=chat.user.id)
    assert held.subject == "photo"
    assert held.category == "face_male"
    assert held.scores["FACE_MALE"] >= 0.5
    page = await queue_of(stack).page(ListHeld(telegram_id=chat.user.id))
    (item,) = page.items
    assert (item.item_id, item.state, item.price, item.images) == (held.item_id, "held", 20, 1)
    assert stack.events.of(JobRequested, telegram_id=chat.user.id) == []
    chat.press(confirm, p["start"])  # tapped again: it waits already, nothing more is held
    await chat.expect(p["under_way"])
    assert len(stack.events.of(ModerationHeld, telegram_id=chat.user.id)) == 1
    return chat, confirm, held.item_id


@LANGUAGES
async def test_a_held_photo_waits_for_an_operator_and_approved_its_job_goes_ahead(
    stack: Stack, language: str, gateway_database_url: str
) -> None:
    p = PHRASES[language]
    chat, confirm, item_id = await held_request(stack, language)
    chat.say("/balance")
    await chat.expect(p["balance"])  # nothing charged while it waits
    (held,) = stack.events.of(ModerationHeld, telegram_id=chat.user.id)

    approved = await operator(
        "approve",
        str(item_id),
        "--reason",
        "a portrait, fine",
        "--operator",
        "alice",
        database_url=gateway_database_url,
    )
    assert approved.exit_code == 0, approved.output
    (requested,) = await stack.events.wait_for(JobRequested, telegram_id=chat.user.id)
    assert requested.request_id == held.request_id  # the request the user made
    assert requested.price == 20  # at the price they were shown
    (created,) = await stack.events.wait_for(JobCreated, telegram_id=chat.user.id)
    (debited,) = await stack.events.wait_for(BalanceDebited, job_id=created.job_id)
    assert debited.amount == 20
    assert confirm.message_id is not None
    await stack.telegram.shown_eventually(chat.user.id, confirm.message_id, p["queued"])
    (decided,) = await stack.events.wait_for(ModerationDecided, item_id=item_id)
    assert (decided.verdict, decided.decided_by, decided.request_id) == ("approved", "alice", None)
    assert decided.job_request_id == held.request_id

    again = await operator(
        "reject", str(item_id), "--reason", "changed my mind", database_url=gateway_database_url
    )
    assert again.exit_code == 1
    assert "approved already" in again.output
    assert await decisions(stack, chat.user.id) == [
        ("photo", "held", "face_male", "moderation"),
        ("photo", "approved", "face_male", "alice"),
    ]


@LANGUAGES
async def test_a_held_photo_rejected_by_an_operator_is_explained_and_costs_nothing(
    stack: Stack, language: str
) -> None:
    p = PHRASES[language]
    chat, _, item_id = await held_request(stack, language)
    chat.mark()
    command = ModerationDecisionRequested(
        request_id=uuid.uuid4(),
        operator="bob",
        item_id=item_id,
        verdict="reject",
        reason="not a portrait",
    )
    await stack.runner_publisher.publish(command)
    await stack.runner_publisher.publish(command)  # a redelivery: applied once
    await chat.expect(p["rejected"])
    (decided,) = await stack.events.wait_for(ModerationDecided, item_id=item_id)
    assert (decided.verdict, decided.decided_by, decided.request_id) == (
        "rejected",
        "bob",
        command.request_id,
    )
    late = command.model_copy(update={"request_id": uuid.uuid4(), "verdict": "approve"})
    await stack.runner_publisher.publish(late)
    (refused,) = await stack.events.wait_for(ModerationDecisionRefused, request_id=late.request_id)
    assert (refused.reason, refused.state) == ("already_decided", "rejected")
    assert len(chat.said(p["rejected"])) == 1  # told once, however often it was decided
    chat.say("/balance")
    await chat.expect(p["balance"])
    assert stack.events.of(JobRequested, telegram_id=chat.user.id) == []
    (item,) = (await queue_of(stack).page(ListHeld(state=None, telegram_id=chat.user.id))).items
    assert (item.state, item.decided_by, item.reason) == ("rejected", "bob", "not a portrait")
    assert await decisions(stack, chat.user.id) == [
        ("photo", "held", "face_male", "moderation"),
        ("photo", "rejected", "face_male", "bob"),
    ]


def noise_photo() -> bytes:
    """A picture no other test sends (random pixels), as a PNG."""
    image = Image.frombytes("RGB", (96, 64), random.randbytes(96 * 64 * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def test_the_same_picture_from_three_accounts_flags_each_to_billing(
    stack: Stack, gateway_database_url: str
) -> None:
    picture = noise_photo()
    chats = [Chat(stack, new_user("en")) for _ in range(3)]
    for number, chat in enumerate(chats):
        chat.say("/start")
        await chat.expect("Your balance")
        chat.photo(picture)
        await chat.expect(PHRASES["en"]["photo_received"])
        if number == 0:
            chat.photo(picture)  # their own again: still one account
            await chat.expect(PHRASES["en"]["photo_received"])
    ids = sorted(chat.user.id for chat in chats)
    digest = pixel_digest(Image.open(io.BytesIO(picture))).hex()  # PNG: the pixels themselves
    seen = await stack.events.wait_for(SharedUploadSeen, count=3, digest=digest)
    assert sorted(event.telegram_id for event in seen) == ids
    assert {event.accounts for event in seen} == {3}

    async def flags() -> list[tuple[int, int]]:
        async with stack.gateway.runtime.engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT telegram_id, shared_upload_accounts FROM billing_farming_flags "
                    "WHERE telegram_id = ANY(:ids) ORDER BY telegram_id"
                ),
                {"ids": ids},
            )
            return [(row.telegram_id, row.shared_upload_accounts) for row in rows]

    async def all_flagged() -> bool:
        return len(await flags()) == 3

    await eventually(all_flagged)
    assert await flags() == [(telegram_id, 3) for telegram_id in ids]
    summary = await queue_of(stack).user(GetUserModeration(telegram_id=ids[0]))
    assert (summary.shared_uploads, summary.most_shared) == (1, 3)


async def test_refusals_and_restrictions_are_public_events(
    stack: Stack, gateway_database_url: str
) -> None:
    """What moderation decided goes out for any subscriber: a refused prompt and photo with
    their category, scores and check; a ban and an unban from the CLI with who and why."""
    chat = await started_chat(stack, "en")
    chat.say("take off her clothes")
    await chat.expect("I can't do that")
    (prompt,) = await stack.events.wait_for(
        ModerationRefused, telegram_id=chat.user.id, subject="prompt"
    )
    assert (prompt.category, prompt.scores, prompt.job_id) == ("undressing", {}, None)
    chat.photo(astronaut())
    await chat.expect("This photo can't be used")
    (photo,) = await stack.events.wait_for(
        ModerationRefused, telegram_id=chat.user.id, subject="photo"
    )
    assert (photo.category, photo.check) == ("face_female", "image:nudenet")
    assert photo.scores["FACE_FEMALE"] >= 0.5

    banned = await operator(
        "ban",
        str(chat.user.id),
        "--reason",
        "spam",
        "--operator",
        "alice",
        database_url=gateway_database_url,
    )
    assert banned.exit_code == 0, banned.output
    lifted = await operator(
        "unban", str(chat.user.id), "--reason", "appeal", database_url=gateway_database_url
    )
    assert lifted.exit_code == 0, lifted.output
    changes = await stack.events.wait_for(UserRestricted, count=2, telegram_id=chat.user.id)
    assert [(c.restriction, c.reason, c.request_id) for c in changes] == [
        ("banned", "spam", None),
        ("unbanned", "appeal", None),
    ]
    assert changes[0].decided_by == "alice"


def astronaut() -> bytes:
    """scikit-image's astronaut (public domain): the harness makes her face refusing."""
    path = distribution("scikit-image").locate_file("skimage/data/astronaut.png")
    buffer = io.BytesIO()
    Image.open(Path(str(path))).convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()
