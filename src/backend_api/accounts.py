"""Operator accounts, the backend API's own table, changed by `imagebot admin` (cli.py).

Every sign-in and every request reads them (auth.py), so a role changed or an account disabled
applies at once; disabling, a new password or a new second factor also end the operator's
sessions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from backend_api import totp
from backend_api.models import OperatorAccount, OperatorSession
from backend_api.settings import Role

OPERATORS = cast("Table", OperatorAccount.__table__)
SESSIONS = cast("Table", OperatorSession.__table__)
LOGIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")
MIN_PASSWORD = 12


class AccountError(Exception):
    """The account cannot be changed so (no such login, taken, a weak password)."""


@dataclass(frozen=True)
class Account:
    login: str
    role: Role
    second_factor: bool
    disabled_at: datetime | None
    created_at: datetime


def check_login(login: str) -> str:
    if not LOGIN.match(login):
        raise AccountError(
            "a login is 1-100 letters, digits or _.@- (starting with one of the first two)"
        )
    return login


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"a password has at least {MIN_PASSWORD} characters")
    return password


async def create(
    connection: AsyncConnection, login: str, password_hash: str, role: Role
) -> str | None:
    """A new operator; an admin's TOTP secret (to show them once), None for other roles."""
    secret = totp.new_secret() if role is Role.admin else None
    inserted = await connection.execute(
        insert(OPERATORS)
        .values(
            login=check_login(login),
            password_hash=password_hash,
            role=role.name,
            totp_secret=secret,
        )
        .on_conflict_do_nothing(index_elements=[OPERATORS.c.login])
        .returning(OPERATORS.c.login)
    )
    if inserted.first() is None:
        raise AccountError(f"{login} exists already")
    return secret


async def set_role(connection: AsyncConnection, login: str, role: Role) -> str | None:
    """The operator's new role, from their next request on; a new TOTP secret when they become
    an admin without one (None otherwise)."""
    current = await _secret(connection, login)
    secret = totp.new_secret() if role is Role.admin and current is None else None
    values: dict[str, object] = {"role": role.name}
    if secret is not None:
        values |= {"totp_secret": secret, "totp_last_step": None}
        await _end_sessions(connection, login)  # they sign in again, with the second factor
    await connection.execute(update(OPERATORS).where(OPERATORS.c.login == login).values(values))
    return secret


async def disable(connection: AsyncConnection, login: str) -> None:
    await _secret(connection, login)
    await connection.execute(
        update(OPERATORS)
        .where(OPERATORS.c.login == login, OPERATORS.c.disabled_at.is_(None))
        .values(disabled_at=func.now())
    )
    await _end_sessions(connection, login)


async def enable(connection: AsyncConnection, login: str) -> None:
    await _secret(connection, login)
    await connection.execute(
        update(OPERATORS).where(OPERATORS.c.login == login).values(disabled_at=None)
    )


async def reset_password(connection: AsyncConnection, login: str, password_hash: str) -> None:
    await _secret(connection, login)
    await connection.execute(
        update(OPERATORS).where(OPERATORS.c.login == login).values(password_hash=password_hash)
    )
    await _end_sessions(connection, login)


async def reset_second_factor(connection: AsyncConnection, login: str) -> str:
    """A new TOTP secret (the old one stops working; so do the operator's sessions)."""
    await _secret(connection, login)
    secret = totp.new_secret()
    await connection.execute(
        update(OPERATORS)
        .where(OPERATORS.c.login == login)
        .values(totp_secret=secret, totp_last_step=None)
    )
    await _end_sessions(connection, login)
    return secret


async def listing(connection: AsyncConnection) -> list[Account]:
    rows = await connection.execute(select(OPERATORS).order_by(OPERATORS.c.login))
    return [
        Account(
            login=row.login,
            role=Role[row.role],
            second_factor=row.totp_secret is not None,
            disabled_at=row.disabled_at,
            created_at=row.created_at,
        )
        for row in rows
    ]


async def _secret(connection: AsyncConnection, login: str) -> str | None:
    """The operator's TOTP secret (locking their row); `AccountError` for no such login."""
    row = (
        await connection.execute(
            select(OPERATORS.c.totp_secret).where(OPERATORS.c.login == login).with_for_update()
        )
    ).first()
    if row is None:
        raise AccountError(f"no operator {login}")
    return cast("str | None", row.totp_secret)


async def _end_sessions(connection: AsyncConnection, login: str) -> None:
    await connection.execute(
        update(SESSIONS)
        .where(SESSIONS.c.operator == login, SESSIONS.c.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )
