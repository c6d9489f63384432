"""Browsing the catalog: categories, then presets with icons and prices, in `order_index`."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery

from bot_gateway import keyboards, texts
from bot_gateway.backends import Backends
from bot_gateway.keyboards import CategoryChoice, MenuAction, PresetChoice
from bot_gateway.routers.drafts import Drafting, offer, show_confirmation


async def categories(callback: CallbackQuery, backends: Backends) -> None:
    await callback.answer()  # the spinner stops now, not when jobs answers on a cache miss
    catalog = await backends.catalog()
    if callback.message is None:
        return
    if not catalog.presets:
        await callback.message.answer(texts.catalog_empty())
        return
    await callback.message.answer(
        texts.choose_category(), reply_markup=keyboards.categories(catalog)
    )


async def presets(
    callback: CallbackQuery, callback_data: CategoryChoice, backends: Backends
) -> None:
    catalog = await backends.catalog()
    names = keyboards.category_names(catalog)
    if callback_data.revision != catalog.revision[:8] or callback_data.index >= len(names):
        await callback.answer(texts.stale_button(), show_alert=True)
        return
    await callback.answer()
    category = names[callback_data.index]
    if callback.message is not None:
        await callback.message.answer(
            texts.choose_preset(category), reply_markup=keyboards.presets(catalog, category)
        )


async def preset(
    callback: CallbackQuery, callback_data: PresetChoice, backends: Backends, state: FSMContext
) -> None:
    """A preset joins the draft; a photo is asked for when it needs one and has none."""
    catalog = await backends.catalog()
    chosen = next((p for p in catalog.presets if p.id == callback_data.preset_id), None)
    if chosen is None or callback.message is None:
        await callback.answer(texts.stale_button(), show_alert=True)
        return
    await callback.answer()
    draft = await offer(state, preset_id=chosen.id, title=chosen.name, price=chosen.price)
    if chosen.needs_image and not draft.image_keys:
        await state.set_state(Drafting.waiting_photo)
        await callback.message.answer(texts.ask_photo(chosen.name))
        return
    await show_confirmation(callback.message, state, draft)


def router() -> Router:
    """The catalog feature's handlers, on a router of their own."""
    feature = Router(name=__name__)
    feature.callback_query(MenuAction.filter(F.action == "catalog"))(categories)
    feature.callback_query(CategoryChoice.filter())(presets)
    feature.callback_query(PresetChoice.filter())(preset)
    return feature
