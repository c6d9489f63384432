"""Who is calling: the panel's signed session, or HTTP Basic credentials on the API.

Operators and their password hashes come from the settings (`BACKEND_API_OPERATORS`); a hash is
checked off the event loop (scrypt takes tens of milliseconds by design).
"""

from __future__ import annotations

import asyncio
import secrets

from fastapi import HTTPException, Request, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from backend_api.passwords import verify_password
from backend_api.settings import BackendApiSettings, Role

SESSION_OPERATOR = "operator"
SESSION_CSRF = "csrf"

basic = HTTPBasic(auto_error=False, description="An operator's login and password")


class Operators:
    def __init__(self, settings: BackendApiSettings) -> None:
        self._hashes = {
            name: secret.get_secret_value() for name, secret in settings.operators.items()
        }
        self._roles = {name: Role[role] for name, role in settings.roles.items()}

    def role(self, name: str) -> Role | None:
        """The operator's role now (a changed setting applies to open sessions); None for a
        name that is no operator (any more)."""
        if name not in self._hashes:
            return None
        return self._roles.get(name, Role.viewer)

    async def verify(self, name: str, password: str) -> bool:
        stored = self._hashes.get(name)
        if stored is None:
            # as slow as a real check, so a login's time does not tell which names exist
            await asyncio.to_thread(verify_password, password, _DUMMY)
            return False
        return await asyncio.to_thread(verify_password, password, stored)


_DUMMY = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


async def operator_of(
    request: Request,
    credentials: HTTPBasicCredentials | None,
    operators: Operators,
    needs: Role = Role.viewer,
) -> str:
    """The operator behind `request` if their role is at least `needs`: else 401 (nobody
    signed in) or 403."""
    name: str | None = None
    signed_in = request.session.get(SESSION_OPERATOR)
    if isinstance(signed_in, str) and operators.role(signed_in) is not None:
        name = signed_in
    elif credentials is not None and await operators.verify(
        credentials.username, credentials.password
    ):
        name = credentials.username
    if name is not None:
        role = operators.role(name)
        if role is None or role < needs:
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"needs the {needs.name} role")
        return name
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail="not signed in",
        headers={"WWW-Authenticate": 'Basic realm="imagebot"'},
    )


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
