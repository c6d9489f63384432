"""A user's erasure (/deletemydata): their jobs keep their price, stage and times (the
accounting of what was charged and refunded), lose their prompts and image and result keys."""

from __future__ import annotations

from sqlalchemy import or_, update

from contracts.events import UserDataErasureRequested
from jobs.models import Job
from messaging.runtime import ServiceRuntime
from messaging.unit_of_work import UnitOfWork


async def erase(event: UserDataErasureRequested, uow: UnitOfWork) -> None:
    """Idempotent: erasing twice erases nothing more."""
    owned = Job.telegram_id == event.telegram_id
    if event.user_id is not None:
        owned = or_(owned, Job.user_id == event.user_id)
    await uow.execute(
        update(Job)
        .where(owned)
        .values(prompt=None, image_path=None, extra_image_paths=None, result_path=None)
    )
    await uow.commit()


def register(runtime: ServiceRuntime) -> None:
    runtime.consumer.on(UserDataErasureRequested)(erase)
