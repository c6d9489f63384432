"""Money in the panel, in a real headless Chromium: an operator finds a top-up among the
payments (filters, totals), refunds part of it to the buyer through billing and YooKassa, and
sees the refund, the buyer's balance and the audit entry."""

from __future__ import annotations

import uuid

import pytest
from playwright.async_api import Page, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from support.backend_harness import VIEWER, Running, sign_in, topup
from support.billing_harness import balance_of, ledger_sum, open_account

pytestmark = pytest.mark.integration


async def test_an_operator_refunds_part_of_a_payment_in_the_panel(
    running: Running, backend_engine: AsyncEngine, page: Page
) -> None:
    user_id, _ = await open_account(backend_engine, balance=0, welcome=0)
    payment_id, _ = await topup(running, backend_engine, user_id, kopecks=25_000)
    assert await balance_of(backend_engine, user_id) == 250
    await sign_in(page, running)
    await expect(page).to_have_url(f"{running.url}/panel/users")

    await page.click("header a[href='/panel/payments']")
    await page.fill("#user_id", str(user_id))
    await page.select_option("#status", "succeeded")
    await page.fill("#currency", "RUB")
    await page.click("#payment-filters button[type=submit]")
    await expect(page.locator("#totals")).to_contain_text("250.00 RUB")
    await page.click(f"#payment-list a[href='/panel/payments/{payment_id}']")
    await expect(page.locator("#payment-status")).to_have_text("успешно")

    await page.fill("#amount", "1000")  # more than was paid, and no reason: field errors
    await page.click("#refund button[type=submit]")
    await expect(page.locator("#reason-error")).to_be_visible()
    await page.fill("#amount", "abc")
    await page.fill("#refund-reason", "ticket 42: a duplicate purchase")
    await page.click("#refund button[type=submit]")
    await expect(page.locator("#amount-error")).to_be_visible()
    assert await balance_of(backend_engine, user_id) == 250

    await page.fill("#amount", "100,50")
    await page.fill("#refund-reason", "ticket 42: a duplicate purchase")
    await page.click("#refund button[type=submit]")
    await expect(page.locator("#result .ok")).to_contain_text("100.50 RUB")
    await expect(page.locator("#result .ok")).to_contain_text("100")
    await expect(page.locator("#refunds")).to_contain_text("100.50 RUB")
    assert await balance_of(backend_engine, user_id) == 150  # 100.50 rubles bought 100 credits
    assert await ledger_sum(backend_engine, user_id) == 150
    await page.reload()  # the page again (its `done` link): nothing refunded twice
    await expect(page.locator("#refunds tr")).to_have_count(2)  # the header and one refund

    await page.click("header a[href='/panel/audit']")
    await expect(page.locator("#audit")).to_contain_text("ticket 42: a duplicate purchase")
    await page.click("header a[href='/panel/ledger-audit']")
    await expect(page.locator("#audit-summary")).to_be_visible()


async def test_a_viewer_sees_payments_but_no_refund_form(
    running: Running, backend_engine: AsyncEngine, page: Page
) -> None:
    user_id, _ = await open_account(backend_engine, balance=0, welcome=0)
    payment_id, _ = await topup(running, backend_engine, user_id)
    await sign_in(page, running, login=VIEWER)
    await expect(page).to_have_url(f"{running.url}/panel/users")
    await page.goto(f"{running.url}/panel/payments/{payment_id}")
    await expect(page.locator("#payment-status")).to_have_text("успешно")
    await expect(page.locator("#refund")).to_have_count(0)
    await expect(page.locator("#recheck")).to_have_count(0)
    response = await page.request.post(
        f"{running.url}/panel/payments/{payment_id}/refund",
        form={"reason": "viewer", "key": str(uuid.uuid4()), "csrf": "whatever"},
    )
    assert response.status == 403
    assert await balance_of(backend_engine, user_id) == 100
