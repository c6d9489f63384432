"""Who is calling: a server-side session, named by the panel's cookie or an API bearer token.

An operator signs in once (login, password and, for admins, a one-time code) and gets a
session: a random token of which only the SHA-256 is kept (`backend_sessions`). Every request
looks its token up, joined to the operator's account, so a revoked session, a disabled account
or a changed role applies at the next request. Passwords are checked off the event loop
(scrypt takes tens of milliseconds by design); failed sign-ins are throttled per login and per
address, counted in the database so that every replica sees them.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from fastapi import Request
from fastapi.security import HTTPBearer
from sqlalchemy import Select, Table, func, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from backend_api import totp
from backend_api.accounts import OPERATORS, SESSIONS
from backend_api.models import SignInFailure
from backend_api.passwords import verify_password
from backend_api.settings import BackendApiSettings, Role

SESSION_OPERATOR = "operator"
"""The signed-in login, in the panel's cookie (for display; the token is what counts)."""
SESSION_TOKEN = "token"
SESSION_CSRF = "csrf"
SEEN_EVERY = timedelta(minutes=1)
FAILURES = cast("Table", SignInFailure.__table__)
"""How stale a session's last_seen_at may grow before a request writes it."""

bearer = HTTPBearer(auto_error=False, description="A session token from `POST /api/v1/sessions`")


@dataclass(frozen=True)
class Principal:
    """The signed-in operator of a request, as their account and session say now."""

    login: str
    role: Role
    session_id: uuid.UUID


@dataclass(frozen=True)
class SignedIn:
    token: str
    session_id: uuid.UUID
    login: str
    role: Role
    expires_at: datetime


@dataclass(frozen=True)
class SessionRecord:
    id: uuid.UUID
    operator: str
    kind: str
    address: str
    user_agent: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


class SignInRefusedError(Exception):
    """Wrong login, password or one-time code (or a code used before); which is not said."""


class TooManyAttemptsError(Exception):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"too many failed sign-ins; retry after {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


