"""The buyer's contact for 54-FZ receipts: asked once in the chat while billing sends receipts
(`billing.receipt_policy`), checked, remembered in `gateway_receipt_contacts`, changeable
(/receipt, or the button on the top-up screen), and sent on every TopUpRequested.

A contact is kept as the receipt takes it: an email as typed (trimmed), or a phone as its
digits with the country code first (`79001234567`; a Russian `8 900 ...` or `900 ...` gets its
7). `parse` is the one rule; the contract (TopUpRequested's `email`/`phone`) agrees with it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.sql.dml import Delete

from bot_gateway.models import ReceiptContact
from messaging.unit_of_work import UnitOfWork

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PHONE = re.compile(r"^[1-9][0-9]{10,14}$")
EMAIL_MAX_LENGTH = 254
_PHONE_PUNCTUATION = re.compile(r"[\s()+.-]")


def parse(text: str) -> str | None:
    """An email or a phone number as a receipt takes it, or None when `text` is neither."""
    raw = text.strip()
    if "@" in raw:
        return raw if len(raw) <= EMAIL_MAX_LENGTH and EMAIL.match(raw) else None
    digits = _PHONE_PUNCTUATION.sub("", raw)
    if len(digits) == 11 and digits.startswith("8"):  # the Russian trunk prefix
        digits = "7" + digits[1:]
    elif len(digits) == 10 and digits.startswith("9"):  # a Russian mobile without its code
        digits = "7" + digits
    return digits if PHONE.match(digits) else None


def split(contact: str | None) -> tuple[str | None, str | None]:
    """TopUpRequested's (`email`, `phone`) for a contact from `parse` (or none)."""
    if contact is None:
        return None, None
    return (contact, None) if "@" in contact else (None, contact)


def shown(contact: str) -> str:
    """A contact as the user reads it: the email, or the phone with its +."""
    return contact if "@" in contact else "+" + contact


class ReceiptContacts:
    def __init__(self, unit_of_work: Callable[[], UnitOfWork]) -> None:
        self._unit_of_work = unit_of_work

    async def of(self, telegram_id: int) -> str | None:
        async with self._unit_of_work() as uow:
            found = await uow.read(
                select(ReceiptContact.contact).where(ReceiptContact.telegram_id == telegram_id)
            )
            return found.scalar_one_or_none()  # type: ignore[no-any-return]

    async def remember(self, telegram_id: int, contact: str) -> None:
        """The user's contact from now on (replacing the one before)."""
        row = {"telegram_id": telegram_id, "contact": contact}
        statement = pg_insert(ReceiptContact).values(row)
        statement = statement.on_conflict_do_update(
            index_elements=[ReceiptContact.telegram_id],
            set_={"contact": statement.excluded.contact, "updated_at": func.now()},
        )
        async with self._unit_of_work() as uow:
            await uow.execute(statement)
            await uow.commit()


def erase(telegram_id: int) -> Delete:
    """The statement /deletemydata runs in its unit of work: the contact goes."""
    return delete(ReceiptContact).where(ReceiptContact.telegram_id == telegram_id)
