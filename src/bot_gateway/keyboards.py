"""Inline keyboards and the callback data behind their buttons.

Callback data is short, typed and parsed strictly: anything that does not unpack (a forged or
an old button) reaches the fallback handler, which says the button is outdated.
"""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot_gateway import texts
from bot_gateway.domain import rubles
from contracts.events import PRESET_ICON_PREFIX
from contracts.rpc import PresetCatalog, StarsPackage, TopUpPackage


class MenuAction(CallbackData, prefix="m"):
    action: str


class CategoryChoice(CallbackData, prefix="c"):
    revision: str
    index: int


class PresetChoice(CallbackData, prefix="p"):
    preset_id: int


class DraftAction(CallbackData, prefix="d"):
    action: str  # start | drop | generate
    draft: str


class CancelJob(CallbackData, prefix="x"):
    request: str


class ResultAction(CallbackData, prefix="r"):
    action: str  # again | another | file (original quality) | send (from /history)
    request: str


class LanguageChoice(CallbackData, prefix="l"):
    language: str


class PackageChoice(CallbackData, prefix="k"):
    package_id: str


class StarsChoice(CallbackData, prefix="st"):
    """A package paid in Telegram Stars."""

    package_id: str


FROM_GROUP = "group"
"""The deep-link payload of the group pointer's button."""

MENU_ACTIONS = ("catalog", "prompt", "balance", "topup", "history", "help", "language")


def main_menu() -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for action, label in texts.menu_buttons().items():
        builder.button(text=label, callback_data=MenuAction(action=action))
    builder.adjust(2)
    return builder.as_markup()


def categories(catalog: PresetCatalog) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for index, category in enumerate(category_names(catalog)):
        builder.button(
            text=category,
            callback_data=CategoryChoice(revision=catalog.revision[:8], index=index),
        )
    builder.button(text=texts.menu_buttons()["prompt"], callback_data=MenuAction(action="prompt"))
    builder.adjust(1)
    return builder.as_markup()


def category_names(catalog: PresetCatalog) -> list[str]:
    return list(dict.fromkeys(preset.category for preset in catalog.presets))


def presets(catalog: PresetCatalog, category: str) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for preset in sorted(
        (p for p in catalog.presets if p.category == category), key=lambda p: p.order_index
    ):
        # an uploaded image's key is no text to show: a button carries text only
        icon = "" if (preset.icon or "").startswith(PRESET_ICON_PREFIX) else preset.icon or ""
        label = f"{icon} {preset.name} · {preset.price}".strip()
        builder.button(text=label, callback_data=PresetChoice(preset_id=preset.id))
    builder.button(text=texts.back(), callback_data=MenuAction(action="catalog"))
    builder.adjust(1)
    return builder.as_markup()


def confirm(draft: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=texts.start_button(),
                    callback_data=DraftAction(action="start", draft=draft).pack(),
                ),
                InlineKeyboardButton(
                    text=texts.cancel_button(),
                    callback_data=DraftAction(action="drop", draft=draft).pack(),
                ),
            ]
        ]
    )


def generate(draft: str) -> InlineKeyboardMarkup:
    return _single(texts.generate_button(), DraftAction(action="generate", draft=draft).pack())


def cancel_job(request: str) -> InlineKeyboardMarkup:
    return _single(texts.cancel_button(), CancelJob(request=request).pack())


def result(request: str, *, made: bool = True) -> InlineKeyboardMarkup:
    """Under a result; `made=False` under a request refused before any result (a changed
    price): no *original quality*, which would only say the button is outdated."""
    labels = texts.result_buttons()
    file = InlineKeyboardButton(
        text=labels["file"], callback_data=ResultAction(action="file", request=request).pack()
    )
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=labels["again"],
                    callback_data=ResultAction(action="again", request=request).pack(),
                ),
                InlineKeyboardButton(
                    text=labels["another"],
                    callback_data=ResultAction(action="another", request=request).pack(),
                ),
            ],
            [
                *([file] if made else []),
                InlineKeyboardButton(
                    text=labels["menu"], callback_data=MenuAction(action="menu").pack()
                ),
            ],
        ]
    )


def kept_results(results: list[tuple[str, int, str]]) -> InlineKeyboardMarkup | None:
    """/history's results that can be sent again: (request, job id, title) each."""
    if not results:
        return None
    builder = InlineKeyboardBuilder()
    for request, job_id, title in results:
        builder.button(
            text=f"📥 #{job_id} · {title}",
            callback_data=ResultAction(action="send", request=request),
        )
    builder.adjust(1)
    return builder.as_markup()


def languages() -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for language, name in texts.LANGUAGE_NAMES.items():
        builder.button(text=name, callback_data=LanguageChoice(language=language))
    builder.adjust(2)
    return builder.as_markup()


def open_private(bot_username: str) -> InlineKeyboardMarkup:
    """A link to the private chat, its /start marked as coming from a group."""
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=texts.open_private_button(),
                    url=f"https://t.me/{bot_username}?start={FROM_GROUP}",
                )
            ]
        ]
    )


def topup() -> InlineKeyboardMarkup:
    return _single(texts.topup_button(), MenuAction(action="topup").pack())


def packages(
    options: list[TopUpPackage],
    stars: list[StarsPackage] | None = None,
    receipt_to: str | None = None,
) -> InlineKeyboardMarkup:
    """Both rails: the ruble packages (YooKassa), then those paid in Telegram Stars; while
    the shop sends receipts, a last button shows (and changes) where they go: `receipt_to`
    ("" when the user has given no contact yet)."""
    builder = InlineKeyboardBuilder()
    for package in options:
        builder.button(
            text=texts.package_button(package.credits, rubles(package.amount_kopecks)),
            callback_data=PackageChoice(package_id=package.package_id),
        )
    for offer in stars or []:
        builder.button(
            text=texts.stars_package_button(offer.credits, offer.stars),
            callback_data=StarsChoice(package_id=offer.package_id),
        )
    if receipt_to is not None:
        builder.button(
            text=texts.receipt_button(receipt_to), callback_data=MenuAction(action="receipt")
        )
    builder.adjust(1)
    return builder.as_markup()


def receipt_contact() -> InlineKeyboardMarkup:
    """Under a top-up refused for want of a receipt contact: give one (the top-up follows)."""
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=texts.receipt_give_button(),
                    callback_data=MenuAction(action="receipt_retry").pack(),
                )
            ]
        ]
    )


def pay(url: str, kopecks: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=texts.pay_button(rubles(kopecks)), url=url)]]
    )


def jobs_to_cancel(jobs: list[tuple[str, str]]) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for request, title in jobs:
        builder.button(
            text=texts.cancel_job_button(title), callback_data=CancelJob(request=request)
        )
    builder.adjust(1)
    return builder.as_markup()


def _single(text: str, callback_data: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=text, callback_data=callback_data)]]
    )
