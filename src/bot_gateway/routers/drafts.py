"""Putting a request together: a photo (as photo or file), a preset or the user's own prompt
(a caption, or text before or after the photo), or a prompt alone; then confirm → JobRequested."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import replace
from typing import Any

from aiogram import Bot, F, Router
from aiogram.filters import StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InaccessibleMessage, Message

from bot_gateway import keyboards, screening, texts
from bot_gateway.backends import Backends
from bot_gateway.conversation import Conversation, Customer, Draft, job_request_id
from bot_gateway.domain import Phase
from bot_gateway.fsm_storage import forget
from bot_gateway.keyboards import DraftAction, MenuAction, ResultAction
from bot_gateway.moderation_queue import ModerationQueue
from bot_gateway.settings import ConversationSettings
from bot_gateway.uploads import UploadRejectedError, Uploads, carries_image
from contracts.events import MAX_INPUT_IMAGES

log = logging.getLogger(__name__)


class Drafting(StatesGroup):
    waiting_photo = State()
    waiting_prompt = State()
    confirming = State()


async def current_draft(state: FSMContext) -> Draft | None:
    data = await state.get_data()
    return Draft.of_data(data["draft"]) if "draft" in data else None


async def offer(state: FSMContext, **changes: Any) -> Draft:
    """The draft with `changes`, under a new id (buttons of the previous one go stale)."""
    draft = await current_draft(state) or Draft(draft="", title="", price=0)
    draft = replace(draft, **changes, draft=uuid.uuid4().hex[:12])
    await state.update_data(draft=draft.as_data())
    return draft


async def show_confirmation(
    message: Message | InaccessibleMessage, state: FSMContext, draft: Draft
) -> None:
    await state.set_state(Drafting.confirming)
    await message.answer(
        texts.confirm(draft.title, draft.price, draft.prompt, photos=len(draft.image_keys)),
        reply_markup=keyboards.confirm(draft.draft),
    )


def _prompt_error(text: str, limits: ConversationSettings) -> str | None:
    if len(text) > limits.prompt_max_length:
        return texts.prompt_too_long(len(text), limits.prompt_max_length)
    return None


async def _own_prompt(state: FSMContext, prompt: str, backends: Backends) -> Draft:
    """The user's words: they refine a chosen preset, or stand alone at the custom price."""
    draft = await current_draft(state)
    if draft is not None and draft.preset_id is not None:
        return await offer(state, prompt=prompt)
    catalog = await backends.catalog()
    return await offer(
        state,
        preset_id=None,
        prompt=prompt,
        title=texts.own_prompt_title(),
        price=catalog.custom_prompt_price,
    )


async def upload(
    message: Message,
    bot: Bot,
    state: FSMContext,
    customer: Customer,
    uploads: Uploads,
    backends: Backends,
    limits: ConversationSettings,
    album: list[Message] | None = None,
) -> None:
    """A photo or image file, or an album of up to three (`albums`: one update for all):
    checked and stored, then on to confirmation or the catalog."""
    parts = album or [message]
    if len(parts) > MAX_INPUT_IMAGES:
        await message.answer(texts.album_too_large(len(parts), MAX_INPUT_IMAGES))
        return
    if not all(carries_image(part) for part in parts):
        await message.answer(texts.not_a_photo())
        return
    caption = next((text for part in parts if (text := _instruction_in(part))), "")
    try:
        accepted = await asyncio.gather(
            *(uploads.accept(bot, part, customer.telegram_id) for part in parts)
        )
    except UploadRejectedError as exc:
        log.info("upload from %s rejected: %s", customer.telegram_id, exc)
        await message.answer(_upload_problem(exc.reason, limits))
        return
    held = next((upload.held for upload in accepted if upload.held is not None), None)
    draft = await offer(
        state,
        image_keys=tuple(upload.key for upload in accepted),
        # borderline: an operator sees it before any job (Start queues it; moderation_queue)
        held={"category": held.category, "scores": held.scores} if held else None,
    )
    if caption and len(caption) > limits.prompt_max_length:
        # the photo is kept: only the description has to come again, shorter
        await state.set_state(Drafting.waiting_prompt)
        await message.answer(texts.caption_too_long(len(caption), limits.prompt_max_length))
        return
    if caption:
        draft = await _own_prompt(state, caption, backends)
    if draft.preset_id is not None or draft.prompt is not None:
        await show_confirmation(message, state, draft)
        return
    await state.set_state(None)
    catalog = await backends.catalog()
    received = texts.photo_received() if len(parts) == 1 else texts.album_received(len(parts))
    await message.answer(received, reply_markup=keyboards.categories(catalog))


def _instruction_in(message: Message) -> str:
    """The caption as the user's instruction; a forwarded post's caption is someone else's."""
    if message.forward_origin is not None:
        return ""
    return (message.caption or "").strip()


