"""Settings of the backend API: sign-ins, sessions, approvals and how long a write waits.

Operators themselves live in its database (`imagebot admin create-user`)."""

from __future__ import annotations

from enum import IntEnum
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Role(IntEnum):
    """What an operator may do; each role may do everything the ones below it may."""

    viewer = 1
    """reads only"""
    support = 2
    """and writes that serve a user: credit adjustments"""
    admin = 3
    """and the audit log"""


class BackendApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BACKEND_API_", env_file=".env", extra="ignore")

    session_secret: SecretStr = SecretStr("")
    """Signs the panel's session cookies; every replica needs the same one. Empty: a random one
    per process (sessions end with it)."""
    login_attempts: int = Field(default=5, ge=1)
    login_window_s: float = Field(default=300.0, gt=0)
    """At most login_attempts failed sign-ins per login and per client address within
    login_window_s, counted in the database across replicas; then sign-ins there wait (429,
    Retry-After)."""
    session_max_age_s: int = Field(default=8 * 3600, gt=0)
    """A session (the panel's cookie, an API token) ends this long after its sign-in."""
    secure_cookies: bool = False
    """Send the session cookie over HTTPS only (set it behind TLS)."""
    command_wait_s: float = Field(default=5.0, ge=0)
    """How long a write waits for its owner's answer before it reports `pending` (202)."""
    approval_above: str = "credits=1000,RUB=1000000,XTR=1000"
    """`UNIT=amount,...`: a write that moves more than this (per unit: `credits`, or a currency
    in its minor units: RUB in kopecks, XTR in Stars; either sign) waits for a second operator's
    approval before it is sent. A unit not named here never waits; empty: nothing does."""
    totp_issuer: str = "imagebot"
    """The issuer authenticator apps show beside an admin's one-time codes."""
    default_language: Literal["ru", "en"] = "ru"

    @field_validator("approval_above")
    @classmethod
    def _readable_limits(cls, value: str) -> str:
        cls.limits_of(value)
        return value

    @staticmethod
    def limits_of(value: str) -> dict[str, int]:
        pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
        try:
            limits = {unit.strip(): int(amount) for unit, amount in pairs}
        except ValueError as exc:
            raise ValueError("approval limits are UNIT=whole amount,... (credits=1000)") from exc
        if any(limit < 0 for limit in limits.values()):
            raise ValueError("an approval limit is zero or more")
        return limits

    @property
    def approval_limits(self) -> dict[str, int]:
        """`approval_above` read: {unit: the largest amount sent without approval}."""
        return self.limits_of(self.approval_above)
