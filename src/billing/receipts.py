"""54-FZ receipts for YooKassa: off by default (`YOOKASSA_RECEIPTS`).

A shop that registers receipts through YooKassa (its own receipts, or an online cash register
connected to it) must send one with every payment and refund, or the API refuses the call
(400 "Receipt is missing or illegal"). One item: the credits, at the whole amount, with the
shop's VAT code, payment subject and mode, and its tax system when the register needs it.
"""

from __future__ import annotations

from typing import Any

from billing.domain import amount_value
from billing.settings import YooKassaSettings


def customer(contact: str) -> dict[str, str]:
    """The buyer as a receipt names them: an email, or a phone (E.164 digits)."""
    return {"email": contact} if "@" in contact else {"phone": contact}


def receipt(
    settings: YooKassaSettings,
    contact: str | None,
    *,
    description: str,
    amount_kopecks: int,
    currency: str,
) -> dict[str, Any] | None:
    """The receipt to send, or None when the shop sends none; ValueError without a contact."""
    if not settings.receipts:
        return None
    if not contact:
        raise ValueError("a receipt needs the buyer's email or phone")
    document: dict[str, Any] = {
        "customer": customer(contact),
        "items": [
            {
                "description": description[:128],
                "quantity": "1.00",
                "amount": {"value": amount_value(amount_kopecks), "currency": currency},
                "vat_code": settings.vat_code,
                "payment_subject": settings.payment_subject,
                "payment_mode": settings.payment_mode,
            }
        ],
    }
    if settings.tax_system_code:
        document["tax_system_code"] = settings.tax_system_code
    return document
