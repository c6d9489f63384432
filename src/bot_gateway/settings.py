"""The bot gateway's settings, one class per concern: Telegram, dialogue, delivery.

The object store's (`STORAGE_*`) are `object_store.StorageSettings`, shared with the runners.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.events import PROMPT_MAX_LENGTH

PLACEHOLDER_TOKEN = "123456:change-me"
PLACEHOLDER_SECRET = "change-me"

DEFAULT_PAYSUPPORT = json.dumps(
    {
        "ru": (
            "По вопросам оплаты напишите оператору бота: мы отвечаем в течение суток. Укажите "
            "дату и сумму платежа; ошибочный платёж вернём (картой — на карту, в Telegram Stars —"
            " в Stars)."
        ),
        "en": (
            "Questions about a payment: write to the bot's operator, we answer within a day. Give"
            " the payment's date and amount; a payment made by mistake is refunded (by card to "
            "the card, in Telegram Stars in Stars)."
        ),
    },
    ensure_ascii=False,
)
DEFAULT_TERMS = json.dumps(
    {
        "ru": (
            "Кредиты оплачивают обработку и создание изображений в этом боте и не обмениваются на"
            " деньги. Списываются только за запущенную обработку; за неудавшуюся возвращаются. "
            "Неизрасходованные купленные кредиты можно вернуть по запросу через /paysupport. "
            "Запрещены запросы с наготой и сексуальным содержанием."
        ),
        "en": (
            "Credits pay for editing and drawing images in this bot and cannot be exchanged for "
            "money. They are taken only for work started and come back for work that failed. "
            "Unspent credits you bought can be refunded on request through /paysupport. Requests "
            "with nudity or sexual content are forbidden."
        ),
    },
    ensure_ascii=False,
)
DEFAULT_PRIVACY = json.dumps(
    {
        "ru": (
            "Бот хранит ваш Telegram id, имя пользователя, язык, баланс, историю платежей и "
            "заданий; присланные фото и результаты хранятся не дольше установленного срока. "
            "Фото, запросы и результаты автоматически проверяются на запрещённое содержимое; "
            "отказы записываются в журнал (категория и оценки, без фото и текста). "
            "/deletemydata удаляет ваши фото, результаты, тексты запросов и данные профиля; "
            "платежи, история начислений и баланс сохраняются, как требует закон о "
            "бухгалтерском учёте. Данные не передаются третьим лицам, кроме платёжных "
            "провайдеров для проведения платежа."
        ),
        "en": (
            "The bot keeps your Telegram id, username, language, balance, and the history of your"
            " payments and jobs; the photos you send and their results are kept no longer than "
            "the retention period. Photos, requests and results are checked automatically for "
            "forbidden content; refusals are logged (category and scores, without the photo or "
            "the text). /deletemydata erases your photos, results, the texts of your requests and "
            "your profile details; payments, the credit ledger and the balance are kept, as the "
            "law on accounting requires. Nothing is shared with third parties except the payment "
            "providers, to make a payment."
        ),
    },
    ensure_ascii=False,
)


class TelegramSettings(BaseSettings):
    """The bot's token and how updates arrive; placeholders are refused outside development."""

    model_config = SettingsConfigDict(env_prefix="TELEGRAM_", env_file=".env", extra="ignore")

    bot_token: SecretStr = SecretStr(PLACEHOLDER_TOKEN)
    api_url: str = "https://api.telegram.org"
    """Bot API server; a local one (or the tests' fake) serves the same paths."""
    mode: Literal["polling", "webhook"] = "polling"
    webhook_url: str = ""
    """Public URL Telegram posts updates to (webhook mode); its path is /telegram/webhook."""
    webhook_secret: SecretStr = SecretStr(PLACEHOLDER_SECRET)
    """Checked against X-Telegram-Bot-Api-Secret-Token on every webhook call."""
    admin_ids: str = ""
    """Comma-separated Telegram ids allowed /stats and /broadcast."""
    default_language: Literal["ru", "en"] = "ru"
    """For users whose Telegram names no language."""
    foreign_language: Literal["ru", "en"] = "en"
    """For users whose Telegram language is neither Russian nor English."""
    polling_timeout_s: int = Field(default=10, ge=0, le=50)
    environment: Literal["development", "production"] = "development"

    @model_validator(mode="after")
    def _no_placeholder_outside_development(self) -> TelegramSettings:
        if self.environment == "development":
            return self
        if self.bot_token.get_secret_value() == PLACEHOLDER_TOKEN:
            raise ValueError("TELEGRAM_BOT_TOKEN is a placeholder; set the bot's token")
        if self.mode == "webhook" and self.webhook_secret.get_secret_value() == PLACEHOLDER_SECRET:
            raise ValueError("TELEGRAM_WEBHOOK_SECRET is a placeholder; set a random secret")
        return self

    @property
    def admins(self) -> frozenset[int]:
        return frozenset(int(part) for part in self.admin_ids.split(",") if part.strip())


