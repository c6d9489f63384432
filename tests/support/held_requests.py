"""A held request in the gateway's moderation queue, as a borderline photo leaves it: a real
photo (made here) in the object store, a billing account with credits, and the request the
user confirmed, put in the queue by the gateway's own `ModerationQueue.hold` (the backend API's
tests run the gateway with moderation off, so no detector decides here)."""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from pathlib import Path

from aiogram.utils.i18n import I18n
from PIL import Image, ImageDraw
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from billing import services
from billing.models import DELIVERY as BILLING
from bot_gateway.app import Gateway
from bot_gateway.conversation import Customer, Draft
from bot_gateway.models import HeldRequest
from bot_gateway.moderation_cli import LOCALES
from bot_gateway.moderation_queue import ModerationQueue
from bot_gateway.restrictions import Restrictions
from messaging.unit_of_work import UnitOfWork
from moderation import ModerationSettings
from object_store import StorageSettings, create_object_store
from sandbox.telegram import TgUser
from support.gateway_harness import new_user


@dataclass(frozen=True)
class Held:
    item_id: int
    user: TgUser
    user_id: int
    price: int
    photo: bytes
    """The stored upload's bytes (JPEG)."""


def portrait(size: tuple[int, int] = (800, 600)) -> bytes:
    """A drawn picture (a face-like oval on a plain background), as a phone's JPEG."""
    image = Image.new("RGB", size, (90, 140, 200))
    draw = ImageDraw.Draw(image)
    width, height = size
    draw.ellipse((width // 3, height // 5, 2 * width // 3, 4 * height // 5), fill=(230, 190, 160))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def queue(gateway: Gateway, root: Path) -> ModerationQueue:
    """The gateway's queue over its unit of work and object store at `root`."""
    unit_of_work = gateway.runtime.unit_of_work
    return ModerationQueue(
        unit_of_work,
        create_object_store(StorageSettings(local_root=root)),
        I18n(path=LOCALES, default_locale="ru", domain="messages"),
        default_language="ru",
        restrictions=Restrictions.of(unit_of_work, ModerationSettings(enabled=False)),
    )


async def hold_request(
    gateway: Gateway, root: Path, engine: AsyncEngine, *, language: str = "en"
) -> Held:
    """A new user with 60 credits whose own-prompt request (at the catalog's price) waits."""
    user = new_user(language)
    async with UnitOfWork(engine, BILLING, source="test") as uow:
        account = await services.ensure_account(uow, user.id, "held", 60)
    price = (await gateway.backends.catalog()).custom_prompt_price
    photo = portrait()
    key = f"uploads/{user.id}/{uuid.uuid4().hex}.jpg"
    held = queue(gateway, root)
    await create_object_store(StorageSettings(local_root=root)).put(
        key, photo, content_type="image/jpeg"
    )
    customer = Customer(user.id, account.user_id, user.id, language)
    draft = Draft(
        draft=uuid.uuid4().hex[:12],
        title="Own prompt",
        price=price,
        prompt="a watercolour portrait",
        image_keys=(key,),
        held={"category": "face_male", "scores": {"FACE_MALE": 0.61}},
    )
    assert await held.hold(customer, draft, status_message_id=1)
    async with engine.connect() as connection:
        item_id = (
            await connection.execute(
                select(HeldRequest.id).where(HeldRequest.telegram_id == user.id)
            )
        ).scalar_one()
    return Held(item_id, user, account.user_id, price, photo)
