"""Refunds to the buyer: YooKassa's Refund.create, whole or part, once per key; the credits
out through the ledger, never below zero, the shortfall recorded; `refund.succeeded`
notifications applied once, a refund made in YooKassa's dashboard too."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from test_billing_payments import pending_payment

from billing import accounts, payments
from billing.app import Billing, Settings, build
from billing.domain import RemoteRefund, refund_request_key
from billing.refunds import RefundOutcome, RefundResult, refund_topup, request_id
from billing.settings import BillingSettings
from billing.yookassa_gateway import ProviderUnavailableError, RefundDraft
from sandbox.yookassa import YooKassaSandbox
from support.billing_harness import (
    balance_of,
    fund,
    ledger_sum,
    open_account,
    outbox,
    post_webhook,
    scalar,
)

Engine = AsyncEngine


@pytest.fixture
async def idle_billing(settings: Settings) -> AsyncIterator[Billing]:
    service = build(settings)
    yield service
    await service.runtime.engine.dispose()


async def paid_topup(
    billing: Billing, engine: Engine, fake: YooKassaSandbox, user_id: int
) -> tuple[int, str]:
    """A 100.00 RUB top-up of 100 credits, paid and credited: (our id, YooKassa's id)."""
    payment_id, yookassa_id = await pending_payment(billing, engine, user_id)
    fake.set_status(yookassa_id, "succeeded")
    assert await post_webhook(billing, fake.notification(yookassa_id)) == (200, "credit")
    return payment_id, yookassa_id


async def refund(
    billing: Billing, payment_id: int, key: str, kopecks: int | None = None
) -> RefundResult:
    return await refund_topup(
        billing.runtime.unit_of_work,
        billing.topups._provider,
        billing.topups._yookassa,
        payment_id=payment_id,
        key=key,
        amount_kopecks=kopecks,
        reason="test",
    )


async def _refund_rows(engine: Engine, payment_id: int) -> str | None:
    return await scalar(  # type: ignore[no-any-return]
        engine,
        "SELECT string_agg(status::text || ' ' || amount || ' ' || credits || ' ' "
        "|| payment_method, ',' ORDER BY id) FROM payments "
        "WHERE refund_of = :p AND payment_type = 'refund'",
        p=payment_id,
    )


async def test_a_whole_refund_takes_the_credits_back_never_below_zero(
    idle_billing: Billing, billing_engine: Engine, fake_yookassa: YooKassaSandbox
) -> None:
    user_id, _ = await open_account(billing_engine, balance=0, welcome=0)
    payment_id, yookassa_id = await paid_topup(idle_billing, billing_engine, fake_yookassa, user_id)
    await fund(billing_engine, user_id, -70, expect=30)  # the buyer spent 70 credits

    result = await refund(idle_billing, payment_id, "support-ticket-1")

    assert result.outcome is RefundOutcome.refunded
    assert (result.amount_kopecks, result.credits, result.shortfall) == (10000, 100, 70)
    [remote] = fake_yookassa.refunds.values()
    assert remote["payment_id"] == yookassa_id
    assert remote["amount"] == {"value": "100.00", "currency": "RUB"}
    assert await balance_of(billing_engine, user_id) == 0
    assert await ledger_sum(billing_engine, user_id) == 0
    assert await _refund_rows(billing_engine, payment_id) == "succeeded 10000 100 card"
    logs = "SELECT status || ' ' || amount FROM payment_logs WHERE payment_id = :r"
    assert await scalar(billing_engine, logs, r=remote["id"]) == "refunded 100"
    [short] = [row for row in await _shortfalls(billing_engine) if row.payment == payment_id]
    assert (short.credits, short.taken, short.shortfall) == (100, 30, 70)

    # YooKassa's refund.succeeded notification, 10 times at once, and the same request again.
    notification = fake_yookassa.refund_notification(remote["id"])
    answers = await asyncio.gather(*(post_webhook(idle_billing, notification) for _ in range(10)))
    assert {status for status, _ in answers} == {200}
    again = await refund(idle_billing, payment_id, "support-ticket-1")
    assert again.outcome is RefundOutcome.refunded
    assert len(fake_yookassa.refunds) == 1
    assert await balance_of(billing_engine, user_id) == 0
    entries = "SELECT count(*) FROM billing_ledger WHERE kind = 'topup_refund' AND user_id = :u"
    assert await scalar(billing_engine, entries, u=user_id) == 1
    # Nothing is left to refund.
    assert (await refund(idle_billing, payment_id, "another")).outcome is RefundOutcome.too_much


async def _shortfalls(engine: Engine) -> list[object]:
    async with engine.connect() as connection:
        return list(await connection.execute(payments.refund_shortfalls()))


async def test_partial_refunds_take_back_their_share_and_never_more_than_was_paid(
    idle_billing: Billing, billing_engine: Engine, fake_yookassa: YooKassaSandbox
) -> None:
    user_id, _ = await open_account(billing_engine, balance=60)
    payment_id, _ = await paid_topup(idle_billing, billing_engine, fake_yookassa, user_id)
    first = await refund(idle_billing, payment_id, "a", kopecks=2500)
    second = await refund(idle_billing, payment_id, "b", kopecks=3333)
    assert (first.outcome, first.credits, first.shortfall) == (RefundOutcome.refunded, 25, 0)
    assert (second.outcome, second.credits) == (RefundOutcome.refunded, 33)  # rounded down
    too_much = await refund(idle_billing, payment_id, "c", kopecks=5000)
    assert too_much.outcome is RefundOutcome.too_much
    assert "4167 kopecks left" in too_much.detail
    assert await balance_of(billing_engine, user_id) == 160 - 25 - 33
    assert await ledger_sum(billing_engine, user_id) == 160 - 25 - 33
    rows = await _refund_rows(billing_engine, payment_id)
    assert rows == "succeeded 2500 25 card,succeeded 3333 33 card"


async def test_a_refund_made_in_yookassas_dashboard_is_applied_once_from_its_notification(
    idle_billing: Billing, billing_engine: Engine, fake_yookassa: YooKassaSandbox
) -> None:
    user_id, _ = await open_account(billing_engine, balance=60)
    payment_id, yookassa_id = await paid_topup(idle_billing, billing_engine, fake_yookassa, user_id)
    refund_id = fake_yookassa.refund(yookassa_id, 10000)  # by the shop, at YooKassa
    notification = fake_yookassa.refund_notification(refund_id)
    answers = await asyncio.gather(*(post_webhook(idle_billing, notification) for _ in range(20)))
    assert {status for status, _ in answers} == {200}
    assert await balance_of(billing_engine, user_id) == 60
    assert await ledger_sum(billing_engine, user_id) == 60
    assert await _refund_rows(billing_engine, payment_id) == "succeeded 10000 100 card"

    # A forged one: a refund YooKassa does not know, and one of a payment that is not ours.
    forged = fake_yookassa.refund_notification(refund_id)
    forged["object"]["id"] = "2f000000-0015-5000-9000-000000000000"
    assert (await post_webhook(idle_billing, forged))[0] == 400


async def test_a_refund_interrupted_by_a_hung_yookassa_finishes_once_with_the_same_key(
    settings: Settings, billing_engine: Engine, fake_yookassa: YooKassaSandbox
) -> None:
    settings.yookassa = settings.yookassa.model_copy(update={"timeout_s": 0.5})
    service = build(settings)
    try:
        user_id, _ = await open_account(billing_engine, balance=60)
        payment_id, _ = await paid_topup(service, billing_engine, fake_yookassa, user_id)
        fake_yookassa.hang_next(1, seconds=600)
        with pytest.raises(ProviderUnavailableError):
            await refund(service, payment_id, "ticket-7")
        assert await _refund_rows(billing_engine, payment_id) == "pending 10000 100 card"
        result = await refund(service, payment_id, "ticket-7")
        assert result.outcome is RefundOutcome.refunded
        assert len(fake_yookassa.refunds) == 1
        assert await balance_of(billing_engine, user_id) == 60
        assert await _refund_rows(billing_engine, payment_id) == "succeeded 10000 100 card"
    finally:
        await service.runtime.engine.dispose()


async def test_the_operators_cli_refunds_and_lists_the_shortfall(
    idle_billing: Billing,
    billing_database_url: str,
    billing_engine: Engine,
    fake_yookassa: YooKassaSandbox,
) -> None:
    user_id, _ = await open_account(billing_engine, balance=0, welcome=0)
    payment_id, _ = await paid_topup(idle_billing, billing_engine, fake_yookassa, user_id)
    await fund(billing_engine, user_id, -40, expect=60)
    env = {
        **os.environ,
        "DATABASE_URL": billing_database_url,
        "YOOKASSA_API_URL": fake_yookassa.api_url,
    }
    args = ("billing", "refund", "--payment-id", str(payment_id), "--key", "cli-1")
    status, output = await _imagebot(env, *args, "--amount", "50.00", "--reason", "complaint")
    assert status == 0, output
    assert "refunded, 50.00 RUB, 50 credits bought back" in output
    assert "shortfall" not in output
    status, output = await _imagebot(env, *args[:-1], "cli-2")
    assert status == 0, output
    assert "refunded, 50.00 RUB, 50 credits bought back, 40 of them spent already" in output
    status, output = await _imagebot(env, "billing", "shortfalls")
    assert status == 0, output
    assert f"of payment {payment_id} " in output
    assert "50 credits bought back, 10 taken, shortfall 40" in output
    status, output = await _imagebot(env, *args[:-1], "cli-3")
    assert status == 1
    assert "too_much" in output
    assert refund_request_key(uuid.uuid4()).startswith("refund-")


async def _imagebot(env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "imagebot",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


class NotifiedFirst:
    """Our gateway, but YooKassa's refund.succeeded reaches the webhook before the call that
    made the refund returns (the sandbox, like YooKassa, notifies at once)."""

    def __init__(self, billing: Billing, fake: YooKassaSandbox) -> None:
        self._billing, self._fake = billing, fake
        self._inner = billing.topups._provider

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def refund(self, draft: RefundDraft, idempotency_key: str) -> RemoteRefund:
        remote = await self._inner.refund(draft, idempotency_key)
        notification = self._fake.refund_notification(remote.id)
        assert await post_webhook(self._billing, notification) == (200, "refunded")
        return remote


async def test_a_refund_whose_notification_comes_first_is_still_one_refund(
    idle_billing: Billing, billing_engine: Engine, fake_yookassa: YooKassaSandbox
) -> None:
    user_id, _ = await open_account(billing_engine, balance=60)
    payment_id, _ = await paid_topup(idle_billing, billing_engine, fake_yookassa, user_id)
    result = await refund_topup(
        idle_billing.runtime.unit_of_work,
        NotifiedFirst(idle_billing, fake_yookassa),  # type: ignore[arg-type]
        idle_billing.topups._yookassa,
        payment_id=payment_id,
        key="raced",
        amount_kopecks=4000,
    )
    assert (result.outcome, result.credits) == (RefundOutcome.refunded, 40)
    assert await _refund_rows(billing_engine, payment_id) == "succeeded 4000 40 card"
    logs = "SELECT string_agg(status, ',' ORDER BY id) FROM payment_logs WHERE user_id = :u"
    assert await scalar(billing_engine, logs, u=user_id) == "succeeded,refunded"
    assert await balance_of(billing_engine, user_id) == 120


async def test_a_pending_refund_whose_notification_never_came_is_settled_by_reconciliation(
    settings: Settings, billing_engine: Engine, fake_yookassa: YooKassaSandbox
) -> None:
    settings.billing = BillingSettings(reconcile_min_age_s=0)
    service = build(settings)
    try:
        user_id, _ = await open_account(billing_engine, balance=60)
        payment_id, _ = await paid_topup(service, billing_engine, fake_yookassa, user_id)
        fake_yookassa.refunds_pending = True
        first = await refund(service, payment_id, "slow-1", kopecks=3000)
        second = await refund(service, payment_id, "slow-2", kopecks=2000)
        assert (first.outcome, second.outcome) == (RefundOutcome.pending, RefundOutcome.pending)
        await service.reconciler.run_once()  # still pending at YooKassa: nothing moves
        assert await _refund_rows(billing_engine, payment_id) == (
            "pending 3000 30 card,pending 2000 20 card"
        )
        assert await balance_of(billing_engine, user_id) == 160
        done, canceled = fake_yookassa.refunds
        fake_yookassa.set_refund_status(done, "succeeded")
        fake_yookassa.set_refund_status(canceled, "canceled")
        await service.reconciler.run_once()
        await service.reconciler.run_once()  # a second pass changes nothing
        assert await _refund_rows(billing_engine, payment_id) == (
            "succeeded 3000 30 card,failed 2000 20 card"
        )
        assert await balance_of(billing_engine, user_id) == 130
        assert await ledger_sum(billing_engine, user_id) == 130
    finally:
        await service.runtime.engine.dispose()


async def test_a_topup_landing_between_a_refunds_read_and_its_write_still_takes_the_credits(
    idle_billing: Billing,
    billing_engine: Engine,
    fake_yookassa: YooKassaSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The refund reads the balance (30 of the 100 credits left: a shortfall), and the
    buyer's other top-up of 50 commits right after: the refund must still take its credits
    (as far as the balance holds them) and tell the buyer, never close its row with nothing
    taken (the money back at YooKassa and the credits kept)."""
    user_id, telegram_id = await open_account(billing_engine, balance=60)
    payment_id, _ = await paid_topup(idle_billing, billing_engine, fake_yookassa, user_id)
    await fund(billing_engine, user_id, -130, expect=30)
    read = accounts.facts
    topups: list[asyncio.Task[None]] = []

    async def then_a_topup(*args: Any, **kwargs: Any) -> accounts.Facts:
        found = await read(*args, **kwargs)
        if not topups:
            topups.append(asyncio.create_task(fund(billing_engine, user_id, 50)))
            await asyncio.sleep(0.3)  # it commits now, unless the refund holds the account
        return found

    monkeypatch.setattr(accounts, "facts", then_a_topup)
    result = await refund(idle_billing, payment_id, "raced-by-a-topup")
    await asyncio.gather(*topups)

    assert result.outcome is RefundOutcome.refunded
    assert await _refund_rows(billing_engine, payment_id) == "succeeded 10000 100 card"
    entry = (
        "SELECT COALESCE(-sum(amount), 0) FROM billing_ledger "
        "WHERE kind = 'topup_refund' AND user_id = :u"
    )
    taken = await scalar(billing_engine, entry, u=user_id)
    assert taken > 0
    assert taken + result.shortfall == 100
    assert await balance_of(billing_engine, user_id) == 80 - taken
    assert await ledger_sum(billing_engine, user_id) == 80 - taken
    [told] = await outbox(billing_engine, "payment.refunded", telegram_id=telegram_id)
    assert (told["credits"], told["shortfall"]) == (taken, result.shortfall)


async def test_a_topup_refunded_whole_in_parts_takes_back_all_its_credits(
    idle_billing: Billing, billing_engine: Engine, fake_yookassa: YooKassaSandbox
) -> None:
    """Each part rounds down, but the parts of the whole amount add up to all the credits: the
    buyer keeps no credit of money that all went back."""
    user_id, _ = await open_account(billing_engine, balance=60)
    payment_id, _ = await paid_topup(idle_billing, billing_engine, fake_yookassa, user_id)
    parts = [
        await refund(idle_billing, payment_id, "part-1", kopecks=2500),
        await refund(idle_billing, payment_id, "part-2", kopecks=3333),
        await refund(idle_billing, payment_id, "the-rest"),
    ]
    assert [part.outcome for part in parts] == [RefundOutcome.refunded] * 3
    assert [part.amount_kopecks for part in parts] == [2500, 3333, 4167]
    assert sum(part.credits for part in parts) == 100
    assert await balance_of(billing_engine, user_id) == 60
    assert await ledger_sum(billing_engine, user_id) == 60

    # The same through YooKassa's dashboard: the part that completes the whole takes the rest.
    other, other_yookassa_id = await paid_topup(
        idle_billing, billing_engine, fake_yookassa, user_id
    )
    for kopecks in (3333, 6667):
        refund_id = fake_yookassa.refund(other_yookassa_id, kopecks)
        notification = fake_yookassa.refund_notification(refund_id)
        assert (await post_webhook(idle_billing, notification))[0] == 200
    assert await _refund_rows(billing_engine, other) == (
        "succeeded 3333 33 card,succeeded 6667 67 card"
    )
    assert await balance_of(billing_engine, user_id) == 60


async def _unsent_refund(
    service: Billing, engine: Engine, fake: YooKassaSandbox, key: str
) -> tuple[int, int, str]:
    """A paid top-up whose refund YooKassa never answered (the operator's command then
    dead-lettered): its row pending with no YooKassa id. (user, top-up, YooKassa payment id)"""
    user_id, _ = await open_account(engine, balance=60)
    payment_id, yookassa_id = await paid_topup(service, engine, fake, user_id)
    fake.hang_next(1, seconds=1.0)  # answered after our 0.5 s: made there, perhaps, unheard
    with pytest.raises(ProviderUnavailableError):
        await refund(service, payment_id, key)
    assert await _refund_rows(engine, payment_id) == "pending 10000 100 card"
    assert await scalar(
        engine, "SELECT yukassa_payment_id FROM payments WHERE refund_of = :p", p=payment_id
    ) is None  # fmt: skip
    await asyncio.sleep(1.0)  # the hung call is over at YooKassa
    return user_id, payment_id, yookassa_id


async def test_a_refund_yookassa_never_answered_is_asked_again_with_its_key_by_reconciliation(
    settings: Settings, billing_engine: Engine, fake_yookassa: YooKassaSandbox
) -> None:
    settings.yookassa = settings.yookassa.model_copy(update={"timeout_s": 0.5})
    settings.billing = BillingSettings(reconcile_min_age_s=0, refund_retry_after_s=3600)
    waiting = build(settings)
    settings.billing = BillingSettings(reconcile_min_age_s=0, refund_retry_after_s=0)
    service = build(settings)
    try:
        user_id, payment_id, _ = await _unsent_refund(
            service, billing_engine, fake_yookassa, "ticket-9"
        )
        await waiting.reconciler.run_once()  # not pending long enough to be asked again
        assert await _refund_rows(billing_engine, payment_id) == "pending 10000 100 card"
        assert await service.reconciler.run_once() == 1
        await service.reconciler.run_once()  # a second pass changes nothing
        assert await _refund_rows(billing_engine, payment_id) == "succeeded 10000 100 card"
        assert await balance_of(billing_engine, user_id) == 60
        assert await ledger_sum(billing_engine, user_id) == 60
        [made] = fake_yookassa.refunds  # one refund, under the operator's request's key
        key = refund_request_key(request_id(payment_id, "ticket-9"))
        assert fake_yookassa.by_key[key] == made
    finally:
        await waiting.runtime.engine.dispose()
        await service.runtime.engine.dispose()


async def test_a_refund_unanswered_past_its_keys_life_is_closed_not_asked_again(
    settings: Settings,
    billing_engine: Engine,
    fake_yookassa: YooKassaSandbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Asked again after YooKassa forgot its key, it could make a second refund: the row is
    closed failed for an operator instead (a refund YooKassa did make is adopted from its
    notification, as a dashboard's is)."""
    settings.yookassa = settings.yookassa.model_copy(update={"timeout_s": 0.5})
    settings.billing = BillingSettings(reconcile_min_age_s=0, refund_retry_after_s=0)
    service = build(settings)
    try:
        user_id, payment_id, _ = await _unsent_refund(
            service, billing_engine, fake_yookassa, "ticket-11"
        )
        made_before = len(fake_yookassa.refunds)
        async with billing_engine.begin() as connection:
            await connection.execute(
                text(
                    "UPDATE payments SET created_at = now() - interval '24 hours' "
                    "WHERE refund_of = :p"
                ),
                {"p": payment_id},
            )
        with caplog.at_level(logging.ERROR, logger="billing"):
            assert await service.reconciler.run_once() == 1
        assert await _refund_rows(billing_engine, payment_id) == "failed 10000 100 card"
        assert "never reached YooKassa in time" in caplog.text
        assert len(fake_yookassa.refunds) == made_before  # not asked again
        assert await balance_of(billing_engine, user_id) == 160  # nothing taken back
    finally:
        await service.runtime.engine.dispose()


async def test_a_refund_asked_again_that_yookassa_refuses_is_closed_with_its_words(
    settings: Settings,
    billing_engine: Engine,
    fake_yookassa: YooKassaSandbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings.yookassa = settings.yookassa.model_copy(update={"timeout_s": 0.5})
    settings.billing = BillingSettings(reconcile_min_age_s=0, refund_retry_after_s=0)
    service = build(settings)
    try:
        user_id, _ = await open_account(billing_engine, balance=60)
        payment_id, yookassa_id = await paid_topup(service, billing_engine, fake_yookassa, user_id)
        fake_yookassa.fail_next(1, 500)
        with pytest.raises(ProviderUnavailableError):
            await refund(service, payment_id, "ticket-10")
        fake_yookassa.refund(yookassa_id, 10000)  # refunded whole in the dashboard meanwhile
        with caplog.at_level(logging.ERROR, logger="billing"):
            assert await service.reconciler.run_once() == 1
        assert await _refund_rows(billing_engine, payment_id) == "failed 10000 100 card"
        assert "refund amount exceeds" in caplog.text
        again = await refund(service, payment_id, "ticket-10")  # the operator asks again
        assert again.outcome is RefundOutcome.rejected
        assert "refund amount exceeds" in again.detail
        assert await balance_of(billing_engine, user_id) == 160  # the dashboard's: not notified
    finally:
        await service.runtime.engine.dispose()
