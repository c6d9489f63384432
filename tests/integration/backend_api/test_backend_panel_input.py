"""Odd input to the panel's query strings and forms (which the OpenAPI fuzzer does not reach)
gets a page or a 4xx, never a 500; and an idempotency key is one command, its target included."""

from __future__ import annotations

import uuid

import pytest
from playwright.async_api import Page
from sqlalchemy.ext.asyncio import AsyncEngine

from billing import services
from billing.models import DELIVERY as BILLING
from messaging.unit_of_work import UnitOfWork
from support.backend_harness import OPERATOR, PASSWORD, SUPPORT, Running, sign_in
from support.billing_harness import new_telegram_id

pytestmark = pytest.mark.integration

ODD_QUERIES = [
    "/panel/users?q=%C2%B2",  # "²": a digit to str.isdigit, not to int()
    "/panel/users?q=" + "9" * 5000,  # past int()'s 4300 digits
    "/panel/users?offset=99999999999",
    "/panel/jobs?user_id=%C2%B2",
    "/panel/jobs?preset_id=" + "9" * 5000,
    "/panel/jobs?offset=99999999999",
    "/panel/payments?user_id=%C2%B2",
    "/panel/payments?currency=%C3%A4%C3%B6%C3%BC",  # "äöü": letters, not A-Z
    "/panel/payments?method=%C3%A9t%C3%A9",
    "/panel/payments?offset=99999999999",
    "/panel/payments?from=0001-01-01T00:00%2B05:00",  # before year 1 in UTC
    "/panel/payments?until=9999-12-31T23:59-05:00",  # after year 9999 in UTC
    "/panel/jobs?created_from=0001-01-01T00:00&created_until=9999-12-31T23:59",
    "/panel/presets?offset=99999999999",
    "/panel/broadcasts?offset=99999999999",
    "/panel/sessions?offset=99999999999999999999",
    "/panel/approvals?offset=99999999999999999999",
]


@pytest.mark.parametrize("path", ODD_QUERIES)
async def test_odd_query_strings_get_a_page_not_a_server_error(
    running: Running, page: Page, path: str
) -> None:
    await sign_in(page, running, login=SUPPORT)
    response = await page.request.get(f"{running.url}{path}", max_redirects=0)
    assert response.status < 500, (path, response.status)


async def test_a_write_to_an_id_past_the_keys_range_is_not_found(
    running: Running, page: Page
) -> None:
    await sign_in(page, running, login=SUPPORT)
    await page.goto(f"{running.url}/panel/users")
    csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
    form = {"csrf": csrf or "", "reason": "odd", "credits": "1", "key": str(uuid.uuid4())}
    for path in (
        "/panel/users/99999999999/adjust",
        "/panel/payments/99999999999/refund",
        "/panel/payments/99999999999/recheck",
    ):
        response = await page.request.post(f"{running.url}{path}", form=form, max_redirects=0)
        assert response.status == 404, (path, response.status)


@pytest.mark.parametrize(
    "query",
    ["created_from=0001-01-01T00:00:00%2B05:00", "created_until=9999-12-31T23:59:00-05:00"],
)
async def test_a_moment_outside_the_utc_calendar_is_refused_not_a_bad_gateway(
    running: Running, query: str
) -> None:
    """Year 1 at +05:00 is year 0 in UTC, which neither Python nor billing can hold."""
    for path in ("/api/v1/payments", "/api/v1/jobs"):
        async with running.client() as client, client.get(f"{path}?{query}") as response:
            assert response.status == 422, (path, response.status, await response.text())


@pytest.mark.parametrize(
    "body",
    [
        {"login": "alice\u0000", "password": "x"},  # PostgreSQL's text holds no NUL
        {"login": OPERATOR, "password": PASSWORD, "code": "é12345"},  # hmac: ASCII only
    ],
)
async def test_a_sign_in_with_odd_credentials_is_refused_not_a_server_error(
    running: Running, body: dict[str, str]
) -> None:
    async with (
        running.client(signed_in=False) as client,
        client.post("/api/v1/sessions", json=body) as response,
    ):
        assert response.status == 401, await response.text()


async def test_the_panel_sign_in_with_odd_credentials_is_refused_not_a_server_error(
    running: Running, page: Page
) -> None:
    await page.goto(f"{running.url}/panel/login")
    csrf = await page.locator("form input[name=csrf]").last.get_attribute("value")
    for username, code in (("vic\u0000", ""), (OPERATOR, "é12345")):
        form = {"csrf": csrf or "", "username": username, "password": PASSWORD, "code": code}
        response = await page.request.post(f"{running.url}/panel/login", form=form)
        assert response.status == 401, (username, response.status)


async def test_a_key_used_for_one_workflow_is_a_conflict_for_another(running: Running) -> None:
    """Resuming workflow B under the key that resumed A must not answer with A's outcome."""
    key = str(uuid.uuid4())
    headers = {"Idempotency-Key": key}
    body = {"reason": "after maintenance"}
    async with running.client() as client:
        async with client.post(
            "/api/v1/workflows/pillow_filter/resume", json=body, headers=headers
        ) as response:
            assert response.status in (200, 202), await response.text()
        async with client.post(
            "/api/v1/workflows/qwen_image/resume", json=body, headers=headers
        ) as response:
            assert response.status == 409, await response.json()


async def test_a_form_sent_again_with_other_values_is_a_conflict_not_a_server_error(
    running: Running, backend_engine: AsyncEngine, page: Page
) -> None:
    """The browser's Back to a sent form, another amount, Send: the form's key was used."""
    async with UnitOfWork(backend_engine, BILLING, source="test") as uow:
        account = await services.ensure_account(uow, new_telegram_id(), "twice", 60)
    await sign_in(page, running, login=SUPPORT, path=f"/panel/users/{account.user_id}")
    csrf = await page.locator("#adjust input[name=csrf]").get_attribute("value")
    key = await page.locator("#adjust input[name=key]").get_attribute("value")
    path = f"{running.url}/panel/users/{account.user_id}/adjust"
    first = {"csrf": csrf or "", "key": key or "", "credits": "5", "reason": "goodwill"}
    response = await page.request.post(path, form=first, max_redirects=0)
    assert response.status == 303
    again = {**first, "credits": "7"}
    response = await page.request.post(path, form=again, max_redirects=0)
    assert response.status == 409
    assert "<h1>Уже отправлено</h1>" in await response.text()
