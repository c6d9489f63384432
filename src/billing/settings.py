"""Billing settings, one class per concern: YooKassa, prices, bonus, webhook."""

from __future__ import annotations

import json
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from billing.domain import REFUND_KEY_LIFE_S
from contracts.rpc import StarsPackage, TopUpPackage

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

DEFAULT_STARS_PACKAGES = (
    '[{"package_id": "stars_small", "stars": 50, "credits": 100},'
    ' {"package_id": "stars_medium", "stars": 250, "credits": 550}]'
)


class YooKassaSettings(BaseSettings):
    """The shop's YooKassa credentials and API; the secret is refused as a placeholder."""

    model_config = SettingsConfigDict(env_prefix="YOOKASSA_", env_file=".env", extra="ignore")

    shop_id: str = "000000"
    secret_key: SecretStr = SecretStr(PLACEHOLDER_SECRET)
    api_url: str = "https://api.yookassa.ru/v3"
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    """The socket timeout of every API call (connect, and each read); the SDK has none."""
    pool_size: int = Field(default=8, ge=1, le=64)
    """Threads the SDK's calls run on, theirs alone: slow calls never hold anything else up."""
    bot_username: str = Field(default="", pattern=r"^[A-Za-z0-9_]{0,64}$")
    """The bot's @username: the buyer returns to https://t.me/<it> after paying."""
    return_url: str = ""
    """Where the buyer goes after paying; empty: back to the bot (`bot_username`)."""
    environment: Literal["development", "production"] = "development"
    receipts: bool = False
    """Send a 54-FZ receipt with every payment and refund (YooKassa's receipts, or an online
    cash register connected through YooKassa): the shop's YooKassa account then demands one."""
    tax_system_code: int = Field(default=0, ge=0, le=6)
    """The shop's tax system (1-6), when its cash register needs it in each receipt; 0: none."""
    vat_code: int = Field(default=1, ge=1, le=12)
    """VAT of the credits (1: no VAT)."""
    payment_subject: str = Field(default="service", pattern=r"^[a-z_]{1,40}$")
    payment_mode: str = Field(default="full_payment", pattern=r"^[a-z_]{1,40}$")

    @model_validator(mode="after")
    def _no_placeholder_outside_development(self) -> YooKassaSettings:
        secret = self.secret_key.get_secret_value()
        if self.environment != "development" and secret == PLACEHOLDER_SECRET:
            raise ValueError("YOOKASSA_SECRET_KEY is a placeholder; set the shop's secret key")
        if self.environment == "production" and secret.startswith("test_"):
            raise ValueError(
                "YOOKASSA_SECRET_KEY is a test shop's key (test_...) but "
                "YOOKASSA_ENVIRONMENT=production: set the live key"
            )
        if self.environment == "production" and not (self.return_url or self.bot_username):
            raise ValueError("set YOOKASSA_BOT_USERNAME (or YOOKASSA_RETURN_URL): buyers go back")
        return self

    @property
    def payment_return_url(self) -> str:
        """Where YooKassa sends the buyer back to: the configured URL, or the bot."""
        return self.return_url or f"https://t.me/{self.bot_username}"


class _Packages(BaseModel):
    packages: list[TopUpPackage]


class _StarsPackages(BaseModel):
    packages: list[StarsPackage]


class BillingSettings(BaseSettings):
    """Prices and money rules: packages, the credit's price, welcome credits, reconciliation."""

    model_config = SettingsConfigDict(env_prefix="BILLING_", env_file=".env", extra="ignore")

    topup_packages: str = DEFAULT_PACKAGES
    """JSON list of {package_id, amount_kopecks, credits}."""
    stars_packages: str = DEFAULT_STARS_PACKAGES
    """JSON list of {package_id, stars, credits}: packages paid in Telegram Stars (XTR); `[]`
    offers none. Their ids must differ from the ruble packages'."""
    kopecks_per_credit: int = Field(default=100, gt=0)
    """What one credit is worth, for `payments` rows of refunds and bonuses."""
    welcome_credits: int = Field(default=60, ge=0)
    welcome_burst_accounts: int = Field(default=0, ge=0)
    """While this many accounts or more were opened within `welcome_burst_window_s`, a new one
    opens without welcome credits (a creation burst: farming; farming.py); 0: off."""
    welcome_burst_window_s: float = Field(default=600.0, gt=0)
    currency: str = Field(default="RUB", pattern=r"^[A-Z]{3}$")
    reconcile_interval_s: float = Field(default=60.0, gt=0)
    reconcile_min_age_s: float = Field(default=300.0, ge=0)
    """A pending payment is re-checked through the API once it is this old."""
    pending_expiry_s: float = Field(default=86400.0, gt=0)
    """A payment still pending this long after creation is canceled on our side."""
    refund_retry_after_s: float = Field(default=600.0, ge=0, le=REFUND_KEY_LIFE_S)
    """A refund still pending with no YooKassa id this long after it was asked (every call
    to create it went unanswered) is asked of YooKassa again by the reconciliation, with the
    same Idempotence-Key; at most the key's life (YooKassa honours a key for 24 h)."""
    reconcile_batch: int = Field(default=100, ge=1, le=10_000)
    descriptions: str = (
        '{"ru": "Пополнение баланса: {credits} кредитов",'
        ' "en": "Balance top-up: {credits} credits"}'
    )
    """JSON {language: text}: the payment's description the buyer sees at YooKassa, in their
    language (ru when theirs is missing); `{credits}` is replaced by the package's credits."""

    @field_validator("topup_packages")
    @classmethod
    def _valid_packages(cls, value: str) -> str:
        _Packages.model_validate({"packages": json.loads(value)})
        return value

    @field_validator("stars_packages")
    @classmethod
    def _valid_stars_packages(cls, value: str) -> str:
        _StarsPackages.model_validate({"packages": json.loads(value)})
        return value

    @model_validator(mode="after")
    def _distinct_package_ids(self) -> BillingSettings:
        ids = [p.package_id for p in self.packages] + [p.package_id for p in self.stars]
        if len(ids) != len(set(ids)):
            raise ValueError("BILLING_TOPUP_PACKAGES and BILLING_STARS_PACKAGES share an id")
        return self

    @field_validator("descriptions")
    @classmethod
    def _valid_descriptions(cls, value: str) -> str:
        texts = json.loads(value)
        if not isinstance(texts, dict) or "ru" not in texts:
            raise ValueError("BILLING_DESCRIPTIONS needs at least the ru text")
        for text in texts.values():
            text.format(credits=1)
        return value

    def description(self, language: str, credits: int) -> str:
        texts: dict[str, str] = json.loads(self.descriptions)
        return texts.get(language, texts["ru"]).format(credits=credits)

    @cached_property
    def packages(self) -> tuple[TopUpPackage, ...]:
        """The price list, cheapest first."""
        parsed = _Packages.model_validate({"packages": json.loads(self.topup_packages)})
        return tuple(sorted(parsed.packages, key=lambda offer: offer.amount_kopecks))

    @cached_property
    def stars(self) -> tuple[StarsPackage, ...]:
        """The Stars price list, cheapest first."""
        parsed = _StarsPackages.model_validate({"packages": json.loads(self.stars_packages)})
        return tuple(sorted(parsed.packages, key=lambda offer: offer.stars))


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
    paymentless_weeks: int = Field(default=4, ge=0)
    """An account that never paid gets the bonus only in its first weeks (farming.py); 0: no
    limit."""


class WebhookSettings(BaseSettings):
    """`POST /webhooks/yookassa`: who may call it and how large a body may be."""

    model_config = SettingsConfigDict(env_prefix="WEBHOOK_", env_file=".env", extra="ignore")

    allowed_networks: str = YOOKASSA_PUBLISHED_RANGES
    """Comma-separated CIDRs the notifications may come from."""
    trusted_proxies: str = ""
    """Comma-separated CIDRs of our own proxies; only their X-Forwarded-For is believed."""
    max_body_bytes: int = Field(default=65536, ge=1024)
