"""Exact balances in the contract: a balance is a decimal string in JSON, its v1 copy is in
whole credits (a balance rounded down, a shortfall up), and the gateway writes a fraction in
the user's language."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from aiogram.utils.i18n import I18n
from pydantic import ValidationError

import bot_gateway
from bot_gateway import texts
from contracts.envelope import new_envelope, open_envelope
from contracts.events import (
    CATALOG,
    BalanceDebited,
    BalanceDebitedV1,
    CreditsAdjustmentRefused,
    CreditsAdjustmentRefusedV1,
    DebitRejected,
    DebitRejectedV1,
    DebitRejectReason,
    credits_text,
)
from contracts.schemas import event_schema

LOCALES = Path(bot_gateway.__file__).parent / "locales"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("12.500000"), "12.5"),
        (Decimal("100.000000"), "100"),
        (Decimal("0.000001"), "0.000001"),
        (Decimal("0E-6"), "0"),
        (Decimal(60), "60"),
        (Decimal("1E+3"), "1000"),  # never an exponent
    ],
)
def test_credits_are_written_without_exponent_or_trailing_zeros(value: Decimal, text: str) -> None:
    assert credits_text(value) == text


def test_an_exact_balance_travels_as_a_decimal_string_and_comes_back_exact() -> None:
    event = BalanceDebited(job_id=7, user_id=3, amount=10, balance=Decimal("2.500000"))
    envelope = new_envelope(event, source="billing")
    assert envelope.data["balance"] == "2.5"
    wire = json.loads(envelope.model_dump_json())
    assert wire["data"] == {"job_id": 7, "user_id": 3, "amount": 10, "balance": "2.5"}
    opened = open_envelope(type(envelope).model_validate(wire), CATALOG)
    assert opened == event
    assert isinstance(opened, BalanceDebited)
    assert opened.balance == Decimal("2.5")


@pytest.mark.parametrize("balance", ["-1", "0.0000001", "1000000000000.5", "abc"])
def test_a_balance_the_contract_cannot_hold_is_refused(balance: str) -> None:
    with pytest.raises(ValidationError):
        BalanceDebited(job_id=7, user_id=3, amount=10, balance=balance)


def test_the_schema_says_a_decimal_string() -> None:
    balance = event_schema(BalanceDebited)["$defs"]["BalanceDebited"]["properties"]["balance"]
    assert (balance["type"], balance["pattern"]) == ("string", r"^[0-9]{1,13}(\.[0-9]{1,6})?$")
    older = event_schema(BalanceDebitedV1)["$defs"]["BalanceDebitedV1"]["properties"]["balance"]
    assert older["type"] == "integer"


def test_the_v1_copy_rounds_the_balance_down_and_the_shortfall_up() -> None:
    rejected = DebitRejected(
        job_id=7,
        user_id=3,
        reason=DebitRejectReason.insufficient_funds,
        price=3,
        balance=Decimal("2.5"),
        shortfall=Decimal("0.5"),
    )
    older = rejected.v1()
    assert isinstance(older, DebitRejectedV1)
    assert (older.price, older.balance, older.shortfall) == (3, 2, 1)  # v1: 2 of 3, 1 short
    assert (BalanceDebitedV1.event_version, BalanceDebited.event_version) == (1, 2)
    assert CATALOG[("balance.debited", 1)] is BalanceDebitedV1
    assert CATALOG[("balance.debited", 2)] is BalanceDebited


def test_a_missing_balance_stays_missing_in_v1() -> None:
    refused = CreditsAdjustmentRefused(
        request_id="5f0c2b8e-53a1-4d55-9d1e-0c7e2a1b7a11",
        operator="anna",
        telegram_id=42,
        credits=-5,
        reason="unknown_account",
    )
    older = refused.v1()
    assert isinstance(older, CreditsAdjustmentRefusedV1)
    assert older.balance is None


@pytest.mark.parametrize(("locale", "fraction"), [("ru", "12,5"), ("en", "12.5")])
def test_the_gateway_writes_a_fractional_balance_in_the_users_language(
    locale: str, fraction: str
) -> None:
    i18n = I18n(path=LOCALES, default_locale="ru", domain="messages")
    with i18n.context(), i18n.use_locale(locale):
        assert texts.credits_amount(Decimal("12.500000")) == fraction
        assert texts.credits_amount(Decimal("60.000000")) == "60"
        assert texts.credits_amount(1000) == "1000"  # no grouping, as whole balances always were
        assert f" {fraction} " in texts.balance_line(Decimal("12.500000"))
        assert "12.500000" not in texts.refunded(10, Decimal("12.500000"))
