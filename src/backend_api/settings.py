"""Settings of the backend API: its operators, sessions and how long a write waits."""

from __future__ import annotations

from enum import IntEnum
from typing import Literal

from pydantic import Field, SecretStr
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

    operators: dict[str, SecretStr] = Field(default_factory=dict)
    """Operator logins and their password hashes (JSON: {"alice": "scrypt$..."}); make a hash
    with `python -m backend_api.passwords`. None: nobody can sign in."""
    roles: dict[str, Literal["viewer", "support", "admin"]] = Field(default_factory=dict)
    """Each operator's role (JSON: {"alice": "admin"}); an operator not named here is a viewer."""
    session_secret: SecretStr = SecretStr("")
    """Signs the panel's session cookies; every replica needs the same one. Empty: a random one
    per process (sessions end with it)."""
    login_attempts: int = Field(default=5, ge=1)
    login_window_s: float = Field(default=300.0, gt=0)
    """At most login_attempts failed sign-ins per login and per client address within
    login_window_s (per replica); then sign-ins there wait (429, Retry-After)."""
    session_max_age_s: int = Field(default=8 * 3600, gt=0)
    secure_cookies: bool = False
    """Send the session cookie over HTTPS only (set it behind TLS)."""
    command_wait_s: float = Field(default=5.0, ge=0)
    """How long a write waits for its owner's answer before it reports `pending` (202)."""
    default_language: Literal["ru", "en"] = "ru"
