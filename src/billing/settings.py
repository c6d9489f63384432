"""Billing settings, one class per concern: YooKassa, prices, bonus, webhook."""

from __future__ import annotations

import json
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.rpc import TopUpPackage

PLACEHOLDER_SECRET = "change-me"
YOOKASSA_PUBLISHED_RANGES = (
    "77.75.153.0/25,77.75.156.11/32,77.75.156.35/32,77.75.154.128/25,185.71.76.0/27,"
    "185.71.77.0/27,2a02:5180:0:1509::/64,2a02:5180:0:2655::/64,2a02:5180:0:1533::/64,"
    "2a02:5180:0:2669::/64"
)
"""The sender ranges YooKassa publishes (the same list as the SDK's `SecurityHelper`)."""

DEFAULT_PACKAGES = (
    '[{"package_id": "small", "amount_kopecks": 10000, "credits": 100},'
    ' {"package_id": "medium", "amount_kopecks": 50000, "credits": 550},'
    ' {"package_id": "large", "amount_kopecks": 100000, "credits": 1200}]'
)


class YooKassaSettings(BaseSettings):
    """The shop's YooKassa credentials and API; the secret is refused as a placeholder."""

    model_config = SettingsConfigDict(env_prefix="YOOKASSA_", env_file=".env", extra="ignore")

    shop_id: str = "000000"
    secret_key: SecretStr = SecretStr(PLACEHOLDER_SECRET)
    api_url: str = "https://api.yookassa.ru/v3"
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    """How long one API call may take before we give up on it (the SDK itself has no limit)."""
    return_url: str = "https://t.me/"
    environment: Literal["development", "production"] = "development"

    @model_validator(mode="after")
    def _no_placeholder_outside_development(self) -> YooKassaSettings:
        if (
            self.environment != "development"
            and self.secret_key.get_secret_value() == PLACEHOLDER_SECRET
        ):
            raise ValueError("YOOKASSA_SECRET_KEY is a placeholder; set the shop's secret key")
        return self


class _Packages(BaseModel):
    packages: list[TopUpPackage]


class BillingSettings(BaseSettings):
    """Prices and money rules: packages, the credit's price, welcome credits, reconciliation."""

    model_config = SettingsConfigDict(env_prefix="BILLING_", env_file=".env", extra="ignore")

    topup_packages: str = DEFAULT_PACKAGES
    """JSON list of {package_id, amount_kopecks, credits}."""
    kopecks_per_credit: int = Field(default=100, gt=0)
    """What one credit is worth, for `payments` rows of refunds and bonuses."""
    welcome_credits: int = Field(default=60, ge=0)
    currency: str = Field(default="RUB", pattern=r"^[A-Z]{3}$")
    reconcile_interval_s: float = Field(default=60.0, gt=0)
    reconcile_min_age_s: float = Field(default=300.0, ge=0)
    """A pending payment is re-checked through the API once it is this old."""
    pending_expiry_s: float = Field(default=86400.0, gt=0)
    """A payment still pending this long after creation is canceled on our side."""
    reconcile_batch: int = Field(default=100, ge=1, le=10_000)

    @field_validator("topup_packages")
    @classmethod
    def _valid_packages(cls, value: str) -> str:
        _Packages.model_validate({"packages": json.loads(value)})
        return value

    @cached_property
    def packages(self) -> tuple[TopUpPackage, ...]:
        """The price list, cheapest first."""
        parsed = _Packages.model_validate({"packages": json.loads(self.topup_packages)})
        return tuple(sorted(parsed.packages, key=lambda offer: offer.amount_kopecks))


class BonusSettings(BaseSettings):
    """The weekly bonus: amount, eligibility, time zone of the week, scheduler interval."""

    model_config = SettingsConfigDict(env_prefix="BONUS_", env_file=".env", extra="ignore")

    enabled: bool = True
    credits: int = Field(default=30, gt=0)
    time_zone: str = "Europe/Moscow"
    eligibility: Literal["all", "below_balance"] = "all"
    balance_threshold: int = Field(default=60, ge=0)
    """With `below_balance`: only accounts holding fewer credits than this get the bonus."""
    interval_s: float = Field(default=600.0, gt=0)
    batch_size: int = Field(default=500, ge=1, le=10_000)


class WebhookSettings(BaseSettings):
    """`POST /webhooks/yookassa`: who may call it and how large a body may be."""

    model_config = SettingsConfigDict(env_prefix="WEBHOOK_", env_file=".env", extra="ignore")

    allowed_networks: str = YOOKASSA_PUBLISHED_RANGES
    """Comma-separated CIDRs the notifications may come from."""
    trusted_proxies: str = ""
    """Comma-separated CIDRs of our own proxies; only their X-Forwarded-For is believed."""
    max_body_bytes: int = Field(default=65536, ge=1024)
