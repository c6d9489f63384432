"""Operations in the panel, in a real headless Chromium: an admin replays a dead letter back to
its GPU queue, and pauses a workflow's queue (then resumes it), each with a reason."""

from __future__ import annotations

import json

import aio_pika
import pytest
from playwright.async_api import Page, expect
from test_backend_operations import WORKFLOW, channel, count, dead_letter

from contracts.envelope import new_envelope
from contracts.events import JobDispatchedV1
from contracts.topology import Topology
from support.backend_harness import Running, sign_in

pytestmark = pytest.mark.integration
__all__ = ["channel"]  # a fixture of the operations tests, used here


async def test_an_admin_replays_a_dead_letter_and_pauses_a_workflow(
    running: Running, topology: Topology, channel: aio_pika.abc.AbstractChannel, page: Page
) -> None:
    gpu = topology.gpu_queues[WORKFLOW]
    envelope = new_envelope(
        JobDispatchedV1(job_id=8, attempt=1, workflow_type=WORKFLOW, prompt="sepia"),
        source="test",
    )
    await dead_letter(
        channel,
        gpu.name,
        aio_pika.Message(
            envelope.model_dump_json().encode(),
            message_id=str(envelope.id),
            type=envelope.type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
    )
    await sign_in(page, running)
    await page.click("header a[href='/panel/operations']")
    row = page.locator("#dead-letter-queues tr", has_text=gpu.dlq)
    await expect(row.locator(".count")).to_have_text("1")
    await row.locator("a").click()
    await expect(page.locator("#letters")).to_contain_text(str(envelope.id))

    await page.check(f"#letters input[value='{envelope.id}']")
    await page.click("#replay")  # no reason: a field error, nothing moves
    await expect(page.locator("#reason-error")).to_have_text("Укажите причину.")
    assert await count(channel, gpu.dlq) == 1
    await page.check(f"#letters input[value='{envelope.id}']")
    await page.fill("#reason", "the runner is fixed")
    await page.click("#replay")
    await expect(page.locator("#result .ok")).to_have_text(
        "Отправлено повторно: 1 из 1; в очереди осталось: 0."
    )
    await expect(page.locator("#letters")).to_contain_text("Очередь пуста.")
    back = await (await channel.get_queue(gpu.name, ensure=False)).get(no_ack=True, timeout=5)
    assert back is not None
    assert json.loads(back.body)["id"] == str(envelope.id)

    await page.click("header a[href='/panel/operations']")
    workflow = page.locator(f"#workflow-{WORKFLOW}")
    if await workflow.locator("button[value=resume]").count():  # left paused by another test
        await workflow.locator("input[name=reason]").fill("a clean start")
        await workflow.locator("button[value=resume]").click()
        workflow = page.locator(f"#workflow-{WORKFLOW}")
    await workflow.locator("button[value=pause]").click()  # no reason
    await expect(page.locator(f"#workflow-{WORKFLOW} .reason-error")).to_have_text(
        "Укажите причину."
    )
    await page.locator(f"#workflow-{WORKFLOW} input[name=reason]").fill("GPU driver update")
    await page.locator(f"#workflow-{WORKFLOW} button[value=pause]").click()
    await expect(page.locator("#result .ok")).to_contain_text(f"Приостановлено: {WORKFLOW}")
    await expect(page.locator(f"#workflow-{WORKFLOW} .state")).to_have_text("приостановлена")

    await page.locator(f"#workflow-{WORKFLOW} input[name=reason]").fill("updated")
    await page.locator(f"#workflow-{WORKFLOW} button[value=resume]").click()
    await expect(page.locator("#result .ok")).to_contain_text(f"Возобновлено: {WORKFLOW}")
    await expect(page.locator(f"#workflow-{WORKFLOW} .state")).to_have_text("работает")
