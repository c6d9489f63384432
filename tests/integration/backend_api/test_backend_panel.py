"""The web panel in a real headless Chromium (Debian's, driven by Playwright): an operator signs
in, finds a user, adjusts their credits through billing and sees the new balance; an admin signs
in with a one-time code and ends another operator's session."""

from __future__ import annotations

import uuid

import pytest
from playwright.async_api import Browser, Page, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from billing import services
from billing.models import DELIVERY as BILLING
from contracts.events import credits_text
from messaging.unit_of_work import UnitOfWork
from support.backend_harness import OPERATOR, PASSWORD, SUPPORT, VIEWER, Running, sign_in, totp_code
from support.billing_harness import new_telegram_id, scalar

pytestmark = pytest.mark.integration


async def test_an_operator_finds_a_user_and_adjusts_their_credits(
    running: Running, backend_engine: AsyncEngine, page: Page
) -> None:
    username = f"Panel_{uuid.uuid4().hex[:8]}"
    async with UnitOfWork(backend_engine, BILLING, source="test") as uow:
        account = await services.ensure_account(uow, new_telegram_id(), username, 60)

    await sign_in(page, running, password="not the password", refused=True)
    await expect(page.locator("#login-error")).to_have_text("Неверный логин, пароль или код.")
    await page.fill("#password", PASSWORD)
    await page.fill("#code", totp_code())
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{running.url}/panel/users")

    await page.fill("#q", username.lower()[:10])
    await page.click("form[action='/panel/users'] button[type=submit]")
    await page.click(f"#users a[href='/panel/users/{account.user_id}']")
    await expect(page.locator("#balance")).to_have_text(credits_text(account.balance))

    await page.fill("#credits", "40")  # no reason: a field error, nothing sent
    await page.click("#adjust button[type=submit]")
    await expect(page.locator("#reason-error")).to_have_text("Укажите причину.")
    await expect(page.locator("#balance")).to_have_text(credits_text(account.balance))

    await page.fill("#credits", "40")
    await page.fill("#reason", "a refund for a lost render")
    await page.click("#adjust button[type=submit]")
    await expect(page.locator("#result .ok")).to_contain_text("Выполнено: 40 кредитов")
    await expect(page.locator("#balance")).to_have_text(credits_text(account.balance + 40))
    await expect(page.locator("#ledger")).to_contain_text("a refund for a lost render")
    balance = await scalar(
        backend_engine, "SELECT balance FROM users WHERE user_id = :u", u=account.user_id
    )
    assert balance == account.balance + 40

    await page.click("header button[value=en]")  # the panel in English
    await expect(page.locator("h2").first).to_have_text("Adjust credits")
    await page.click("header a[href='/panel/audit']")
    await expect(page.locator("#audit")).to_contain_text("a refund for a lost render")
    await expect(page.locator("#audit")).to_contain_text(OPERATOR)


async def test_a_form_without_the_sessions_csrf_token_is_refused(
    running: Running, backend_engine: AsyncEngine, page: Page
) -> None:
    async with UnitOfWork(backend_engine, BILLING, source="test") as uow:
        account = await services.ensure_account(uow, new_telegram_id(), "csrf", 60)
    await sign_in(page, running)
    response = await page.request.post(
        f"{running.url}/panel/users/{account.user_id}/adjust",
        form={"credits": "1000", "reason": "forged", "csrf": "not-the-token"},
    )
    assert response.status == 403
    balance = await scalar(
        backend_engine, "SELECT balance FROM users WHERE user_id = :u", u=account.user_id
    )
    assert balance == account.balance


async def test_a_viewer_sees_a_profile_but_no_adjust_form_and_no_audit_log(
    running: Running, backend_engine: AsyncEngine, page: Page
) -> None:
    async with UnitOfWork(backend_engine, BILLING, source="test") as uow:
        account = await services.ensure_account(uow, new_telegram_id(), "viewed", 60)
    await sign_in(page, running, login=VIEWER)
    await page.goto(f"{running.url}/panel/users/{account.user_id}")
    await expect(page.locator("#balance")).to_have_text(credits_text(account.balance))
    await expect(page.locator("#adjust")).to_have_count(0)
    await expect(page.locator("header a[href='/panel/audit']")).to_have_count(0)
    response = await page.goto(f"{running.url}/panel/audit")
    assert response is not None
    assert response.status == 403


async def test_an_admin_signs_in_with_a_one_time_code_and_ends_a_session(
    running: Running, browser: Browser, page: Page
) -> None:
    wrong = "000000" if totp_code() != "000000" else "111111"
    await sign_in(page, running, code=wrong, refused=True)
    await expect(page.locator("#login-error")).to_have_text("Неверный логин, пароль или код.")
    code = totp_code()
    await page.fill("#password", PASSWORD)
    await page.fill("#code", code)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{running.url}/panel/users")

    async with await browser.new_context(locale="ru-RU") as other:
        replay = await other.new_page()
        await sign_in(replay, running, code=code, refused=True)  # the same code again
        await expect(replay.locator("#login-error")).to_have_text("Неверный логин, пароль или код.")
        await sign_in(replay, running, login=VIEWER)  # a viewer: no code

        await page.click("header a[href='/panel/sessions']")
        await expect(page.locator("h1")).to_have_text("Сеансы всех операторов")
        viewers = page.locator("#sessions tr").filter(has_text=VIEWER).filter(has_text="panel")
        open_ones = await viewers.count()  # newest first: the replay page's is the first
        assert open_ones >= 1
        await viewers.first.locator("button[type=submit]").click()
        await expect(viewers).to_have_count(open_ones - 1)

        await replay.goto(f"{running.url}/panel/jobs")  # revoked: signed out at once
        await expect(replay).to_have_url(f"{running.url}/panel/login")
    await page.goto(f"{running.url}/panel/jobs")  # the admin's own session goes on
    await expect(page).to_have_url(f"{running.url}/panel/jobs")


async def test_a_large_adjustment_waits_in_approvals_until_a_second_operator_approves(
    running: Running, backend_engine: AsyncEngine, browser: Browser, page: Page
) -> None:
    async with UnitOfWork(backend_engine, BILLING, source="test") as uow:
        account = await services.ensure_account(uow, new_telegram_id(), "held", 60)
    await sign_in(page, running, login=SUPPORT)
    await page.goto(f"{running.url}/panel/users/{account.user_id}")
    await page.fill("#credits", "5000")
    await page.fill("#reason", "a wholesale order")
    await page.click("#adjust button[type=submit]")
    await expect(page.locator("#result")).to_contain_text("одобрения второго оператора")
    await expect(page.locator("#balance")).to_have_text(credits_text(account.balance))

    await page.click("header a[href='/panel/approvals']")
    held = page.locator("#approvals tr").filter(has_text="a wholesale order")
    await expect(held.locator("button.approve")).to_have_count(0)  # not one's own
    await expect(held.locator("button.reject")).to_have_text("Отозвать")

    async with await browser.new_context(locale="ru-RU") as other:
        admin = await other.new_page()
        await sign_in(admin, running)
        await admin.goto(f"{running.url}/panel/approvals")
        row = admin.locator("#approvals tr").filter(has_text="a wholesale order")
        await row.locator("button.approve").click()
        await expect(admin.locator("#decision")).to_have_text("Одобрено и отправлено.")
        await expect(row).to_have_count(0)
    await page.goto(f"{running.url}/panel/users/{account.user_id}")
    await expect(page.locator("#balance")).to_have_text(credits_text(account.balance + 5000))
