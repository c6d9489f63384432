"""The catalog in the web panel, in a real headless Chromium, with the bot beside it: an
operator reprices a preset and the user's chat shows the new price at once (the confirmation on
screen is refused with it, the next one asks for it); invalid forms get field errors."""

from __future__ import annotations

import uuid
from typing import cast

import pytest
from playwright.async_api import Page, expect

from support.backend_harness import VIEWER, Running, sign_in
from support.gateway_harness import Chat, Stack, image_bytes, new_user

pytestmark = pytest.mark.integration


@pytest.fixture
def chat(running: Running) -> Chat:
    """A new user's chat with the bot that runs behind the API."""
    assert running.bot is not None
    return Chat(cast("Stack", running.bot), new_user("ru"))


async def confirmation(chat: Chat, category: str, preset: str, price: int) -> object:
    chat.photo(image_bytes())
    chat.press(await chat.expect("Фото получено"), category)
    chat.press(await chat.expect(f"{category}: выберите пресет"), preset)
    return await chat.expect(f"Стоимость: {price} кредитов")


async def test_an_operator_reprices_a_preset_and_the_bot_shows_the_new_price(
    running: Running, chat: Chat, page: Page
) -> None:
    category = f"Витрина {uuid.uuid4().hex[:6]}"
    await sign_in(page, running, path="/panel/presets")

    await page.click("#new-preset")  # a new preset, first with its mistakes
    await page.fill("#category", category)
    await page.fill("#name", "Акварель")
    await page.fill("#price", "тридцать")
    await page.click("#save")
    await expect(page.locator("#price-error")).to_be_visible()
    await expect(page.locator("#prompt-error")).to_be_visible()
    await expect(page.locator("#reason-error")).to_be_visible()
    await page.fill("#prompt", "Repaint the photo as a watercolor")
    await page.fill("#price", "30")
    await page.fill("#icon", "🎨")
    await page.fill("#reason", "new season")
    await page.click("#save")
    await expect(page.locator("#result .ok")).to_be_visible()
    row = page.locator("#preset-list tr", has_text="Акварель").filter(has_text=category)
    await expect(row.locator(".price")).to_have_text("30")

    chat.say("/start")
    await chat.expect("Ваш баланс: 60")
    shown = await confirmation(chat, category, "Акварель", 30)

    await row.locator("a").last.click()  # the preset's page: reprice it
    await page.fill("#price", "45")
    await page.fill("#reason", "the workflow costs more now")
    await page.click("#save")
    await expect(page.locator("#result .ok")).to_be_visible()
    await expect(page.locator("#price")).to_have_value("45")

    chat.press(shown, "Запустить")  # confirmed at 30: refused, with the price it has now
    await chat.expect("цена изменилась после подтверждения: теперь 45 кредитов")
    await confirmation(chat, category, "Акварель", 45)  # and the next confirmation asks 45

    await page.click("header a[href='/panel/audit']")
    await expect(page.locator("#audit")).to_contain_text("the workflow costs more now")


async def test_a_viewer_sees_the_presets_but_cannot_change_them(
    running: Running, page: Page
) -> None:
    await sign_in(page, running, VIEWER, path="/panel/presets")
    await expect(page.locator("#new-preset")).to_have_count(0)
    await expect(page.locator("form.toggle")).to_have_count(0)
    response = await page.request.post(
        f"{running.url}/panel/presets/new",
        multipart={"category": "x", "name": "y", "prompt": "z", "price": "1", "reason": "r"},
    )
    assert response.status == 403
