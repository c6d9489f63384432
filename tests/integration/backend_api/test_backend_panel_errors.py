"""A panel page's HTTP error is a page of the panel in the operator's language (a heading, what
to do, a link to the dashboard), with the error's status; the API's errors stay JSON."""

from __future__ import annotations

import uuid

import pytest
from playwright.async_api import Page, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from billing import services
from billing.models import DELIVERY as BILLING
from messaging.unit_of_work import UnitOfWork
from support.backend_harness import SUPPORT, VIEWER, Running, sign_in
from support.billing_harness import new_telegram_id

pytestmark = pytest.mark.integration


async def shows_error(page: Page, heading: str) -> None:
    await expect(page.locator("main h1")).to_have_text(heading)
    await expect(page.locator("main a[href='/panel/dashboard']")).to_be_visible()
    assert "detail" not in await page.locator("body").inner_text()


async def test_a_viewer_on_an_admin_page_gets_a_russian_403_page_in_the_panel(
    running: Running, page: Page
) -> None:
    await sign_in(page, running, login=VIEWER)
    response = await page.goto(f"{running.url}/panel/audit")
    assert response is not None
    assert response.status == 403
    assert response.headers["content-type"].startswith("text/html")
    await shows_error(page, "Нет доступа")
    await expect(page.locator("header")).to_contain_text(VIEWER)  # signed in: the nav is there


@pytest.mark.parametrize(
    ("path", "status", "heading"),
    [
        ("/panel/users/999999999", 404, "Не найдено"),
        ("/panel/payments/999999999", 404, "Не найдено"),
        ("/panel/no-such-page", 404, "Не найдено"),
        ("/panel/users/abc", 422, "Неверный адрес"),
        ("/panel/logout", 405, "Неверный адрес"),  # a form's address, opened
    ],
)
async def test_a_page_that_fails_is_a_russian_page_with_its_status(
    running: Running, page: Page, path: str, status: int, heading: str
) -> None:
    await sign_in(page, running, login=SUPPORT)
    response = await page.goto(f"{running.url}{path}")
    assert response is not None
    assert response.status == status
    await shows_error(page, heading)
    if status == 405:
        assert response.headers["allow"] == "POST"


async def test_an_english_speaking_operator_gets_the_page_in_english(
    running: Running, page: Page
) -> None:
    await sign_in(page, running, login=SUPPORT)
    await page.click("header button[value=en]")
    response = await page.goto(f"{running.url}/panel/users/999999999")
    assert response is not None
    assert response.status == 404
    await shows_error(page, "Not found")


async def test_a_forged_form_and_a_form_sent_twice_get_pages_that_say_what_to_do(
    running: Running, backend_engine: AsyncEngine, page: Page
) -> None:
    async with UnitOfWork(backend_engine, BILLING, source="test") as uow:
        account = await services.ensure_account(uow, new_telegram_id(), "errors", 60)
    await sign_in(page, running, login=SUPPORT, path=f"/panel/users/{account.user_id}")
    csrf = await page.locator("#adjust input[name=csrf]").get_attribute("value")
    path = f"{running.url}/panel/users/{account.user_id}/adjust"
    first = {"csrf": csrf or "", "key": str(uuid.uuid4()), "credits": "5", "reason": "goodwill"}
    forged = await page.request.post(path, form={**first, "csrf": "not-the-token"})
    assert forged.status == 403
    assert "<h1>Нет доступа</h1>" in await forged.text()
    assert (await page.request.post(path, form=first, max_redirects=0)).status == 303
    again = await page.request.post(path, form={**first, "credits": "7"}, max_redirects=0)
    assert again.status == 409
    assert again.headers["content-type"].startswith("text/html")
    assert "<h1>Уже отправлено</h1>" in await again.text()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/v1/users/999999999", 404),
        ("GET", "/api/v1/users/abc", 422),
        ("DELETE", "/api/v1/broadcasts", 405),
        ("GET", "/api/v1/no-such-thing", 404),
    ],
)
async def test_the_api_still_answers_its_errors_in_json(
    running: Running, method: str, path: str, status: int
) -> None:
    async with running.client(login=VIEWER) as client, client.request(method, path) as response:
        assert response.status == status
        assert response.content_type == "application/json"
        assert "detail" in await response.json()
        if status == 405:  # every method of the path, though a router's routes share it
            assert response.headers["Allow"] == "GET, POST"
