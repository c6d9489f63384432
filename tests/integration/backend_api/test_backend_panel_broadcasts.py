"""The dashboard and a broadcast in a real headless Chromium (Debian's, driven by Playwright):
the charts drawn from the owners' figures with nothing fetched from elsewhere, in Russian and
English; an admin counts an audience, sends to it and watches it go out to the fake Telegram."""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path

import pytest
from playwright.async_api import Page, expect
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from billing import services
from billing.models import DELIVERY as BILLING
from jobs.models import Job, Preset
from messaging.unit_of_work import UnitOfWork
from sandbox.screenshots import BROADCAST, screenshots
from support.backend_gateway import bot, far_future, seed_user
from support.backend_harness import OPERATOR, PASSWORD, VIEWER, Running, sign_in, totp_code
from support.billing_harness import new_telegram_id

pytestmark = pytest.mark.integration


async def test_the_dashboard_draws_each_owners_figures_in_both_languages(
    running: Running, backend_engine: AsyncEngine, page: Page
) -> None:
    name = f"Panel dash {uuid.uuid4().hex[:6]}"
    async with UnitOfWork(backend_engine, BILLING, source="test") as uow:
        account = await services.ensure_account(uow, new_telegram_id(), "dash", 60)
    async with backend_engine.begin() as connection:
        preset_id = random.randrange(10**8, 2**31 - 1)
        await connection.execute(
            insert(Preset).values(
                id=preset_id, category="test", name=name, prompt="p", price=30, order_index=0
            )
        )
        for stage in ("completed", "completed", "completed", "failed"):
            await connection.execute(
                insert(Job).values(
                    user_id=account.user_id,
                    prompt="p",
                    preset_id=preset_id,
                    price=30,
                    stage=stage,
                    request_id=uuid.uuid4(),
                )
            )
    elsewhere: list[str] = []
    page.on(
        "request",
        lambda request: (
            None if request.url.startswith(running.url) else elsewhere.append(request.url)
        ),
    )

    await sign_in(page, running, VIEWER, path="/panel/dashboard")
    await expect(page.locator("h1")).to_have_text("Сводка")
    row = page.locator("#presets tr", has_text=name)
    await expect(row).to_contain_text("75%")
    await expect(row).to_contain_text("90")  # three completed at 30 credits
    for chart in ("new-users", "sources", "outcomes", "success", "preset-revenue"):
        await expect(page.locator(f"svg#chart-{chart}")).to_have_count(1)
    await expect(page.locator("svg#chart-success rect", has_text=name)).to_have_count(1)
    await expect(page.locator("svg#chart-outcomes rect").first).to_be_visible()
    await expect(page.locator("#money-RUB h3")).to_have_text("Рубли по дням")
    assert int(await page.locator("#users-total").inner_text()) >= 0

    await page.click("header button[value=en]")
    await expect(page.locator("h1")).to_have_text("Dashboard")
    await expect(page.locator("#money-XTR h3")).to_have_text("Telegram Stars per day")
    await page.select_option("#days", "7")
    await expect(page).to_have_url(f"{running.url}/panel/dashboard?days=7")
    await expect(page.locator("#presets tr", has_text=name)).to_contain_text("75%")
    assert elsewhere == []  # no CDN, no script from anywhere else


async def test_an_admin_counts_an_audience_and_sends_it_a_broadcast(
    running: Running, backend_engine: AsyncEngine, page: Page
) -> None:
    since = far_future()
    chats = [await seed_user(backend_engine, joined=since) for _ in range(2)]
    await seed_user(backend_engine, language="en", joined=since)  # not in the audience
    text = f"Панель шлёт {uuid.uuid4().hex[:6]}"

    await sign_in(page, running, path="/panel/broadcasts")
    await page.check("#language-ru")
    await page.fill("#since", since.date().isoformat())
    await page.click("#count")
    await expect(page.locator("#recipients")).to_have_text("Получателей сейчас: 2")
    await expect(page.locator("#language-ru")).to_be_checked()

    await page.fill("#text", text)
    await page.fill("#reason", "")
    await page.click("#send")
    await expect(page.locator("#reason-error")).to_have_text("Укажите причину.")
    await page.fill("#reason", "a panel test")
    await page.click("#send")
    await expect(page.locator("#result .ok")).to_have_text("Поставлено в очередь для 2 чатов.")
    await expect(page.locator("#text")).to_have_text(text)
    for chat in chats:
        await bot(running).telegram.wait_for(chat, text, method="sendMessage")
    for _ in range(50):  # the sender marks them sent a moment after Telegram answered
        await page.reload()
        if await page.locator("#left").inner_text() == "0":
            break
        await asyncio.sleep(0.2)
    await expect(page.locator("#sent")).to_have_text("2")
    await expect(page.locator("#left")).to_have_text("0")
    await page.click("a[href='/panel/broadcasts']")
    await expect(page.locator("#broadcasts")).to_contain_text(text)


async def test_a_viewer_sees_broadcasts_but_may_not_send_one(running: Running, page: Page) -> None:
    await sign_in(page, running, VIEWER, path="/panel/broadcasts")
    await expect(page.locator("h1")).to_have_text("Рассылки")
    await expect(page.locator("#new-broadcast")).to_have_count(0)
    response = await page.request.post(
        f"{running.url}/panel/broadcasts",
        form={"text": "hi", "reason": "test", "action": "send", "csrf": "x"},
    )
    assert response.status == 403


async def test_the_demos_screenshots_show_the_main_pages(
    running: Running, backend_engine: AsyncEngine, tmp_path: Path
) -> None:
    chat = await seed_user(backend_engine, joined=far_future())  # Russian: gets the broadcast
    saved = await screenshots(f"{running.url}/panel", OPERATOR, PASSWORD, totp_code, tmp_path)
    names = {path.name for path in saved}
    assert {"broadcast-sent.png", "01-dashboard.png", "06-broadcasts.png"} <= names, names
    assert len(saved) >= 8, names  # every main page the panel has
    for path in saved:
        assert path.read_bytes().startswith(b"\x89PNG\r\n"), path
    await bot(running).telegram.wait_for(chat, BROADCAST, method="sendMessage")