def _upload_problem(reason: str, limits: ConversationSettings) -> str:
    if reason == "too_large":
        return texts.file_too_large(limits.max_download_bytes // (1024 * 1024))
    if reason == "too_many_pixels":
        return texts.too_many_pixels(limits.max_image_pixels // 1_000_000)
    if reason == "unsupported_format":
        return texts.unsupported_format()
    if reason == "heif_unsupported":
        return texts.heif_unsupported()
    if reason == "damaged":
        return texts.damaged_image()
    if reason == "download_failed":
        return texts.download_failed()
    if reason == screening.MODERATION_REFUSED:
        return screening.photo_refused()
    return texts.not_a_photo()


async def ask_prompt(
    callback: CallbackQuery, state: FSMContext, limits: ConversationSettings
) -> None:
    await callback.answer()
    await state.set_state(Drafting.waiting_prompt)
    if callback.message is not None:
        await callback.message.answer(texts.ask_prompt(limits.prompt_max_length))


async def prompt(
    message: Message,
    state: FSMContext,
    backends: Backends,
    limits: ConversationSettings,
    raw_state: str | None = None,
) -> None:
    """The user's words: asked for, typed at a confirmation or while a preset waits for its
    photo (they refine the preset), or typed at the menu (then offered as a prompt: draw it, or
    send a photo to edit with it)."""
    asked = raw_state == Drafting.waiting_prompt.state
    text = (message.text or "").strip()
    if problem := _prompt_error(text, limits):
        await message.answer(problem)
        return
    draft = await _own_prompt(state, text, backends)
    if draft.image_keys:
        await show_confirmation(message, state, draft)
        return
    await state.set_state(Drafting.waiting_photo)
    if draft.preset_id is not None:  # kept for the photo, as its caption would be
        await message.answer(texts.prompt_noted(text))
        return
    answer = texts.prompt_received() if asked else texts.text_offered(text)
    await message.answer(answer, reply_markup=keyboards.generate(draft.draft))


async def not_a_photo(message: Message) -> None:
    await message.answer(texts.not_a_photo())


async def draft_action(
    callback: CallbackQuery,
    callback_data: DraftAction,
    state: FSMContext,
    customer: Customer,
    conversation: Conversation,
    moderation_queue: ModerationQueue | None = None,
) -> None:
    draft = await current_draft(state)
    confirming = await state.get_state() == Drafting.confirming.state
    if (
        callback_data.action == "start"
        and callback.message is not None
        and not (confirming and draft is not None and draft.draft == callback_data.draft)
    ):
        # A Start tapped again (no answer came soon enough, say): the job it asked for
        # goes on, and the user should wait for it instead of making another.
        request_id = job_request_id(customer, callback_data.draft)
        held = moderation_queue is not None and await moderation_queue.holds(request_id)
        if held or await conversation.job_of(customer, request_id) is not None:
            await callback.answer()
            await callback.message.answer(texts.already_requested())
            return
    if draft is None or draft.draft != callback_data.draft or callback.message is None:
        await callback.answer(texts.stale_button(), show_alert=True)
        return
    await callback.answer()
    if callback_data.action == "generate" and draft.prompt is not None:
        await show_confirmation(callback.message, state, draft)
    elif callback_data.action == "start" and confirming:
        # Request first, then forget the draft: a crash in between leaves the draft, and the
        # re-tapped Start finds the request already made (its id derives from the draft).
        if draft.held is not None and moderation_queue is not None:
            await moderation_queue.hold(customer, draft, callback.message.message_id)
        else:
            await conversation.request_job(customer, draft, callback.message.message_id)
        await forget(state)
    elif callback_data.action == "drop":
        await forget(state)
        await callback.message.answer(texts.dialog_canceled(), reply_markup=keyboards.main_menu())
    else:
        await callback.message.answer(texts.stale_button())


async def after_result(
    callback: CallbackQuery,
    callback_data: ResultAction,
    state: FSMContext,
    customer: Customer,
    conversation: Conversation,
    backends: Backends,
) -> None:
    """Again (same preset or prompt, same photo, today's price) or another preset."""
    job = None
    if len(callback_data.request) == 32:
        job = await conversation.job_of(customer, uuid.UUID(hex=callback_data.request))
    if job is None or callback.message is None:
        await callback.answer(texts.stale_button(), show_alert=True)
        return
    await callback.answer()  # the spinner stops now, not when jobs answers on a cache miss
    if job.phase == Phase.rejected:
        backends.forget_catalog()  # refused for a price this replica's cache may still show
    catalog = await backends.catalog()
    await forget(state)
    if callback_data.action == "another":
        await offer(state, image_keys=job.image_keys)
        await callback.message.answer(
            texts.choose_category(), reply_markup=keyboards.categories(catalog)
        )
        return
    price = catalog.custom_prompt_price
    if job.preset_id is not None:
        preset = next((p for p in catalog.presets if p.id == job.preset_id), None)
        if preset is None:
            await callback.message.answer(texts.stale_button())
            return
        price = preset.price
    draft = await offer(
        state,
        preset_id=job.preset_id,
        prompt=job.prompt,
        image_keys=job.image_keys,
        title=job.title,
        price=price,
    )
    await show_confirmation(callback.message, state, draft)


def router() -> Router:
    """The drafts feature's handlers, on a router of their own."""
    feature = Router(name=__name__)
    feature.message(F.photo | F.document)(upload)
    feature.callback_query(MenuAction.filter(F.action == "prompt"))(ask_prompt)
    # at the confirmation too: words after the photo refine its preset (or replace the prompt);
    # and before the photo a preset asked for
    words_taken = StateFilter(
        Drafting.waiting_prompt, Drafting.waiting_photo, Drafting.confirming, None
    )
    feature.message(words_taken, F.text, ~F.text.startswith("/"))(prompt)
    feature.message(StateFilter(Drafting.waiting_photo), ~F.text.startswith("/"))(not_a_photo)
    feature.callback_query(DraftAction.filter())(draft_action)
    feature.callback_query(ResultAction.filter())(after_result)
    return feature
