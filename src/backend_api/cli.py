"""`imagebot admin ...`: the backend API's operator accounts.

A password is never an argument (shell history, `ps`): it is asked for twice at a terminal, or
read as the first line of stdin (`printf '%s\\n' "$PASSWORD" | imagebot admin create-user ...`).
An admin's TOTP secret is printed once, as an otpauth:// URI for an authenticator app.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncConnection

from backend_api import accounts, totp
from backend_api.passwords import hash_password
from backend_api.settings import BackendApiSettings, Role
from messaging.database import create_engine
from messaging.settings import DatabaseSettings

app = typer.Typer(help="Operators of the backend API and its panel.", no_args_is_help=True)
T = TypeVar("T")
RoleName = Annotated[str, typer.Option("--role", help="viewer, support or admin.")]


@app.command("create-user")
def create_user(login: str, role: RoleName = "viewer") -> None:
    """A new operator; admins get their second factor (shown once)."""
    password = _new_password()
    secret = _run(lambda c: accounts.create(c, login, hash_password(password), _role(role)))
    typer.echo(f"created {login} ({role})")
    _show_second_factor(login, secret)


@app.command("set-role")
def set_role(
    login: str, role: Annotated[str, typer.Argument(help="viewer, support or admin.")]
) -> None:
    """Change an operator's role; it applies to their open sessions at their next request."""
    secret = _run(lambda c: accounts.set_role(c, login, _role(role)))
    typer.echo(f"{login} is now {role}")
    _show_second_factor(login, secret)


@app.command()
def disable(login: str) -> None:
    """Stop an operator signing in; their sessions end at once."""
    _run(lambda c: accounts.disable(c, login))
    typer.echo(f"{login} disabled; their sessions ended")


@app.command()
def enable(login: str) -> None:
    """Let a disabled operator sign in again."""
    _run(lambda c: accounts.enable(c, login))
    typer.echo(f"{login} enabled")


@app.command("reset-password")
def reset_password(login: str) -> None:
    """Set a new password; the operator's sessions end."""
    password = _new_password()
    _run(lambda c: accounts.reset_password(c, login, hash_password(password)))
    typer.echo(f"{login}'s password changed; their sessions ended")


@app.command("reset-totp")
def reset_totp(login: str) -> None:
    """A new second factor (a lost phone); the old codes and the operator's sessions end."""
    secret = _run(lambda c: accounts.reset_second_factor(c, login))
    _show_second_factor(login, secret)


@app.command("list")
def list_users() -> None:
    """Every operator: login, role, second factor, disabled."""
    for account in _run(accounts.listing):
        flags = [account.role.name] + (["totp"] if account.second_factor else [])
        if account.disabled_at is not None:
            flags.append(f"disabled {account.disabled_at:%Y-%m-%d %H:%M}")
        typer.echo(f"{account.login}\t{', '.join(flags)}")


def _role(name: str) -> Role:
    try:
        return Role[name]
    except KeyError:
        raise typer.BadParameter("a role is viewer, support or admin") from None


def _new_password() -> str:
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if password != getpass.getpass("again: "):
            raise typer.BadParameter("the passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        return accounts.check_password(password)
    except accounts.AccountError as exc:
        raise typer.BadParameter(str(exc)) from None


def _show_second_factor(login: str, secret: str | None) -> None:
    if secret is None:
        return
    issuer = BackendApiSettings().totp_issuer
    typer.echo(
        "second factor (shown once: add it to an authenticator app now):\n"
        f"  {totp.uri(secret, login, issuer)}\n"
        f"  secret {secret} (TOTP, SHA-1, 6 digits, 30 s)"
    )


def _run(change: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    async def run() -> T:
        engine = create_engine(DatabaseSettings(), application_name="imagebot admin")
        try:
            async with engine.begin() as connection:
                return await change(connection)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except accounts.AccountError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
