"""Screenshots of the operators' panel at the end of the demo: the sandbox operator signs in
(password and one-time code) in a headless Chromium (Debian's `/usr/bin/chromium`, driven by
Playwright), sends a broadcast from the panel, and each main page is saved as a PNG."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sandbox.stack import OPERATOR_LOGIN, OPERATOR_PASSWORD, SandboxStack, panel_url

if TYPE_CHECKING:
    from playwright.async_api import Page

log = logging.getLogger(__name__)

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
PAGES = (
    ("dashboard", "/dashboard"),
    ("users", "/users"),
    ("jobs", "/jobs"),
    ("moderation", "/moderation"),
    ("operations", "/operations"),
    ("broadcasts", "/broadcasts"),
    ("presets", "/presets"),
    ("payments", "/payments"),
    ("audit", "/audit"),
)
"""The panel's main pages, in the order of its menu; one missing (404) is skipped."""
TOTP_STEP_S = 30
BROADCAST = "Спасибо, что вы с нами! Новые пресеты уже в боте."


async def panel_screenshots(stack: SandboxStack, output: Path) -> list[Path]:
    """The demo's screenshots: the sandbox operator (an admin, with their one-time code)."""
    return await screenshots(
        panel_url(stack), OPERATOR_LOGIN, OPERATOR_PASSWORD, stack.operator_code, output
    )


async def screenshots(
    panel: str, login: str, password: str, code: Callable[[], str] | None, output: Path
) -> list[Path]:
    """Sign in to the panel at `panel` (`.../panel`; `code` gives an admin's one-time code, a
    second one in the next step if the first was used already), send a broadcast to the
    Russian-speaking users, and save a full-page screenshot of each main page (and of the
    broadcast's progress) under `output`; the files written. Nothing when Chromium or
    Playwright is missing (said in the log)."""
    try:
        from playwright.async_api import async_playwright  # a dev tool: imported when used
    except ImportError:
        log.warning("no screenshots: Playwright is not installed")
        return []
    if not _ready(output):
        return []
    saved: list[Path] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        context = await browser.new_context(locale="ru-RU", viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        page.set_default_timeout(20_000)
        await page.goto(f"{panel}/dashboard")
        for attempt in range(2):
            await page.fill("#username", login)
            await page.fill("#password", password)
            if code is not None:
                await page.fill("#code", code())
            await page.click("button[type=submit]")
            await page.wait_for_load_state()
            if page.url == f"{panel}/dashboard" or code is None or attempt:
                break
            # a one-time code is good once: the story may have signed in with this step's
            await asyncio.sleep(TOTP_STEP_S - time.time() % TOTP_STEP_S + 1)
        await page.wait_for_url(f"{panel}/dashboard")

        await page.goto(f"{panel}/broadcasts")
        await page.check("#language-ru")
        await page.click("#count")
        await page.fill("#text", BROADCAST)
        await page.fill("#reason", "demo: thanks to the users")
        await page.click("#send")
        await page.wait_for_selector("#result")
        saved.append(await _shot(page, output / "broadcast-sent.png"))

        for number, (name, path) in enumerate(PAGES, start=1):
            response = await page.goto(f"{panel}{path}")
            if response is None or response.status == 404:
                continue
            saved.append(await _shot(page, output / f"{number:02d}-{name}.png"))
        await browser.close()
    return saved


def _ready(output: Path) -> bool:
    """Chromium is there, and so is the folder the screenshots go to."""
    if not CHROMIUM.exists():
        log.warning("no screenshots: %s is missing (apt-get install chromium)", CHROMIUM)
        return False
    output.mkdir(parents=True, exist_ok=True)
    return True


async def _shot(page: Page, path: Path) -> Path:
    await page.screenshot(path=str(path), full_page=True)
    return path
