"""One router per feature; `feature_routers` gives them in the order they must match."""

from __future__ import annotations

from aiogram import Router

from bot_gateway.routers.admin import router as admin_router
from bot_gateway.routers.catalog import router as catalog_router
from bot_gateway.routers.drafts import router as drafts_router
from bot_gateway.routers.erasure import router as erasure_router
from bot_gateway.routers.fallback import router as fallback_router
from bot_gateway.routers.groups import router as groups_router
from bot_gateway.routers.jobs import router as jobs_router
from bot_gateway.routers.membership import router as membership_router
from bot_gateway.routers.menu import router as menu_router
from bot_gateway.routers.payments import router as payments_router
from bot_gateway.routers.policies import router as policies_router
from bot_gateway.routers.results import router as results_router


def feature_routers(admins: frozenset[int]) -> list[Router]:
    return [
        groups_router(),  # first: nothing else ever answers in a group
        admin_router(admins),
        membership_router(),
        menu_router(),
        catalog_router(),
        payments_router(),
        policies_router(),
        erasure_router(),
        jobs_router(),
        results_router(),  # before drafts: theirs takes the other result buttons
        drafts_router(),
        fallback_router(),
    ]
