"""Helpers for the backend API's tests: the operators they sign in as, the running API."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import aiohttp
import pyotp
from playwright.async_api import Page, expect
from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from backend_api.accounts import OPERATORS
from backend_api.app import BackendApi
from backend_api.auth import FAILURES as SIGN_IN_FAILURES
from billing import payments
from billing.app import Billing
from billing.domain import creation_key
from billing.yookassa_gateway import PaymentDraft
from sandbox.yookassa import YooKassaSandbox
from support.backend_gateway import BotSide
from support.billing_harness import post_webhook

OPERATOR, PASSWORD = "alice", "correct horse battery staple"
"""An admin; SUPPORT and VIEWER have the same password and the roles they are named for."""
SUPPORT, VIEWER = "sam", "vic"
ROLES = {OPERATOR: "admin", SUPPORT: "support", VIEWER: "viewer"}
TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
"""The admin's second factor (tests only): `totp_code()` is their authenticator."""


@dataclass
class Running:
    backend: BackendApi
    url: str
    bot: BotSide | None = None
    """The gateway behind it, with the fake Telegram it sends to."""
    billing: Billing | None = None
    """The billing service behind it (its payments go to `yookassa`)."""
    yookassa: YooKassaSandbox | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    """Each operator's API session (made by `seat_operators`)."""

    def client(self, *, signed_in: bool = True, login: str = OPERATOR) -> aiohttp.ClientSession:
        """An HTTP client of the API: an operator's (their session's bearer token), or
        nobody's."""
        headers = {"Authorization": bearer(self.tokens[login])} if signed_in else {}
        return aiohttp.ClientSession(
            base_url=self.url, headers=headers, timeout=aiohttp.ClientTimeout(total=30)
        )


def bearer(token: str) -> str:
    """An Authorization header's value for a session token."""
    return f"Bearer {token}"


def totp_code(at: float | None = None) -> str:
    """The admin's one-time code now (or at `at`)."""
    return pyotp.TOTP(TOTP_SECRET).at(time.time() if at is None else at)


async def seat_operators(backend: BackendApi, password_hash: str) -> dict[str, str]:
    """The operators of `ROLES` as new (role, password `PASSWORD`, the admin's `TOTP_SECRET`
    with no code used yet, enabled, no failed sign-ins counted), each with a fresh API
    session: their tokens."""
    async with backend.runtime.sessions.begin() as session:
        await session.execute(delete(SIGN_IN_FAILURES))
        for login, role in ROLES.items():
            account = {
                "password_hash": password_hash,
                "role": role,
                "totp_secret": TOTP_SECRET if role == "admin" else None,
                "totp_last_step": None,
                "disabled_at": None,
            }
            await session.execute(
                insert(OPERATORS)
                .values(login=login, **account)
                .on_conflict_do_update(index_elements=[OPERATORS.c.login], set_=account)
            )
    tokens = {}
    for login in ROLES:
        signed_in = await backend.operators.open_session(
            login, kind="api", address="127.0.0.1", user_agent="test harness"
        )
        tokens[login] = signed_in.token
    return tokens


async def sign_in(
    page: Page,
    running: Running,
    login: str = OPERATOR,
    *,
    path: str = "/panel/users",
    password: str = PASSWORD,
    code: str | None = None,
    refused: bool = False,
) -> None:
    """Ask the panel for `path` and sign in on the login page it sends to: an admin (`OPERATOR`)
    with their current one-time code unless `code` says otherwise (a code is good once: one admin
    sign-in per 30 s step). It lands back on `path`, unless the sign-in is to be `refused`."""
    await page.goto(f"{running.url}{path}")
    await expect(page).to_have_url(f"{running.url}/panel/login")
    await page.fill("#username", login)
    await page.fill("#password", password)
    if code is not None or login == OPERATOR:
        await page.fill("#code", code if code is not None else totp_code())
    await page.click("button[type=submit]")
    if not refused:
        await expect(page).to_have_url(f"{running.url}{path}")


async def topup(
    running: Running, engine: AsyncEngine, user_id: int, *, kopecks: int = 10_000, paid: bool = True
) -> tuple[int, str]:
    """A top-up of `kopecks` for 100 credits per 100 rubles, as billing opens it; paid and
    credited through YooKassa's notification unless `paid` is False: (our id, YooKassa's)."""
    assert running.billing is not None
    assert running.yookassa is not None
    request_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            payments.open_topup(
                request_id=request_id,
                user_id=user_id,
                amount_kopecks=kopecks,
                credits=kopecks // 100,
                currency="RUB",
                description="test",
            )
        )
        local = payments.local((await connection.execute(payments.by_request(request_id))).one())
    remote = await running.billing.topups._provider.create(
        PaymentDraft(
            kopecks,
            "RUB",
            "test",
            {"payment_id": str(local.id), "user_id": str(user_id)},
            "https://t.me/",
        ),
        creation_key(request_id),
    )
    async with engine.begin() as connection:
        attach = payments.attach_yookassa(local.id, remote.id, remote.confirmation_url or "")
        assert (await connection.execute(attach)).first() is not None
    if paid:
        running.yookassa.set_status(remote.id, "succeeded")
        answer = await post_webhook(running.billing, running.yookassa.notification(remote.id))
        assert answer == (200, "credit")
    return local.id, remote.id