class ConversationSettings(BaseSettings):
    """What the bot accepts from users and how it protects itself from floods."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_file=".env", extra="ignore")

    max_download_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    """Telegram lets bots download files up to 20 MB."""
    max_image_pixels: int = Field(default=40_000_000, ge=1)
    allowed_formats: str = "JPEG,PNG,WEBP,HEIF"
    """HEIF covers iPhones' HEIC (kept as JPEG); leave it out to refuse HEIC by name."""
    prompt_max_length: int = Field(default=1000, ge=1, le=PROMPT_MAX_LENGTH)
    upload_prefix: str = Field(default="uploads", pattern=r"^[a-z0-9_-]{1,50}$")
    result_prefix: str = Field(default="results", pattern=r"^[a-z0-9_-]{1,50}$")
    """Where the runners keep results in the object store: their GPU_RESULT_PREFIX."""
    result_retention_days: int = Field(default=30, ge=1)
    """A paid result is kept this long (and can be sent again from /history); older ones are
    deleted from the object store's results prefix."""
    result_purge_interval_s: float = Field(default=3600.0, gt=0)
    """How often the results past their retention are looked for and deleted."""
    flood_messages: int = Field(default=10, ge=1)
    """Updates one user may send at once (a quick user, an album) ..."""
    flood_interval_s: float = Field(default=0.5, gt=0)
    """... and then one per this interval; more are answered once and dropped."""
    catalog_ttl_s: float = Field(default=60.0, gt=0)
    """Another replica may have missed PresetsChanged: a cached catalog is reread this often."""
    history_limit: int = Field(default=5, ge=1, le=50)
    split_text_window_s: float = Field(default=1.0, gt=0)
    """Telegram cuts a long text into 4,096-character messages: parts of one chat arriving
    within this of each other are joined into one text (and answered once)."""
    split_text_min_length: int = Field(default=3900, ge=1)
    """A text this long may be a part of a longer one and waits for the next; shorter ones
    never wait."""
    album_window_s: float = Field(default=0.6, gt=0)
    """The photos of an album arrive as separate updates, close together: they are gathered
    until none has come for this long, and answered once."""

    paysupport_texts: str = DEFAULT_PAYSUPPORT
    """JSON {language: text}: what /paysupport answers (Telegram requires it of bots that take
    payments): how a buyer reaches the operator about a payment."""
    terms_texts: str = DEFAULT_TERMS
    """JSON {language: text}: what /terms answers (the shop's terms of service)."""
    privacy_texts: str = DEFAULT_PRIVACY
    """JSON {language: text}: what /privacy answers (the privacy policy)."""

    @field_validator("paysupport_texts", "terms_texts", "privacy_texts")
    @classmethod
    def _valid_texts(cls, value: str) -> str:
        texts = json.loads(value)
        if not isinstance(texts, dict) or not all(
            isinstance(text, str) and text.strip() for text in texts.values()
        ):
            raise ValueError("a JSON object of {language: non-empty text}")
        if "ru" not in texts or "en" not in texts:
            raise ValueError("the ru and the en text are both needed")
        return value

    def policy(self, name: Literal["paysupport", "terms", "privacy"], language: str) -> str:
        """The operator's text `name` in `language` (English for a language it lacks)."""
        texts: dict[str, str] = json.loads(getattr(self, f"{name}_texts"))
        return texts.get(language, texts["en"])

    @property
    def formats(self) -> frozenset[str]:
        return frozenset(part.strip().upper() for part in self.allowed_formats.split(","))


class DeliverySettings(BaseSettings):
    """The one outbound sender: Telegram's rate limits, progress-edit thinning, retries."""

    model_config = SettingsConfigDict(env_prefix="DELIVERY_", env_file=".env", extra="ignore")

    global_rate_per_s: float = Field(default=29.0, gt=0)
    """Telegram allows about 30 messages a second per bot; one slot is kept as margin. Replies
    to users go first, then job messages, then broadcasts (`limits.Lane`)."""
    chat_burst: int = Field(default=5, ge=1)
    """Messages that may go into one private chat at once (a user tapping quickly) ..."""
    chat_interval_s: float = Field(default=1.0, ge=0)
    """... after which the chat gets one message per this interval, as Telegram asks."""
    group_interval_s: float = Field(default=3.0, ge=0)
    """20 messages a minute per group."""
    edit_interval_s: float = Field(default=2.5, ge=0)
    """A job's status message is edited at most this often; its final state always shows."""
    batch_size: int = Field(default=200, ge=1, le=10_000)
    concurrency: int = Field(default=1000, ge=1)
    """Messages in hand at most (claimed, not yet sent); never more than the global rate sends
    in half a lease, so none waits in hand until its lease runs out."""
    poll_interval_s: float = Field(default=0.5, gt=0)
    lease_s: float = Field(default=30.0, gt=0)
    """A claimed message not confirmed sent within this is sent again (its sender died)."""
    retry_backoff_s: float = Field(default=1.0, gt=0)
    retry_after_tries: int = Field(default=5, ge=0)
    """How often one call is retried after a 429 before its message backs off in the table."""
