"""The moderation queue in the panel, in a real headless Chromium: a support operator sees the
held photo, is told to give a reason, approves it with one, and the gateway requests the job."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from playwright.async_api import Page, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from support.backend_harness import SUPPORT, Running, sign_in
from support.billing_harness import scalar
from support.held_requests import hold_request

pytestmark = pytest.mark.integration


async def test_an_operator_approves_a_held_photo_in_the_panel(
    running: Running, backend_engine: AsyncEngine, page: Page, tmp_path: Path
) -> None:
    assert running.bot is not None
    held = await hold_request(running.bot.gateway, tmp_path, backend_engine)
    await sign_in(page, running, login=SUPPORT)
    await expect(page).to_have_url(f"{running.url}/panel/users")
    await page.click("header a[href='/panel/moderation']")
    row = page.locator(f"#held-{held.item_id}")
    await expect(row).to_contain_text("Own prompt")
    await expect(row).to_contain_text("face_male")
    photo = row.locator("img")
    await expect(photo).to_be_visible()
    width = await photo.evaluate("image => image.complete ? image.naturalWidth : 0")
    assert width == 640  # the held upload itself, downscaled for the panel

    await row.locator("button.approve").click()  # no reason: a field error, nothing sent
    row = page.locator(f"#held-{held.item_id}")
    await expect(row.locator(".reason-error")).to_have_text("Укажите причину.")
    await row.locator("input[name=reason]").fill("a plain portrait")
    await row.locator("button.approve").click()
    await expect(page.locator("#result .ok")).to_contain_text("Одобрено")
    await expect(page.locator(f"#held-{held.item_id}")).to_have_count(0)  # off the queue

    deadline = asyncio.get_running_loop().time() + 15
    while not await scalar(
        backend_engine, "SELECT count(*) FROM jobs WHERE user_id = :u", u=held.user_id
    ):
        assert asyncio.get_running_loop().time() < deadline, "no job was requested"
        await asyncio.sleep(0.05)

    await page.goto(f"{running.url}/panel/moderation/users/{held.user.id}")
    await expect(page.locator("#decisions")).to_contain_text(SUPPORT)
    await expect(page.locator("#weekly-bonus")).to_have_text("да")
