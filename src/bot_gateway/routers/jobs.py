"""A user's jobs: /cancel (the dialogue, or a job still running), cancel buttons, /history
(with a button for each result still kept, to get it again)."""

from __future__ import annotations

import uuid

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message

from bot_gateway import keyboards, texts
from bot_gateway.backends import Backends
from bot_gateway.conversation import CancelOutcome, Conversation, Customer
from bot_gateway.fsm_storage import forget
from bot_gateway.keyboards import CancelJob, MenuAction
from bot_gateway.results import Results
from bot_gateway.settings import ConversationSettings


async def cancel_command(
    message: Message, state: FSMContext, customer: Customer, conversation: Conversation
) -> None:
    had_dialogue = await state.get_state() is not None
    await forget(state)
    active = await conversation.active_jobs(customer)
    if active:
        choices = [(job.request_id.hex, job.title) for job in active]
        await message.answer(
            texts.choose_job_to_cancel(), reply_markup=keyboards.jobs_to_cancel(choices)
        )
    elif had_dialogue:
        await message.answer(texts.dialog_canceled(), reply_markup=keyboards.main_menu())
    else:
        await message.answer(texts.nothing_to_cancel())


async def cancel_job(
    callback: CallbackQuery,
    callback_data: CancelJob,
    customer: Customer,
    conversation: Conversation,
) -> None:
    """Only the user's own unfinished job; anything else is an outdated (or forged) button."""
    try:
        request_id = uuid.UUID(hex=callback_data.request)
    except ValueError:
        request_id = None
    outcome = (
        await conversation.cancel(customer, request_id) if request_id else CancelOutcome.not_found
    )
    answer = {
        CancelOutcome.requested: texts.cancel_requested,
        CancelOutcome.too_early: texts.cancel_too_early,
        CancelOutcome.finished: texts.already_finished,
        CancelOutcome.not_found: texts.stale_button,
    }[outcome]()
    await callback.answer(answer, show_alert=outcome is not CancelOutcome.requested)


BUTTON_TITLE_LENGTH = 40


async def _history(
    customer: Customer,
    conversation: Conversation,
    backends: Backends,
    results: Results,
    limit: int,
) -> tuple[str, InlineKeyboardMarkup | None]:
    history = await backends.history(customer.user_id, limit)
    lines = [texts.history_jobs_title() if history.jobs else texts.history_no_jobs()]
    job_ids = [job.job_id for job in history.jobs]
    titles = await conversation.titles(job_ids)
    for job in history.jobs:
        line = texts.history_job(job.job_id, job.status, job.price, job.created_at)
        lines.append(f"{line} · {titles[job.job_id]}" if job.job_id in titles else line)
    kept = await results.kept(customer, job_ids)
    if kept:
        lines += ["", texts.history_results_hint(results.retention_days)]
    credits = await conversation.credits(customer, limit)
    if credits:
        lines += ["", texts.history_credits_title()]
        lines += [texts.history_credit(c.kind, c.credits, c.at) for c in credits]
    buttons = [
        (kept[job_id].hex, job_id, titles.get(job_id, "")[:BUTTON_TITLE_LENGTH])
        for job_id in job_ids
        if job_id in kept
    ]
    return "\n".join(lines), keyboards.kept_results(buttons)


async def history_command(
    message: Message,
    customer: Customer,
    conversation: Conversation,
    backends: Backends,
    results: Results,
    limits: ConversationSettings,
) -> None:
    text, markup = await _history(customer, conversation, backends, results, limits.history_limit)
    await message.answer(text, reply_markup=markup)


async def history_button(
    callback: CallbackQuery,
    customer: Customer,
    conversation: Conversation,
    backends: Backends,
    results: Results,
    limits: ConversationSettings,
) -> None:
    await callback.answer()  # the spinner stops now, not when jobs answers
    text, markup = await _history(customer, conversation, backends, results, limits.history_limit)
    if callback.message is not None:
        await callback.message.answer(text, reply_markup=markup)


def router() -> Router:
    """The jobs feature's handlers, on a router of their own."""
    feature = Router(name=__name__)
    feature.message(Command("cancel"))(cancel_command)
    feature.callback_query(CancelJob.filter())(cancel_job)
    feature.message(Command("history"))(history_command)
    feature.callback_query(MenuAction.filter(F.action == "history"))(history_button)
    return feature
