"""Who is calling: the panel's signed session, or HTTP Basic credentials on the API.

Operators and their password hashes come from the settings (`BACKEND_API_OPERATORS`); a hash is
checked off the event loop (scrypt takes tens of milliseconds by design).
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections import deque

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
        self._throttle = LoginThrottle(settings.login_attempts, settings.login_window_s)

    def role(self, name: str) -> Role | None:
        """The operator's role now (a changed setting applies to open sessions); None for a
        name that is no operator (any more)."""
        if name not in self._hashes:
            return None
        return self._roles.get(name, Role.viewer)

    async def verify(self, name: str, password: str, address: str) -> bool:
        """Whether `password` is `name`'s; `TooManyAttemptsError` (no check made) while the name or
        the client's address has failed too often lately."""
        self._throttle.check(name, address)
        valid = await self._check(name, password)
        if valid:
            self._throttle.forget(name)
        else:
            self._throttle.failed(name, address)
        return valid

    async def _check(self, name: str, password: str) -> bool:
        stored = self._hashes.get(name)
        if stored is None:
            # as slow as a real check, so a login's time does not tell which names exist
            await asyncio.to_thread(verify_password, password, _DUMMY)
            return False
        return await asyncio.to_thread(verify_password, password, stored)


class TooManyAttemptsError(Exception):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"too many failed sign-ins; retry after {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


class LoginThrottle:
    """At most `attempts` failed sign-ins per login and per client address within `window_s`;
    past that, sign-ins there are refused unchecked until the oldest failure leaves the window.
    In memory: per replica, forgotten on restart."""

    MAX_KEYS = 100_000

    def __init__(self, attempts: int, window_s: float) -> None:
        self._attempts = attempts
        self._window_s = window_s
        self._failures: dict[str, deque[float]] = {}

    def check(self, name: str, address: str) -> None:
        now = time.monotonic()
        for key in (f"login:{name}", f"address:{address}"):
            failures = self._recent(key, now)
            if len(failures) >= self._attempts:
                raise TooManyAttemptsError(failures[0] + self._window_s - now)

    def failed(self, name: str, address: str) -> None:
        now = time.monotonic()
        if len(self._failures) >= self.MAX_KEYS:
            self._failures = {
                key: times for key, times in self._failures.items() if self._recent(key, now)
            }
        for key in (f"login:{name}", f"address:{address}"):
            self._failures.setdefault(key, deque(maxlen=self._attempts)).append(now)

    def forget(self, name: str) -> None:
        self._failures.pop(f"login:{name}", None)

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.get(key, deque())
        while failures and failures[0] <= now - self._window_s:
            failures.popleft()
        return failures


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
    elif credentials is not None:
        try:
            if await operators.verify(
                credentials.username, credentials.password, client_address(request)
            ):
                name = credentials.username
        except TooManyAttemptsError as exc:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                detail="too many failed sign-ins",
                headers={"Retry-After": str(math.ceil(exc.retry_after_s))},
            ) from exc
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
