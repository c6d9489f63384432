"""Operators' view of the preset catalog (every preset, disabled ones too) and their changes
to it, through the backend API: create, change, enable/disable, reorder. Each is applied once
(the inbox, one unit of work), under the catalog's lock like an import, and answered with
CatalogEditApplied or CatalogEditRefused; PresetsChanged goes out in the same commit when what
users see changed, so gateways refresh at once.

A new price applies to requests from now on: a request confirmed at the old price is refused
as `price_changed` with the new one (jobs.domain.take_order), so the user sees it before paying.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.events import (
    CatalogEditApplied,
    CatalogEditRefused,
    CatalogEditRefusedReason,
    PresetCreationRequested,
    PresetsChanged,
    PresetsReorderRequested,
    PresetUpdateRequested,
)
from contracts.rpc import ListAllPresets, PresetPage, PresetRecord
from jobs.catalog import catalog_view
from jobs.domain import credits
from jobs.models import Preset
from jobs.repository import CatalogRepository
from messaging.runtime import ServiceRuntime
from messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

AnyEdit = PresetCreationRequested | PresetUpdateRequested | PresetsReorderRequested
EDITABLE = ("category", "name", "prompt", "icon", "price", "order_index", "workflow_type")
ORDER_STEP = 10


class EditRefusedError(Exception):
    def __init__(self, reason: CatalogEditRefusedReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class CatalogEdits:
    def __init__(self, custom_prompt_price: int) -> None:
        self._custom_prompt_price = custom_prompt_price

    async def create(self, event: PresetCreationRequested, uow: UnitOfWork) -> None:
        async def change(repository: CatalogRepository) -> list[int]:
            await _refuse_duplicate(repository, event.category, event.name, None)
            preset = Preset(
                **{name: getattr(event, name) for name in EDITABLE}, enabled=event.enabled
            )
            repository.session.add(preset)
            await repository.session.flush()
            return [preset.id]

        await self._apply(event, uow, change)

    async def update(self, event: PresetUpdateRequested, uow: UnitOfWork) -> None:
        async def change(repository: CatalogRepository) -> list[int]:
            preset = await repository.session.get(Preset, event.preset_id, with_for_update=True)
            if preset is None:
                raise EditRefusedError(
                    CatalogEditRefusedReason.unknown_preset, f"no preset {event.preset_id}"
                )
            given = {name: getattr(event, name) for name in EDITABLE}
            changes = {name: value for name, value in given.items() if value is not None}
            if event.remove_icon:
                changes["icon"] = None
            if event.enabled is not None:
                changes["enabled"] = event.enabled
            await _refuse_duplicate(
                repository,
                changes.get("category", preset.category),
                changes.get("name", preset.name),
                preset.id,
            )
            for name, value in changes.items():
                setattr(preset, name, value)
            await repository.session.flush()
            return [preset.id]

        await self._apply(event, uow, change)

    async def reorder(self, event: PresetsReorderRequested, uow: UnitOfWork) -> None:
        async def change(repository: CatalogRepository) -> list[int]:
            wanted = list(dict.fromkeys(event.preset_ids))
            found = {
                preset.id: preset
                for preset in (
                    await repository.session.scalars(
                        select(Preset).where(Preset.id.in_(wanted)).with_for_update()
                    )
                ).all()
            }
            missing = [preset_id for preset_id in wanted if preset_id not in found]
            if missing:
                raise EditRefusedError(
                    CatalogEditRefusedReason.unknown_preset,
                    "no preset " + ", ".join(map(str, missing)),
                )
            for position, preset_id in enumerate(wanted, start=1):
                found[preset_id].order_index = position * ORDER_STEP
            await repository.session.flush()
            return wanted

        await self._apply(event, uow, change)

    async def _apply(
        self,
        event: AnyEdit,
        uow: UnitOfWork,
        change: Callable[[CatalogRepository], Awaitable[list[int]]],
    ) -> None:
        repository = CatalogRepository(await uow.orm())
        await repository.lock_catalog()
        before = catalog_view(await repository.all_presets(), self._custom_prompt_price).revision
        try:
            preset_ids = await change(repository)
        except EditRefusedError as refused:
            await uow.rollback()
            log.info(
                "operator %s: %s refused (%s)", event.operator, event.event_type, refused.detail
            )
            uow.emit(
                CatalogEditRefused(
                    request_id=event.request_id,
                    operator=event.operator,
                    reason=refused.reason,
                    detail=refused.detail,
                ),
                correlation_id=str(event.request_id),
            )
            await uow.commit()
            return
        after = catalog_view(await repository.all_presets(), self._custom_prompt_price).revision
        if after != before:
            uow.emit(PresetsChanged(revision=after), correlation_id=str(event.request_id))
        log.info(
            "operator %s: %s applied to presets %s: %s",
            event.operator,
            event.event_type,
            preset_ids,
            event.reason,
        )
        uow.emit(
            CatalogEditApplied(
                request_id=event.request_id,
                operator=event.operator,
                preset_ids=preset_ids,
                revision=after,
            ),
            correlation_id=str(event.request_id),
        )
        await uow.commit()


async def _refuse_duplicate(
    repository: CatalogRepository, category: str | None, name: str | None, own_id: int | None
) -> None:
    query = select(Preset.id).where(Preset.category == category, Preset.name == name)
    if own_id is not None:
        query = query.where(Preset.id != own_id)
    if (await repository.session.scalars(query.limit(1))).first() is not None:
        raise EditRefusedError(
            CatalogEditRefusedReason.duplicate_name,
            f"{category!r} has a preset named {name!r} already",
        )


class AllPresets:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def list(self, request: ListAllPresets) -> PresetPage:
        query = select(Preset)
        if request.preset_id is not None:
            query = query.where(Preset.id == request.preset_id)
        if request.category is not None:
            query = query.where(Preset.category == request.category)
        if request.enabled is not None:
            query = query.where(Preset.enabled.is_(request.enabled))
        async with self._sessions() as session:
            total = await session.scalar(select(func.count()).select_from(query.subquery()))
            presets = (
                await session.scalars(
                    query.order_by(Preset.category, Preset.order_index, Preset.id)
                    .offset(request.offset)
                    .limit(request.limit)
                )
            ).all()
        return PresetPage(presets=[_record(preset) for preset in presets], total=int(total or 0))


def _record(preset: Preset) -> PresetRecord:
    return PresetRecord(
        id=preset.id,
        category=preset.category or "",
        name=preset.name or "",
        prompt=preset.prompt or "",
        icon=preset.icon,
        price=credits(preset.price),
        order_index=preset.order_index or 0,
        workflow_type=preset.workflow_type or "",
        enabled=preset.enabled,
    )


def register(runtime: ServiceRuntime, custom_prompt_price: int) -> None:
    runtime.serve(ListAllPresets, AllPresets(runtime.sessions).list)
    edits = CatalogEdits(custom_prompt_price)
    runtime.consumer.on(PresetCreationRequested)(edits.create)
    runtime.consumer.on(PresetUpdateRequested)(edits.update)
    runtime.consumer.on(PresetsReorderRequested)(edits.reorder)
