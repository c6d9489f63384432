"""The panel's jobs page in a real headless Chromium: filtered by status, user, preset and
creation time, a job canceled from its row (a reason asked for first), and a failed one retried
from its row as a new job at no charge."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from playwright.async_api import Page, expect
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from billing import services
from billing.models import DELIVERY as BILLING
from jobs.models import Job
from messaging.unit_of_work import UnitOfWork
from support.backend_harness import Running, sign_in
from support.billing_harness import new_telegram_id, scalar

pytestmark = pytest.mark.integration


async def test_jobs_are_filtered_one_is_canceled_and_a_failed_one_retried(
    running: Running, backend_engine: AsyncEngine, page: Page
) -> None:
    async with UnitOfWork(backend_engine, BILLING, source="test") as uow:
        account = await services.ensure_account(uow, new_telegram_id(), "jobs_panel", 60)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    rows = [
        ("completed", now - timedelta(hours=5)),
        ("waiting", now - timedelta(hours=3)),
        ("failed", now - timedelta(hours=1)),
    ]
    async with backend_engine.begin() as connection:
        ids = [
            (
                await connection.execute(
                    insert(Job)
                    .values(
                        user_id=account.user_id,
                        telegram_id=account.telegram_id,
                        prompt="a cat",
                        workflow_type="qwen_image",
                        price=30,
                        request_id=uuid.uuid4(),
                        stage=stage,
                        created_at=created,
                        debited_at=created,  # paid, as every job past billing was
                    )
                    .returning(Job.id)
                )
            ).scalar_one()
            for stage, created in rows
        ]

    await sign_in(page, running, path="/panel/jobs")
    await page.goto(f"{running.url}/panel/jobs?user_id={account.user_id}")
    await expect(page.locator("#job-list tr[id^=job-]")).to_have_count(3)

    moment = "%Y-%m-%dT%H:%M"
    await page.fill("#created_from", (now - timedelta(hours=4)).strftime(moment))
    await page.fill("#created_until", (now - timedelta(minutes=30)).strftime(moment))
    await page.click("#job-filters button[type=submit]")
    await expect(page.locator("#job-list tr[id^=job-]")).to_have_count(2)
    await page.select_option("#status", "waiting")
    await page.click("#job-filters button[type=submit]")
    await expect(page.locator("#job-list tr[id^=job-]")).to_have_count(1)
    row = page.locator(f"#job-{ids[1]}")
    await expect(row.locator("form.cancel")).to_have_count(1)

    await row.locator("form.cancel button").click()  # no reason: asked for one
    await expect(page.locator("#reason-error")).to_be_visible()
    await row.locator("input[name=reason]").fill("the user asked by mail")
    await row.locator("form.cancel button").click()
    await expect(page.locator("#result .ok")).to_be_visible()
    await page.select_option("#status", "")
    await page.click("#job-filters button[type=submit]")
    await expect(page.locator(f"#job-{ids[1]} .status")).to_have_text("отменено")
    await expect(page.locator(f"#job-{ids[0]} form.cancel")).to_have_count(0)  # finished
    stage = await scalar(backend_engine, "SELECT stage FROM jobs WHERE id = :id", id=ids[1])
    assert stage == "canceled"

    failed = page.locator(f"#job-{ids[2]}")
    await expect(failed.locator("form.cancel")).to_have_count(0)
    await expect(page.locator(f"#job-{ids[0]} form.retry")).to_have_count(0)  # it did not fail
    await failed.locator("input[name=reason]").fill("the runner is fixed")
    await failed.locator("form.retry button").click()
    await expect(page.locator("#result .ok")).to_contain_text("перезапущено бесплатно")
    retried = await scalar(
        backend_engine,
        "SELECT price FROM jobs WHERE user_id = :user AND id > :last",
        user=account.user_id,
        last=max(ids),
    )
    assert retried == 0
    stage = await scalar(backend_engine, "SELECT stage FROM jobs WHERE id = :id", id=ids[2])
    assert stage == "failed"  # never revived
