"""Billing's pure money rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from billing.domain import (
    LocalPayment,
    RemotePayment,
    Settlement,
    amount_value,
    iso_week,
    our_status,
    payment_method,
    payment_mismatches,
    refund_credits,
    refund_description,
    refund_reason,
    settle,
    shortfall,
    to_kopecks,
    yookassa_status,
)
from billing.settings import BillingSettings, YooKassaSettings


def test_the_iso_week_turns_at_midnight_in_the_configured_time_zone() -> None:
    sunday_night_utc = datetime(2026, 11, 22, 20, 59, 59, tzinfo=UTC)  # 23:59:59 in Moscow
    monday_moscow = datetime(2026, 11, 22, 21, 0, 0, tzinfo=UTC)  # 00:00:00 in Moscow
    assert iso_week(sunday_night_utc, "Europe/Moscow") == "2026-W47"
    assert iso_week(monday_moscow, "Europe/Moscow") == "2026-W48"
    assert iso_week(monday_moscow, "UTC") == "2026-W47"
    assert iso_week(datetime(2027, 1, 1, 12, tzinfo=UTC), "UTC") == "2026-W53"


def test_statuses_map_between_yookassa_and_the_seed_spelling() -> None:
    assert our_status("canceled") == "cancelled"
    assert yookassa_status("cancelled") == "canceled"
    assert our_status("waiting_for_capture") == "pending"
    with pytest.raises(ValueError, match="unknown"):
        our_status("refunded")


def test_amounts_round_trip_between_kopecks_and_yookassa_strings() -> None:
    assert amount_value(12345) == "123.45"
    assert amount_value(5) == "0.05"
    assert to_kopecks("123.45") == 12345
    assert to_kopecks("100") == 10000
    for bad in ("1.005", "-1.00", "abc"):
        with pytest.raises(ValueError, match=r"kopecks|amount"):
            to_kopecks(bad)


def test_payments_settle_pending_to_final_at_most_once() -> None:
    assert settle("pending", "succeeded") is Settlement.credit
    assert settle("pending", "canceled") is Settlement.cancel
    assert settle("pending", "pending") is Settlement.wait
    assert settle("succeeded", "succeeded") is Settlement.done
    assert settle("succeeded", "canceled") is Settlement.conflict  # never taken back silently
    # Expired by us, paid by the buyer after all: the money was taken, so the credits are due.
    assert settle("cancelled", "succeeded") is Settlement.credit
    assert settle("cancelled", "pending") is Settlement.conflict
    assert settle("cancelled", "canceled") is Settlement.done


def test_one_spelling_per_payment_method() -> None:
    assert payment_method("bank_card") == payment_method(None) == "card"
    assert payment_method("sbp") == "sbp"


def test_the_api_version_must_match_our_row() -> None:
    local = LocalPayment(7, 3, 10000, "RUB", "pending", "yk", 100, 1)
    remote = RemotePayment("yk", "succeeded", 10000, "RUB", {"payment_id": "7", "user_id": "3"})
    assert payment_mismatches(local, remote) == []
    forged = RemotePayment("yk", "succeeded", 100, "USD", {"payment_id": "8"})
    assert len(payment_mismatches(local, forged)) == 4


def test_shortfall_is_never_negative() -> None:
    assert shortfall(balance=5, price=13) == 8
    assert shortfall(balance=50, price=13) == 0


@pytest.mark.parametrize(
    "parts",
    [[10000], [2500, 3333, 4167], [1, 9999], [3333, 3333, 3334], [9999, 1], [1] * 7 + [9993]],
)
def test_refunds_in_parts_round_down_each_and_add_up_to_every_credit(parts: list[int]) -> None:
    taken = []
    for number, kopecks in enumerate(parts):
        taken.append(refund_credits(100, 10000, kopecks, sum(parts[:number])))
        assert taken[-1] <= 100 * kopecks // 10000 + 1
    assert sum(taken) == 100
    assert refund_credits(100, 10000, 3333) == 33


def test_packages_are_validated_and_sorted_cheapest_first() -> None:
    settings = BillingSettings(
        topup_packages='[{"package_id": "b", "amount_kopecks": 900, "credits": 9},'
        ' {"package_id": "a", "amount_kopecks": 100, "credits": 1}]'
    )
    assert [p.package_id for p in settings.packages] == ["a", "b"]
    with pytest.raises(ValueError, match="credits"):
        BillingSettings(topup_packages='[{"package_id": "x", "amount_kopecks": 100, "credits": 0}]')


def test_a_placeholder_secret_is_refused_outside_development() -> None:
    assert YooKassaSettings(environment="development").secret_key.get_secret_value()
    with pytest.raises(ValueError, match="placeholder"):
        YooKassaSettings(environment="production")
    live = YooKassaSettings(
        environment="production",
        secret_key="live_abc",  # type: ignore[arg-type]
        bot_username="imagebot",
    )
    assert live.payment_return_url == "https://t.me/imagebot"
    with pytest.raises(ValueError, match="test shop"):
        YooKassaSettings(
            environment="production",
            secret_key="test_abc",  # type: ignore[arg-type]
            bot_username="imagebot",
        )
    with pytest.raises(ValueError, match="BOT_USERNAME"):
        YooKassaSettings(environment="production", secret_key="live_abc")  # type: ignore[arg-type]
    sandbox = YooKassaSettings(secret_key="test_abc", return_url="https://example.org/")  # type: ignore[arg-type]
    assert sandbox.payment_return_url == "https://example.org/"


def test_the_payment_description_is_in_the_buyers_language() -> None:
    settings = BillingSettings()
    assert settings.description("en", 100) == "Balance top-up: 100 credits"
    assert settings.description("ru", 100) == "Пополнение баланса: 100 кредитов"
    assert settings.description("uk", 100) == settings.description("ru", 100)


@pytest.mark.parametrize("reason", ["", "duplicate charge", "ticket: 7", "a: b: c:", " spaced "])
def test_a_refunds_description_gives_back_the_operators_reason_word_for_word(reason: str) -> None:
    """A refund asked again by the reconciliation is sent with the same description."""
    assert refund_reason(41, refund_description(41, reason)) == reason
    assert refund_reason(41, None) == ""
    assert refund_reason(41, "refund 2f00 of payment 41") == ""  # a dashboard refund's
