"""A user's erasure (/deletemydata): their account keeps its balance, payments and ledger (the
law on accounting keeps payment records for five years), loses the Telegram username."""

from __future__ import annotations

from sqlalchemy import update

from billing.models import User
from contracts.events import UserDataErasureRequested
from messaging.runtime import ServiceRuntime
from messaging.unit_of_work import UnitOfWork


async def erase(event: UserDataErasureRequested, uow: UnitOfWork) -> None:
    """Idempotent: erasing twice erases nothing more."""
    await uow.execute(
        update(User).where(User.telegram_id == event.telegram_id).values(username=None)
    )
    await uow.commit()


def register(runtime: ServiceRuntime) -> None:
    runtime.consumer.on(UserDataErasureRequested)(erase)