class Operators:
    """Sign-ins and sessions over the operators' accounts (`accounts.py`)."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], settings: BackendApiSettings
    ) -> None:
        self._sessions = sessions
        self._max_age = timedelta(seconds=settings.session_max_age_s)
        self._throttle = LoginThrottle(sessions, settings.login_attempts, settings.login_window_s)

    async def sign_in(
        self,
        login: str,
        password: str,
        code: str | None,
        *,
        address: str,
        user_agent: str,
        kind: str,
    ) -> SignedIn:
        """A new session for `login`; `SignInRefusedError` if a credential is wrong,
        `TooManyAttemptsError` (nothing checked) while the login or the address has failed too
        often lately."""
        login = login.replace("\x00", "\ufffd")  # PostgreSQL's text holds no NUL: a wrong login
        await self._throttle.check(login, address)
        if not await self._check(login, password, code):
            await self._throttle.failed(login, address)
            raise SignInRefusedError(login)
        await self._throttle.forget(login)
        return await self.open_session(login, kind=kind, address=address, user_agent=user_agent)

    async def open_session(
        self, login: str, *, kind: str, address: str, user_agent: str
    ) -> SignedIn:
        """A session for `login`, unchecked: after `sign_in`'s checks (and for tests)."""
        token = secrets.token_urlsafe(32)
        session_id = uuid.uuid4()
        expires_at = datetime.now(UTC) + self._max_age
        async with self._sessions.begin() as session:
            role = await session.scalar(select(OPERATORS.c.role).where(OPERATORS.c.login == login))
            if role is None:
                raise SignInRefusedError(login)
            await session.execute(
                SESSIONS.insert().values(
                    id=session_id,
                    token_hash=_digest(token),
                    operator=login,
                    kind=kind,
                    address=address[:100],
                    user_agent=user_agent[:300],
                    expires_at=expires_at,
                )
            )
        return SignedIn(token, session_id, login, Role[role], expires_at)

    async def _check(self, login: str, password: str, code: str | None) -> bool:
        async with self._sessions() as session:
            account = (
                await session.execute(
                    select(
                        OPERATORS.c.password_hash, OPERATORS.c.role, OPERATORS.c.totp_secret
                    ).where(OPERATORS.c.login == login, OPERATORS.c.disabled_at.is_(None))
                )
            ).first()
        if account is None:
            # as slow as a real check, so a sign-in's time does not tell which logins exist
            await asyncio.to_thread(verify_password, password, _DUMMY)
            return False
        if not await asyncio.to_thread(verify_password, password, account.password_hash):
            return False
        if account.totp_secret is None:
            return bool(account.role != Role.admin.name)  # an admin always needs a 2nd factor
        step = totp.matching_step(account.totp_secret, code or "", time.time())
        if step is None:
            return False
        async with self._sessions.begin() as session:
            # the code's step, once: a replayed code (or an older one) finds no row to update
            accepted = await session.execute(
                update(OPERATORS)
                .where(
                    OPERATORS.c.login == login,
                    (OPERATORS.c.totp_last_step.is_(None)) | (OPERATORS.c.totp_last_step < step),
                )
                .values(totp_last_step=step)
                .returning(OPERATORS.c.login)
            )
            return accepted.first() is not None

    async def principal(self, token: str) -> Principal | None:
        """The operator whose live session `token` names; None when it names none (unknown,
        expired, revoked, or its account disabled)."""
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(
                        SESSIONS.c.id, SESSIONS.c.last_seen_at, OPERATORS.c.login, OPERATORS.c.role
                    )
                    .join(OPERATORS, OPERATORS.c.login == SESSIONS.c.operator)
                    .where(
                        SESSIONS.c.token_hash == _digest(token),
                        SESSIONS.c.revoked_at.is_(None),
                        SESSIONS.c.expires_at > func.now(),
                        OPERATORS.c.disabled_at.is_(None),
                    )
                )
            ).first()
            if row is None:
                return None
            if row.last_seen_at < datetime.now(UTC) - SEEN_EVERY:
                await session.execute(
                    update(SESSIONS).where(SESSIONS.c.id == row.id).values(last_seen_at=func.now())
                )
                await session.commit()
        return Principal(row.login, Role[row.role], row.id)

    async def sessions(
        self, *, operator: str | None, offset: int, limit: int
    ) -> tuple[list[SessionRecord], int]:
        """Live sessions, newest first: `operator`'s, or everyone's."""
        query: Select[Any] = select(
            *(SESSIONS.c[name] for name in SessionRecord.__dataclass_fields__)
        ).where(SESSIONS.c.revoked_at.is_(None), SESSIONS.c.expires_at > func.now())
        if operator is not None:
            query = query.where(SESSIONS.c.operator == operator)
        async with self._sessions() as session:
            total = await session.scalar(select(func.count()).select_from(query.subquery()))
            rows = await session.execute(
                query.order_by(SESSIONS.c.created_at.desc()).offset(offset).limit(limit)
            )
        return [SessionRecord(**row._mapping) for row in rows], int(total or 0)

    async def revoke(self, session_id: uuid.UUID, by: Principal) -> bool:
        """End a live session: one's own, or anyone's for an admin; False when there is no such
        live session `by` may end."""
        mine = SESSIONS.c.operator == by.login
        async with self._sessions.begin() as session:
            ended = await session.execute(
                update(SESSIONS)
                .where(
                    SESSIONS.c.id == session_id,
                    SESSIONS.c.revoked_at.is_(None),
                    mine if by.role < Role.admin else true(),
                )
                .values(revoked_at=func.now())
                .returning(SESSIONS.c.id)
            )
            return ended.first() is not None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class LoginThrottle:
    """At most `attempts` failed sign-ins per login and per client address within `window_s`;
    past that, sign-ins there are refused unchecked until the oldest of those failures leaves
    the window. Counted in the database (`backend_sign_in_failures`, by its clock), so every
    replica sees the same count and a restart forgets nothing."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], attempts: int, window_s: float
    ) -> None:
        self._sessions = sessions
        self._attempts = attempts
        self._window = timedelta(seconds=window_s)

    async def check(self, name: str, address: str) -> None:
        async with self._sessions() as session:
            for key in _keys(name, address):
                # The newest `attempts` failures in the window: a full set means wait until the
                # oldest of them leaves it.
                recent = (
                    select(FAILURES.c.failed_at)
                    .where(FAILURES.c.key == key, FAILURES.c.failed_at > func.now() - self._window)
                    .order_by(FAILURES.c.failed_at.desc())
                    .limit(self._attempts)
                    .subquery()
                )
                row = (
                    await session.execute(
                        select(
                            func.count(),
                            func.extract(
                                "epoch", func.min(recent.c.failed_at) + self._window - func.now()
                            ),
                        ).select_from(recent)
                    )
                ).one()
                if row[0] >= self._attempts:
                    raise TooManyAttemptsError(float(row[1]))

    async def failed(self, name: str, address: str) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                FAILURES.delete().where(FAILURES.c.failed_at <= func.now() - self._window)
            )
            await session.execute(FAILURES.insert(), [{"key": key} for key in _keys(name, address)])

    async def forget(self, name: str) -> None:
        async with self._sessions.begin() as session:
            await session.execute(FAILURES.delete().where(FAILURES.c.key == _keys(name, "")[0]))


def _keys(name: str, address: str) -> tuple[str, str]:
    return f"login:{name}", f"address:{address}"


_DUMMY = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


class PrincipalMiddleware:
    """Finds each request's operator (its bearer token, else the panel cookie's) once, before
    any route runs: `principal_of(request)` then tells it, to async guards and sync panel
    helpers alike. Inside Starlette's SessionMiddleware (which reads the cookie)."""

    def __init__(self, app: ASGIApp, operators: Operators) -> None:
        self._app = app
        self._operators = operators

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            principal = None
            token = _bearer_token(request) or request.session.get(SESSION_TOKEN)
            if isinstance(token, str) and token:
                principal = await self._operators.principal(token)
            if principal is None and SESSION_TOKEN in request.session:
                request.session.pop(SESSION_TOKEN, None)  # revoked or expired: signed out
                request.session.pop(SESSION_OPERATOR, None)
            request.state.principal = principal
        await self._app(scope, receive, send)


def _bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def principal_of(request: Request) -> Principal | None:
    """The request's signed-in operator (found by `PrincipalMiddleware`); None for nobody."""
    return cast("Principal | None", getattr(request.state, "principal", None))


def client_address(request: Request) -> str:
    """The peer's address (uvicorn's proxy headers are off: behind a proxy, the proxy's)."""
    return request.client.host if request.client else "unknown"


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use); every panel form carries it."""
    token = request.session.get(SESSION_CSRF)
    if not isinstance(token, str):
        token = request.session[SESSION_CSRF] = secrets.token_urlsafe(32)
    return token


def csrf_valid(request: Request, submitted: str | None) -> bool:
    token = request.session.get(SESSION_CSRF)
    return (
        isinstance(token, str)
        and submitted is not None
        and secrets.compare_digest(token, submitted)
    )
