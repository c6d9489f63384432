"""The event catalog: every event any service publishes, each version it is published in.

Event types double as routing keys (`<area>.<event>`); JobDispatched adds the workflow type.
Credits moved are whole numbers; a balance is an exact decimal (an adopted customer account may
hold 12.5 credits), a string in JSON. Money is in kopecks. Telegram ids are 64-bit.

A changed event is a new class with the next `event_version`; the class it replaces keeps its
schema (and takes the suffix of its version, `JobRequestedV1`) until no one publishes it. How
versions are rolled out: docs/subscribing.md §4 and docs/architecture.md.
"""

from __future__ import annotations

import math
import uuid
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, ClassVar, Literal, TypeVar, get_args

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)

from contracts.envelope import Event

PROMPT_MAX_LENGTH = 4000
"""Hard cap on a prompt in any event; services configure their own, lower limits."""

WorkflowType = Literal["qwen_edit_2511", "qwen_edit_2511_lightning", "qwen_image", "pillow_filter"]
"""Every workflow a runner may serve; each has its own GPU work queue. A workflow is a model
with its profile: `qwen_edit_2511_lightning` is Qwen-Image-Edit-2511 with the Lightning LoRA
fused (4 steps, no CFG), so a preset chooses fast or best quality by its workflow."""
WORKFLOW_TYPES: tuple[str, ...] = get_args(WorkflowType)
DEFAULT_WORKFLOW: WorkflowType = "qwen_edit_2511"

Credits = Annotated[int, Field(ge=0, le=10**12)]
CREDIT_DIGITS = 19
CREDIT_SCALE = 6
"""Balances are exact to a millionth of a credit: NUMERIC(19, 6) in the database, which holds
every balance an adopted customer database's double precision column can mean."""


def credits_text(value: Decimal) -> str:
    """An exact amount of credits as the contract writes it: no exponent, no trailing zeros
    ("12.5", "100")."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


ExactCredits = Annotated[
    Decimal,
    Field(ge=0, le=10**12, max_digits=CREDIT_DIGITS, decimal_places=CREDIT_SCALE),
    PlainSerializer(credits_text, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^[0-9]{1,13}(\.[0-9]{1,6})?$",
            "description": "credits, exact to a millionth: a decimal string",
        }
    ),
]
"""A balance (or a shortfall): exact, a decimal string in JSON ("12.5")."""
SignedExactCredits = Annotated[
    Decimal,
    Field(ge=-(10**12), le=10**12, max_digits=CREDIT_DIGITS, decimal_places=CREDIT_SCALE),
    PlainSerializer(credits_text, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^-?[0-9]{1,13}(\.[0-9]{1,6})?$",
            "description": "credits, exact to a millionth, signed: a decimal string",
        }
    ),
]
"""A ledger entry's amount: exact, signed, a decimal string in JSON ("-10", "0.5")."""

OlderEvent = TypeVar("OlderEvent", bound=Event)


def whole(event: Event, older: type[OlderEvent]) -> OlderEvent:
    """`event` in the older version `older`, whose balances are whole credits: a balance
    rounded down, a shortfall up (what the user has, and still lacks, in whole credits)."""
    data = event.model_dump()
    for name, value in data.items():
        if isinstance(value, Decimal):
            data[name] = math.ceil(value) if name == "shortfall" else math.floor(value)
    return older.model_validate(data)


PositiveCredits = Annotated[int, Field(gt=0, le=10**12)]
Kopecks = Annotated[int, Field(gt=0, le=10**12)]
UserId = Annotated[int, Field(gt=0, le=2**31 - 1)]
"""Billing's account id (`users.user_id`)."""
TelegramId = Annotated[int, Field(gt=0, lt=2**63)]
ChatId = Annotated[int, Field(gt=-(2**63), lt=2**63)]
JobId = Annotated[int, Field(gt=0, le=2**31 - 1)]
PaymentId = Annotated[int, Field(gt=0, le=2**31 - 1)]
Attempt = Annotated[int, Field(ge=1, le=1000)]
Prompt = Annotated[str, Field(min_length=1, max_length=PROMPT_MAX_LENGTH)]
ObjectKey = Annotated[str, Field(min_length=1, max_length=255)]
Reason = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[a-z0-9_.]+$")]
Detail = Annotated[str, Field(max_length=2000)]
MAX_INPUT_IMAGES = 3
"""Qwen-Image-Edit-2511 edits from one to three input images."""
ImageKeys = Annotated[list[ObjectKey], Field(max_length=MAX_INPUT_IMAGES)]


class JobRejectReasonV1(StrEnum):
    """Why jobs refused a request before anything was charged (JobRequestRejected v1)."""

    unknown_preset = "unknown_preset"
    missing_image = "missing_image"
    prompt_too_long = "prompt_too_long"
    active_jobs_cap = "active_jobs_cap"
    invalid_request = "invalid_request"


class JobRejectReason(StrEnum):
    """Why jobs refused a request before anything was charged."""

    unknown_preset = "unknown_preset"
    missing_image = "missing_image"
    prompt_too_long = "prompt_too_long"
    active_jobs_cap = "active_jobs_cap"
    invalid_request = "invalid_request"
    price_changed = "price_changed"
    """The catalog's price is no longer the one the user confirmed (`price` says the new one)."""


class DebitRejectReason(StrEnum):
    insufficient_funds = "insufficient_funds"
    unknown_account = "unknown_account"
    invalid_amount = "invalid_amount"


# --- jobs ---------------------------------------------------------------------------------


class JobRequestedV1(Event):
    """A user asked for an image: a preset or a prompt, on an uploaded image or none.

    Superseded by v2, which carries the price the user confirmed; jobs still takes v1 (priced
    as the catalog says when it arrives) from a gateway older than v2."""

    event_type: ClassVar[str] = "job.requested"

    request_id: uuid.UUID
    user_id: UserId
    telegram_id: TelegramId
    chat_id: ChatId
    preset_id: int | None = Field(default=None, gt=0)
    prompt: Prompt | None = None
    image_key: ObjectKey | None = None
    language: Annotated[str, Field(min_length=2, max_length=10)] = "ru"

    @model_validator(mode="after")
    def _preset_or_prompt(self) -> JobRequestedV1:
        if self.preset_id is None and self.prompt is None:
            raise ValueError("either preset_id or prompt is required")
        return self

    @property
    def confirmed_price(self) -> int | None:
        """The price the user agreed to; v1 does not say."""
        return None

    @property
    def images(self) -> tuple[str, ...]:
        """The uploaded images, in the order the user sent them."""
        return (self.image_key,) if self.image_key is not None else ()


class JobRequestedV2(JobRequestedV1):
    """A user asked for an image at the price shown to them, on one uploaded image or none.

    Superseded by v3, which carries up to three images (an album); jobs still takes v2 from a
    gateway older than v3."""

    event_version: ClassVar[int] = 2

    price: Credits

    @property
    def confirmed_price(self) -> int | None:
        return self.price


class JobRequested(Event):
    """A user asked for an image at the price shown to them: a preset or a prompt, on up to
    three uploaded images (an album: a person and a product, a face and a style) or none. Jobs
    refuses it (`price_changed`) if the catalog's price is no longer `price`, so nobody is
    charged a price they did not see."""

    event_type: ClassVar[str] = "job.requested"
    event_version: ClassVar[int] = 3

    request_id: uuid.UUID
    user_id: UserId
    telegram_id: TelegramId
    chat_id: ChatId
    preset_id: int | None = Field(default=None, gt=0)
    prompt: Prompt | None = None
    image_keys: ImageKeys = Field(default_factory=list)
    language: Annotated[str, Field(min_length=2, max_length=10)] = "ru"
    price: Credits

    @model_validator(mode="after")
    def _preset_or_prompt(self) -> JobRequested:
        if self.preset_id is None and self.prompt is None:
            raise ValueError("either preset_id or prompt is required")
        return self

    @property
    def confirmed_price(self) -> int | None:
        return self.price

    @property
    def images(self) -> tuple[str, ...]:
        return tuple(self.image_keys)


class JobRequestRejectedV1(Event):
    """Jobs refused a request; nothing was charged.

    Superseded by v2; jobs publishes both until every subscriber reads v2. A refusal v1 has no
    reason for (`price_changed`) goes out in v1 as `invalid_request`."""

    event_type: ClassVar[str] = "job.request_rejected"

    request_id: uuid.UUID
    user_id: UserId
    chat_id: ChatId
    reason: JobRejectReasonV1
    detail: Detail = ""


class JobRequestRejected(Event):
    """Jobs refused a request; nothing was charged. For `price_changed`, `price` is what the
    request costs now."""

    event_type: ClassVar[str] = "job.request_rejected"
    event_version: ClassVar[int] = 2

    request_id: uuid.UUID
    user_id: UserId
    chat_id: ChatId
    reason: JobRejectReason
    detail: Detail = ""
    price: Credits | None = None


class JobCreated(Event):
    """A job exists and is priced; billing debits it next."""

    event_type: ClassVar[str] = "job.created"

    job_id: JobId
    request_id: uuid.UUID
    user_id: UserId
    telegram_id: TelegramId
    chat_id: ChatId
    price: Credits
    workflow_type: WorkflowType
    preset_id: int | None = Field(default=None, gt=0)


class JobDispatchedV1(Event):
    """A paid job of one image or none, handed to the GPU work queue of its workflow.

    Jobs still publishes v1 for every job that has at most one image, so runners of the release
    before v2 keep serving them during an upgrade; an album's job goes out in v2 only."""

    event_type: ClassVar[str] = "job.dispatched"

    job_id: JobId
    attempt: Attempt
    workflow_type: WorkflowType
    prompt: Prompt
    image_key: ObjectKey | None = None
    seed: int | None = Field(default=None, ge=0, lt=2**63)

    def routing_key(self) -> str:
        return f"{self.event_type}.{self.workflow_type}"

    @property
    def images(self) -> tuple[str, ...]:
        """The input images, in the order the user sent them."""
        return (self.image_key,) if self.image_key is not None else ()


class JobDispatched(Event):
    """A paid job handed to the GPU work queue of its workflow, with up to three input images
    (published for a job of several images; see v1)."""

    event_type: ClassVar[str] = "job.dispatched"
    event_version: ClassVar[int] = 2

    job_id: JobId
    attempt: Attempt
    workflow_type: WorkflowType
    prompt: Prompt
    image_keys: ImageKeys = Field(default_factory=list)
    seed: int | None = Field(default=None, ge=0, lt=2**63)

    def routing_key(self) -> str:
        return f"{self.event_type}.{self.workflow_type}"

    @property
    def images(self) -> tuple[str, ...]:
        return tuple(self.image_keys)


AnyJobDispatched = JobDispatchedV1 | JobDispatched
"""What a runner takes from its work queue."""


class JobQueued(Event):
    """Where a dispatched job stands in line."""

    event_type: ClassVar[str] = "job.queued"

    job_id: JobId
    user_id: UserId
    chat_id: ChatId
    position: Annotated[int, Field(ge=1)]
    eta_seconds: Annotated[int, Field(ge=0)]


class JobStarted(Event):
    """A runner began an attempt."""

    event_type: ClassVar[str] = "job.started"

    job_id: JobId
    attempt: Attempt
    runner_id: Annotated[str, Field(min_length=1, max_length=100)]
    total_steps: Annotated[int, Field(ge=0)]


class JobProgress(Event):
    """Step `step` of `total_steps` done (throttled by the runner)."""

    event_type: ClassVar[str] = "job.progress"

    job_id: JobId
    attempt: Attempt
    step: Annotated[int, Field(ge=0)]
    total_steps: Annotated[int, Field(ge=1)]


class JobCompleted(Event):
    """A runner stored the result."""

    event_type: ClassVar[str] = "job.completed"

    job_id: JobId
    attempt: Attempt
    result_key: ObjectKey
    duration_ms: Annotated[int, Field(ge=0)]
    seed: int = Field(ge=0, lt=2**63)


class JobSucceeded(Event):
    """Jobs accepted a result and completed the job, once; the gateway delivers it."""

    event_type: ClassVar[str] = "job.succeeded"

    job_id: JobId
    user_id: UserId
    chat_id: ChatId
    attempt: Attempt
    result_key: ObjectKey
    duration_ms: Annotated[int, Field(ge=0)]


class JobAttemptFailed(Event):
    """One attempt failed; `retryable` says whether another attempt may succeed."""

    event_type: ClassVar[str] = "job.attempt_failed"

    job_id: JobId
    attempt: Attempt
    retryable: bool
    reason: Reason
    detail: Detail = ""


class JobFailed(Event):
    """The job failed for good; billing refunds what it debited."""

    event_type: ClassVar[str] = "job.failed"

    job_id: JobId
    user_id: UserId
    chat_id: ChatId
    reason: Reason
    detail: Detail = ""


class JobCancelRequested(Event):
    """A user asked to cancel one of their jobs."""

    event_type: ClassVar[str] = "job.cancel_requested"

    job_id: JobId
    user_id: UserId
    chat_id: ChatId


class JobCanceled(Event):
    """The job was canceled; billing refunds what it debited, a runner stops it."""

    event_type: ClassVar[str] = "job.canceled"

    job_id: JobId
    user_id: UserId
    chat_id: ChatId
    was_running: bool


class PresetsChanged(Event):
    """The preset catalog changed; caches refresh."""

    event_type: ClassVar[str] = "catalog.presets_changed"

    revision: Annotated[str, Field(min_length=1, max_length=100)]


# --- billing ------------------------------------------------------------------------------


class BalanceDebitedV1(Event):
    """The job's price was taken from the balance, once.

    v1: its balance in whole credits, rounded down. Published beside v2 for subscribers
    that do not know v2 yet."""

    event_type: ClassVar[str] = "balance.debited"

    job_id: JobId
    user_id: UserId
    amount: Credits
    balance: Credits


class BalanceDebited(Event):
    """The job's price was taken from the balance, once. The balance is exact (v2)."""

    event_type: ClassVar[str] = "balance.debited"
    event_version: ClassVar[int] = 2

    job_id: JobId
    user_id: UserId
    amount: Credits
    balance: ExactCredits

    def v1(self) -> BalanceDebitedV1:
        return whole(self, BalanceDebitedV1)


class DebitRejectedV1(Event):
    """The job could not be paid for; nothing was taken.

    v1: its balance in whole credits, rounded down. Published beside v2 for subscribers
    that do not know v2 yet."""

    event_type: ClassVar[str] = "balance.debit_rejected"

    job_id: JobId
    user_id: UserId
    reason: DebitRejectReason
    price: Credits
    balance: Credits
    shortfall: Credits


class DebitRejected(Event):
    """The job could not be paid for; nothing was taken. The balance is exact (v2)."""

    event_type: ClassVar[str] = "balance.debit_rejected"
    event_version: ClassVar[int] = 2

    job_id: JobId
    user_id: UserId
    reason: DebitRejectReason
    price: Credits
    balance: ExactCredits
    shortfall: ExactCredits

    def v1(self) -> DebitRejectedV1:
        return whole(self, DebitRejectedV1)


class BalanceRefundedV1(Event):
    """What was debited for a failed or canceled job came back, once.

    v1: its balance in whole credits, rounded down. Published beside v2 for subscribers
    that do not know v2 yet."""

    event_type: ClassVar[str] = "balance.refunded"

    job_id: JobId
    user_id: UserId
    telegram_id: TelegramId
    amount: PositiveCredits
    balance: Credits


class BalanceRefunded(Event):
    """What was debited for a failed or canceled job came back, once. The balance is exact (v2)."""

    event_type: ClassVar[str] = "balance.refunded"
    event_version: ClassVar[int] = 2

    job_id: JobId
    user_id: UserId
    telegram_id: TelegramId
    amount: PositiveCredits
    balance: ExactCredits

    def v1(self) -> BalanceRefundedV1:
        return whole(self, BalanceRefundedV1)


class TopUpRequestedV1(Event):
    """A user chose a top-up package.

    Superseded by v2 (the buyer's language and receipt contact); billing still takes v1, as
    Russian and without a contact, from a gateway older than v2."""

    event_type: ClassVar[str] = "payment.topup_requested"

    request_id: uuid.UUID
    user_id: UserId
    telegram_id: TelegramId
    chat_id: ChatId
    package_id: Annotated[str, Field(min_length=1, max_length=50)]

    def latest(self) -> TopUpRequested:
        return TopUpRequested(**self.model_dump())


Email = Annotated[str, Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
Phone = Annotated[str, Field(pattern=r"^[1-9][0-9]{10,14}$")]
"""A phone number as YooKassa's receipts take it: E.164 digits, no `+` (79001234567)."""


class TopUpRequested(Event):
    """A user chose a top-up package. `language` is the one the payment's description is
    shown in; `email` or `phone` is where the buyer's 54-FZ receipt goes, when the shop sends
    receipts (billing refuses the top-up, `receipt_contact_missing`, without one)."""

    event_type: ClassVar[str] = "payment.topup_requested"
    event_version: ClassVar[int] = 2

    request_id: uuid.UUID
    user_id: UserId
    telegram_id: TelegramId
    chat_id: ChatId
    package_id: Annotated[str, Field(min_length=1, max_length=50)]
    language: Annotated[str, Field(min_length=2, max_length=10)] = "ru"
    email: Email | None = None
    phone: Phone | None = None

    def latest(self) -> TopUpRequested:
        return self


class PaymentCreated(Event):
    """A YooKassa payment awaits the user at `confirmation_url`."""

    event_type: ClassVar[str] = "payment.created"

    request_id: uuid.UUID
    payment_id: PaymentId
    user_id: UserId
    chat_id: ChatId
    amount_kopecks: Kopecks
    credits: PositiveCredits
    confirmation_url: HttpUrl


class PaymentSucceededV1(Event):
    """A payment was confirmed by YooKassa (or paid in Telegram Stars) and credited, once. For
    a Stars payment `amount_kopecks` is the credits' worth at BILLING_KOPECKS_PER_CREDIT.

    v1: its balance in whole credits, rounded down. Published beside v2 for subscribers
    that do not know v2 yet."""

    event_type: ClassVar[str] = "payment.succeeded"

    payment_id: PaymentId
    user_id: UserId
    telegram_id: TelegramId
    amount_kopecks: Kopecks
    credits: PositiveCredits
    balance: Credits


class PaymentSucceeded(Event):
    """A payment was confirmed by YooKassa (or paid in Telegram Stars) and credited, once. For
    a Stars payment `amount_kopecks` is the credits' worth at BILLING_KOPECKS_PER_CREDIT.
    The balance is exact (v2)."""

    event_type: ClassVar[str] = "payment.succeeded"
    event_version: ClassVar[int] = 2

    payment_id: PaymentId
    user_id: UserId
    telegram_id: TelegramId
    amount_kopecks: Kopecks
    credits: PositiveCredits
    balance: ExactCredits

    def v1(self) -> PaymentSucceededV1:
        return whole(self, PaymentSucceededV1)


class StarsPaymentReceived(Event):
    """A user paid a Stars invoice in Telegram (`successful_payment`): the gateway reports it
    once per delivery; billing credits it once per `telegram_payment_charge_id`. `amount` is in
    Stars (currency XTR); `credits` is what the invoice offered for the package."""

    event_type: ClassVar[str] = "payment.stars_received"

    telegram_payment_charge_id: Annotated[str, Field(min_length=1, max_length=100)]
    user_id: UserId
    telegram_id: TelegramId
    chat_id: ChatId
    package_id: Annotated[str, Field(min_length=1, max_length=50)]
    amount: Annotated[int, Field(gt=0, le=10**6)]
    currency: Literal["XTR"] = "XTR"
    credits: PositiveCredits


ChargeId = Annotated[str, Field(min_length=1, max_length=100)]
"""Telegram's `telegram_payment_charge_id` of a Stars payment."""


class StarsRefundRequested(Event):
    """Billing asks the gateway (which alone holds the bot token) to refund a Stars payment
    whole through Telegram's `refundStarPayment`; `refund_payment_id` is billing's pending
    refund row. Asked again for the same row, the gateway asks Telegram again: a charge
    refunded already is a success there."""

    event_type: ClassVar[str] = "payment.stars_refund_requested"

    refund_payment_id: PaymentId
    payment_id: PaymentId
    telegram_id: TelegramId
    telegram_payment_charge_id: ChargeId
    amount: Annotated[int, Field(gt=0, le=10**6)]
    """Stars, as paid."""


class StarsRefundSettled(Event):
    """The gateway's answer to StarsRefundRequested: Telegram refunded the Stars (`refunded`,
    also when the charge had been refunded before), or refused (`detail`: Telegram's words)."""

    event_type: ClassVar[str] = "payment.stars_refund_settled"

    refund_payment_id: PaymentId
    telegram_id: TelegramId
    telegram_payment_charge_id: ChargeId
    refunded: bool
    detail: Detail = ""


class TopUpRefunded(Event):
    """A top-up was refunded to its buyer (YooKassa or Telegram Stars), once: `amount` in the
    payment's unit (kopecks for RUB, Stars for XTR); `credits` came out of the balance, and
    `shortfall` more had been spent already."""

    event_type: ClassVar[str] = "payment.refunded"

    refund_payment_id: PaymentId
    """Billing's `payments` row of the refund (type `refund`)."""
    user_id: UserId
    telegram_id: TelegramId
    amount: Annotated[int, Field(gt=0, le=10**12)]
    currency: Annotated[str, Field(min_length=3, max_length=3)]
    credits: Credits
    shortfall: Credits
    balance: ExactCredits


class PaymentFailed(Event):
    """A payment was canceled or could not be created; nothing was credited."""

    event_type: ClassVar[str] = "payment.failed"

    payment_id: PaymentId | None = None
    request_id: uuid.UUID | None = None
    user_id: UserId
    telegram_id: TelegramId
    reason: Reason


class WeeklyBonusGrantedV1(Event):
    """The weekly bonus was credited, once for this user and ISO week.

    v1: its balance in whole credits, rounded down. Published beside v2 for subscribers
    that do not know v2 yet."""

    event_type: ClassVar[str] = "bonus.weekly_granted"

    user_id: UserId
    telegram_id: TelegramId
    amount: PositiveCredits
    balance: Credits
    week: Annotated[str, Field(pattern=r"^\d{4}-W\d{2}$")]
    granted_at: AwareDatetime


class WeeklyBonusGranted(Event):
    """The weekly bonus was credited, once for this user and ISO week. The balance is exact (v2)."""

    event_type: ClassVar[str] = "bonus.weekly_granted"
    event_version: ClassVar[int] = 2

    user_id: UserId
    telegram_id: TelegramId
    amount: PositiveCredits
    balance: ExactCredits
    week: Annotated[str, Field(pattern=r"^\d{4}-W\d{2}$")]
    granted_at: AwareDatetime

    def v1(self) -> WeeklyBonusGrantedV1:
        return whole(self, WeeklyBonusGrantedV1)


class GrantRefusedReason(StrEnum):
    """Why billing did not apply an admin's grant."""

    unknown_account = "unknown_account"


GrantNote = Annotated[str, Field(max_length=500)]
"""An admin's free-text reason for a grant; kept in the ledger."""


class CreditsGrantRequested(Event):
    """An admin asked to grant credits to a user; billing applies it once per request id."""

    event_type: ClassVar[str] = "credits.grant_requested"

    request_id: uuid.UUID
    admin_telegram_id: TelegramId
    telegram_id: TelegramId
    credits: PositiveCredits
    reason: GrantNote = ""


class CreditsGrantedV1(Event):
    """An admin's grant was credited through the ledger, once.

    v1: its balance in whole credits, rounded down. Published beside v2 for subscribers
    that do not know v2 yet."""

    event_type: ClassVar[str] = "credits.granted"

    request_id: uuid.UUID
    admin_telegram_id: TelegramId
    user_id: UserId
    telegram_id: TelegramId
    credits: PositiveCredits
    balance: Credits


class CreditsGranted(Event):
    """An admin's grant was credited through the ledger, once. The balance is exact (v2)."""

    event_type: ClassVar[str] = "credits.granted"
    event_version: ClassVar[int] = 2

    request_id: uuid.UUID
    admin_telegram_id: TelegramId
    user_id: UserId
    telegram_id: TelegramId
    credits: PositiveCredits
    balance: ExactCredits

    def v1(self) -> CreditsGrantedV1:
        return whole(self, CreditsGrantedV1)


class CreditsGrantRefused(Event):
    """An admin's grant was not applied; nothing was credited."""

    event_type: ClassVar[str] = "credits.grant_refused"

    request_id: uuid.UUID
    admin_telegram_id: TelegramId
    telegram_id: TelegramId
    credits: PositiveCredits
    reason: GrantRefusedReason


OperatorName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")]
"""An operator of the backend API (its login), who acted."""
OperatorNote = Annotated[str, Field(min_length=1, max_length=500)]
"""An operator's reason for a write: required, kept in the owner's records and the audit log."""
SignedCredits = Annotated[int, Field(ge=-(10**12), le=10**12)]


class AdjustmentRefusedReason(StrEnum):
    """Why billing did not apply an operator's adjustment."""

    unknown_account = "unknown_account"
    below_zero = "below_zero"


class CreditsAdjustmentRequested(Event):
    """An operator asked (through the backend API) to add credits to a user's balance or take
    some away; billing applies it once per request id (the idempotency key), never below zero."""

    event_type: ClassVar[str] = "credits.adjustment_requested"

    request_id: uuid.UUID
    operator: OperatorName
    telegram_id: TelegramId
    credits: Annotated[SignedCredits, Field(description="non-zero; negative takes credits away")]
    reason: OperatorNote

    @model_validator(mode="after")
    def _not_zero(self) -> CreditsAdjustmentRequested:
        if self.credits == 0:
            raise ValueError("an adjustment moves at least one credit")
        return self


class CreditsAdjustedV1(Event):
    """An operator's adjustment went through the ledger, once.

    v1: its balance in whole credits, rounded down. Published beside v2 for subscribers
    that do not know v2 yet."""

    event_type: ClassVar[str] = "credits.adjusted"

    request_id: uuid.UUID
    operator: OperatorName
    user_id: UserId
    telegram_id: TelegramId
    credits: SignedCredits
    balance: Credits


class CreditsAdjusted(Event):
    """An operator's adjustment went through the ledger, once. The balance is exact (v2)."""

    event_type: ClassVar[str] = "credits.adjusted"
    event_version: ClassVar[int] = 2

    request_id: uuid.UUID
    operator: OperatorName
    user_id: UserId
    telegram_id: TelegramId
    credits: SignedCredits
    balance: ExactCredits

    def v1(self) -> CreditsAdjustedV1:
        return whole(self, CreditsAdjustedV1)


class CreditsAdjustmentRefusedV1(Event):
    """An operator's adjustment was not applied; the balance did not move.

    v1: its balance in whole credits, rounded down. Published beside v2 for subscribers
    that do not know v2 yet."""

    event_type: ClassVar[str] = "credits.adjustment_refused"

    request_id: uuid.UUID
    operator: OperatorName
    telegram_id: TelegramId
    credits: SignedCredits
    reason: AdjustmentRefusedReason
    balance: Credits | None = None
    """The balance that stood in the way (below_zero), when known."""


class CreditsAdjustmentRefused(Event):
    """An operator's adjustment was not applied; the balance did not move.
    The balance is exact (v2)."""

    event_type: ClassVar[str] = "credits.adjustment_refused"
    event_version: ClassVar[int] = 2

    request_id: uuid.UUID
    operator: OperatorName
    telegram_id: TelegramId
    credits: SignedCredits
    reason: AdjustmentRefusedReason
    balance: ExactCredits | None = None
    """The balance that stood in the way (below_zero), when known."""

    def v1(self) -> CreditsAdjustmentRefusedV1:
        return whole(self, CreditsAdjustmentRefusedV1)


class TopUpRefundRequested(Event):
    """An operator asked (through the backend API) to refund a top-up to its buyer, whole or
    `amount` of it; billing runs the same refund use case as `imagebot billing refund`, once per
    request id (the idempotency key)."""

    event_type: ClassVar[str] = "payment.refund_requested"

    request_id: uuid.UUID
    operator: OperatorName
    payment_id: PaymentId
    amount: Kopecks | None = None
    """In the payment's minor unit (kopecks; Stars for XTR); None: all that is left."""
    reason: OperatorNote


class TopUpRefundDecided(Event):
    """Billing's answer to an operator's refund: `outcome` is the refund use case's
    (`refunded`, `pending`: taken and applied later; or why not)."""

    event_type: ClassVar[str] = "payment.refund_decided"

    request_id: uuid.UUID
    operator: OperatorName
    payment_id: PaymentId
    outcome: Reason
    refund_payment_id: PaymentId | None = None
    amount: Annotated[int, Field(ge=0, le=10**12)] = 0
    credits: Credits = 0
    """The credits the refund buys back; `shortfall` of them were spent already."""
    shortfall: Credits = 0
    detail: Detail = ""


class PaymentRecheckRequested(Event):
    """An operator asked billing to ask YooKassa about a payment now and apply what it says
    (as the webhook and the reconciler do), once per request id."""

    event_type: ClassVar[str] = "payment.recheck_requested"

    request_id: uuid.UUID
    operator: OperatorName
    payment_id: PaymentId
    reason: OperatorNote


class PaymentRechecked(Event):
    """Billing's answer to a re-check: the payment's status before and after, and what happened
    (`credited`, `closed`, `unchanged`, or why it could not be checked)."""

    event_type: ClassVar[str] = "payment.rechecked"

    request_id: uuid.UUID
    operator: OperatorName
    payment_id: PaymentId
    outcome: Reason
    status_before: Annotated[str, Field(max_length=20)] | None = None
    status: Annotated[str, Field(max_length=20)] | None = None
    provider_status: Annotated[str, Field(max_length=40)] | None = None
    detail: Detail = ""


class UserDataErasureRequested(Event):
    """A user asked for their data to be erased (/deletemydata): each service erases what it
    holds of them (photos, prompts, profile), keeping only what the law requires (payments and
    the credit ledger); once per user and request, however often it arrives."""

    event_type: ClassVar[str] = "user.data_erasure_requested"

    request_id: uuid.UUID
    telegram_id: TelegramId
    user_id: UserId | None = None


# --- broadcasts (operators, through the backend API; the gateway sends them) ----------------

BroadcastText = Annotated[str, Field(min_length=1, max_length=4096)]
"""One Telegram message: at most 4,096 characters."""
LanguageCode = Annotated[
    str, Field(min_length=2, max_length=10, pattern=r"^[a-z]{2}([_-][A-Za-z]{2,4})?$")
]


class BroadcastAudience(BaseModel):
    """Who a broadcast reaches, among the users who have not blocked the bot: every filter
    given must hold (an empty `languages` is every language)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    languages: Annotated[list[LanguageCode], Field(max_length=10)] = []
    active_since: AwareDatetime | None = None
    """Joined or asked for an image at or after this moment."""
    paid_ever: bool | None = None
    """True: only users who ever topped up; False: only those who never did."""


class BroadcastRequested(Event):
    """An operator asked (through the backend API) to send `text` to an audience; the gateway
    queues it once per request id (the idempotency key and the broadcast's id) in the sender's
    lowest lane."""

    event_type: ClassVar[str] = "broadcast.requested"

    request_id: uuid.UUID
    operator: OperatorName
    text: BroadcastText
    audience: BroadcastAudience
    reason: OperatorNote


class BroadcastQueued(Event):
    """The gateway queued a broadcast: one message for each of `recipients` chats."""

    event_type: ClassVar[str] = "broadcast.queued"

    request_id: uuid.UUID
    operator: OperatorName
    recipients: Annotated[int, Field(ge=0)]


class BroadcastCancelRequested(Event):
    """An operator asked to stop a broadcast: its messages not sent yet are dropped."""

    event_type: ClassVar[str] = "broadcast.cancel_requested"

    request_id: uuid.UUID
    operator: OperatorName
    broadcast_id: uuid.UUID
    reason: OperatorNote


class BroadcastCanceled(Event):
    """The gateway stopped a broadcast: `dropped` messages will not be sent (those on their
    way to Telegram at that moment still go)."""

    event_type: ClassVar[str] = "broadcast.canceled"

    request_id: uuid.UUID
    operator: OperatorName
    broadcast_id: uuid.UUID
    dropped: Annotated[int, Field(ge=0)]


class BroadcastCancelRefused(Event):
    """The gateway knows no broadcast of that id; nothing changed."""

    event_type: ClassVar[str] = "broadcast.cancel_refused"

    request_id: uuid.UUID
    operator: OperatorName
    broadcast_id: uuid.UUID
    reason: Reason


# --- moderation: what the checks and the operators decided (public), and operators' commands

ModerationSubject = Literal["prompt", "photo", "result"]
"""What was checked: the user's words, their photo (before any job), a job's result."""
ModerationCategory = Annotated[str, Field(max_length=64)]
"""The list or detector label that decided (`""` when none did)."""
ModerationScores = Annotated[
    dict[Annotated[str, Field(max_length=64)], float], Field(max_length=64)
]
"""Every detector score seen, label → score in [0, 1]; empty for a prompt's lists."""
HeldItemId = Annotated[int, Field(gt=0, lt=2**63)]
ModerationVerdict = Literal["approve", "reject"]


class ModerationRefused(Event):
    """The automatic checks refused an input (nothing was charged) or a result (refunded)."""

    event_type: ClassVar[str] = "moderation.refused"

    telegram_id: TelegramId
    subject: ModerationSubject
    category: ModerationCategory
    scores: Annotated[ModerationScores, Field(default_factory=dict)]
    check: Annotated[str, Field(max_length=100)] = ""
    """Which check decided (`prompt:lists`, `image:nudenet`, ...)."""
    job_id: JobId | None = None
    """A refused result's job."""


class ModerationHeld(Event):
    """An input scored between the hold and the refuse thresholds: the request waits for an
    operator's decision (no job, nothing charged yet)."""

    event_type: ClassVar[str] = "moderation.held"

    item_id: HeldItemId
    request_id: uuid.UUID
    """The job request it holds; approved, the job is requested under this id."""
    telegram_id: TelegramId
    user_id: UserId
    subject: ModerationSubject
    category: ModerationCategory
    scores: Annotated[ModerationScores, Field(default_factory=dict)]


class ModerationDecisionRequested(Event):
    """An operator asked (through the backend API) to approve or reject a held request; the
    gateway applies it once per request id (the idempotency key)."""

    event_type: ClassVar[str] = "moderation.decision_requested"

    request_id: uuid.UUID
    operator: OperatorName
    item_id: HeldItemId
    verdict: ModerationVerdict
    reason: OperatorNote


class ModerationDecided(Event):
    """An operator decided a held request: approved (its job is requested, at the price the
    user was shown) or rejected (the user is told; nothing was charged)."""

    event_type: ClassVar[str] = "moderation.decided"

    request_id: uuid.UUID | None = None
    """The operator's command (its idempotency key); None when decided in the CLI."""
    item_id: HeldItemId
    job_request_id: uuid.UUID
    telegram_id: TelegramId
    user_id: UserId
    subject: ModerationSubject
    verdict: Literal["approved", "rejected"]
    category: ModerationCategory
    scores: Annotated[ModerationScores, Field(default_factory=dict)]
    decided_by: OperatorName
    reason: OperatorNote


class ModerationDecisionRefusedReason(StrEnum):
    unknown_item = "unknown_item"
    already_decided = "already_decided"


class ModerationDecisionRefused(Event):
    """An operator's decision was not applied: no such held request, or decided already."""

    event_type: ClassVar[str] = "moderation.decision_refused"

    request_id: uuid.UUID
    operator: OperatorName
    item_id: HeldItemId
    verdict: ModerationVerdict
    reason: ModerationDecisionRefusedReason
    state: Annotated[str, Field(max_length=16)] | None = None
    """The decision that stood (approved, rejected), when already decided."""


class UserRestrictionRequested(Event):
    """An operator asked (through the backend API) to ban a user (the bot then refuses them
    politely, with the reason) or to lift a ban or suspension; the gateway applies it once per
    request id."""

    event_type: ClassVar[str] = "user.restriction_requested"

    request_id: uuid.UUID
    operator: OperatorName
    telegram_id: TelegramId
    action: Literal["ban", "unban"]
    reason: OperatorNote


class UserRestricted(Event):
    """A user's standing changed: banned or unbanned by an operator, or suspended by the
    moderation after repeated refusals (`decided_by` `moderation`)."""

    event_type: ClassVar[str] = "user.restricted"

    request_id: uuid.UUID | None = None
    """The operator's command; None from the CLI or the moderation itself."""
    telegram_id: TelegramId
    restriction: Literal["banned", "suspended", "unbanned"]
    reason: Annotated[str, Field(max_length=2000)]
    decided_by: OperatorName
    until: AwareDatetime | None = None
    """A suspension's end."""


class UserRestrictionRefused(Event):
    """An operator's ban or unban was not applied (an unban of a user under no restriction)."""

    event_type: ClassVar[str] = "user.restriction_refused"

    request_id: uuid.UUID
    operator: OperatorName
    telegram_id: TelegramId
    action: Literal["ban", "unban"]
    reason: Literal["not_restricted"]


class SharedUploadSeen(Event):
    """An account uploaded a picture (the same decoded pixels, by SHA-256) that at least the
    configured number of accounts uploaded: a sign of farmed free credits. Billing withholds
    the weekly bonus of such an account until it pays."""

    event_type: ClassVar[str] = "farming.shared_upload_seen"

    telegram_id: TelegramId
    accounts: Annotated[int, Field(ge=2)]
    """How many accounts (this one included) uploaded that picture so far."""
    digest: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    """The SHA-256 of the decoded RGB pixels (with the size), hex."""


# --- the catalog, by operators (the backend API asks, jobs applies) -----------------------

PRESET_ICON_PREFIX = "presets/icons/"
"""A preset's `icon` is a short text (an emoji, shown before its name on the bot's button) or,
when it starts with this, the object-store key of an uploaded image (the seed's "path to the
icon")."""
PresetCategory = Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[^\x00-\x1f]*\S")]
PresetName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f]*\S")]
PresetPrompt = Annotated[
    str, Field(min_length=1, max_length=2000, pattern=r"^[^\x00]*[^\s\x00][^\x00]*$")
]
PresetIcon = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f]+$")]
PresetPrice = Annotated[int, Field(ge=0, le=10**6)]
PresetOrder = Annotated[int, Field(ge=-(10**6), le=10**6)]
PresetId = Annotated[int, Field(gt=0, le=2**31 - 1)]


class PresetCreationRequested(Event):
    """An operator asked jobs to add a preset to the catalog; applied once per request id."""

    event_type: ClassVar[str] = "preset.creation_requested"

    request_id: uuid.UUID
    operator: OperatorName
    reason: OperatorNote
    category: PresetCategory
    name: PresetName
    prompt: PresetPrompt
    icon: PresetIcon | None = None
    price: PresetPrice
    order_index: PresetOrder = 0
    workflow_type: WorkflowType = DEFAULT_WORKFLOW
    enabled: bool = True


class PresetUpdateRequested(Event):
    """An operator asked jobs to change a preset: each field given replaces the preset's (None:
    unchanged; `remove_icon` clears the icon); a new price applies to requests from now on."""

    event_type: ClassVar[str] = "preset.update_requested"

    request_id: uuid.UUID
    operator: OperatorName
    reason: OperatorNote
    preset_id: PresetId
    category: PresetCategory | None = None
    name: PresetName | None = None
    prompt: PresetPrompt | None = None
    icon: PresetIcon | None = None
    remove_icon: bool = False
    price: PresetPrice | None = None
    order_index: PresetOrder | None = None
    workflow_type: WorkflowType | None = None
    enabled: bool | None = None


class PresetsReorderRequested(Event):
    """An operator asked jobs to show presets in this order: each named preset's `order_index`
    becomes 10 × its position (from 1); presets not named keep theirs."""

    event_type: ClassVar[str] = "preset.reorder_requested"

    request_id: uuid.UUID
    operator: OperatorName
    reason: OperatorNote
    preset_ids: Annotated[list[PresetId], Field(min_length=1, max_length=500)]


class CatalogEditRefusedReason(StrEnum):
    unknown_preset = "unknown_preset"
    duplicate_name = "duplicate_name"
    """Another preset of the category has that name (presets are imported by category + name)."""


class CatalogEditApplied(Event):
    """Jobs applied an operator's change to the catalog (once); `revision` is the catalog's
    now (PresetsChanged went out if what users see changed)."""

    event_type: ClassVar[str] = "preset.edit_applied"

    request_id: uuid.UUID
    operator: OperatorName
    preset_ids: list[PresetId]
    revision: Annotated[str, Field(min_length=1, max_length=100)]


class CatalogEditRefused(Event):
    """Jobs did not apply an operator's change to the catalog; nothing changed."""

    event_type: ClassVar[str] = "preset.edit_refused"

    request_id: uuid.UUID
    operator: OperatorName
    reason: CatalogEditRefusedReason
    detail: Detail = ""


class JobCancelOrdered(Event):
    """An operator asked (through the backend API) to cancel a job, as its user's cancel does:
    billing refunds what was debited, a runner stops it, the user is told; once per request
    id."""

    event_type: ClassVar[str] = "job.cancel_ordered"

    request_id: uuid.UUID
    operator: OperatorName
    reason: OperatorNote
    job_id: JobId


class JobRetryOrdered(Event):
    """An operator asked (through the backend API) to run a failed job again: a new job of the
    same inputs for the same user at no charge (the failed one stays failed, its refund
    stands), under this request id, once."""

    event_type: ClassVar[str] = "job.retry_ordered"

    request_id: uuid.UUID
    operator: OperatorName
    reason: OperatorNote
    job_id: JobId


class JobOrderRefusedReason(StrEnum):
    unknown_job = "unknown_job"
    finished = "finished"
    """The job had finished already (succeeded, failed or canceled): nothing to cancel."""
    not_failed = "not_failed"
    """A retry of a job that did not fail (it runs still, succeeded or was canceled)."""
    inputs_gone = "inputs_gone"
    """A retry of a job whose prompt or photos are no longer kept (the user's erasure)."""
    never_paid = "never_paid"
    """A retry of a job that failed before billing debited it (no credits, no answer)."""


class JobOrderApplied(Event):
    """Jobs applied an operator's cancel, once (JobCanceled went out with it)."""

    event_type: ClassVar[str] = "job.order_applied"

    request_id: uuid.UUID
    operator: OperatorName
    job_id: JobId
    was_running: bool


class JobOrderRefused(Event):
    """Jobs did not apply an operator's cancel or retry; nothing changed."""

    event_type: ClassVar[str] = "job.order_refused"

    request_id: uuid.UUID
    operator: OperatorName
    job_id: JobId
    reason: JobOrderRefusedReason
    stage: Annotated[str, Field(max_length=30)] | None = None


class JobRetried(Event):
    """Jobs applied an operator's retry, once: `job_id` is a new job (request `request_id`, the
    operator's) of the inputs of the failed `retried_job_id`, for its user, at no charge
    (JobCreated with price 0 went out with it). The gateway follows the new job from here, as
    one its user asked for."""

    event_type: ClassVar[str] = "job.retried"

    request_id: uuid.UUID
    operator: OperatorName
    retried_job_id: JobId
    job_id: JobId
    user_id: UserId
    telegram_id: TelegramId
    preset_id: int | None = Field(default=None, gt=0)
    language: Annotated[str, Field(min_length=2, max_length=10)] = "ru"


# --- operations: a workflow's queue paused and resumed (backend API -> jobs -> gateway) ------


class WorkflowPauseRequested(Event):
    """An operator asked (through the backend API) to pause a workflow's queue: jobs keeps its
    paid jobs waiting, dispatches none, and tells their users why; once per request id."""

    event_type: ClassVar[str] = "workflow.pause_requested"

    request_id: uuid.UUID
    operator: OperatorName
    workflow_type: WorkflowType
    reason: OperatorNote


class WorkflowResumeRequested(Event):
    """An operator asked to resume a paused workflow's queue: its waiting jobs are dispatched
    again, oldest first; once per request id."""

    event_type: ClassVar[str] = "workflow.resume_requested"

    request_id: uuid.UUID
    operator: OperatorName
    workflow_type: WorkflowType
    reason: OperatorNote


class WorkflowPaused(Event):
    """jobs paused a workflow's queue (or found it paused already)."""

    event_type: ClassVar[str] = "workflow.paused"

    request_id: uuid.UUID
    operator: OperatorName
    workflow_type: WorkflowType
    already: bool
    """It was paused before this request (by whom: `workflow_pauses`)."""
    waiting: Annotated[int, Field(ge=0)]
    """Its paid jobs now held (their users are told, `JobHeld`)."""


class WorkflowResumed(Event):
    """jobs resumed a workflow's queue (or found it running already)."""

    event_type: ClassVar[str] = "workflow.resumed"

    request_id: uuid.UUID
    operator: OperatorName
    workflow_type: WorkflowType
    already: bool
    """It was not paused."""
    waiting: Annotated[int, Field(ge=0)]
    """Its paid jobs that will now be dispatched (in their usual fair order)."""


class JobHeld(Event):
    """A paid job waits for a reason of the operators' (its workflow's queue is paused): not
    dispatched, not lost, not failed; it goes on (`JobQueued`) once the reason is gone."""

    event_type: ClassVar[str] = "job.held"

    job_id: JobId
    user_id: UserId
    chat_id: ChatId
    workflow_type: WorkflowType
    reason: Literal["workflow_paused"]


class RunnerHeartbeat(Event):
    """A GPU runner's status, every `GPU_HEARTBEAT_INTERVAL_S` and once as it stops: what it
    serves, on which device, its device memory, the job it runs. Beats that stop coming mean
    the runner is gone."""

    event_type: ClassVar[str] = "runner.heartbeat"

    runner_id: Annotated[str, Field(min_length=1, max_length=200)]
    workflows: list[WorkflowType]
    device: Annotated[str, Field(min_length=1, max_length=50)]
    memory_used_bytes: Annotated[int, Field(ge=0)] | None
    """Device memory in use (all processes'); None on the CPU."""
    memory_total_bytes: Annotated[int, Field(ge=0)] | None
    current_job: JobId | None
    healthy: bool
    """False once the device cannot run more jobs (`problem` says why)."""
    problem: Annotated[str, Field(max_length=500)] | None
    stopping: bool
    """Its last beat: it is shutting down."""
    interval_s: Annotated[float, Field(gt=0, le=3600)]
    """Until its next beat."""
    started_at: AwareDatetime


CATALOG: dict[tuple[str, int], type[Event]] = {
    (event.event_type, event.event_version): event
    for event in (
        JobRequestedV1,
        JobRequestedV2,
        JobRequested,
        JobRequestRejectedV1,
        JobRequestRejected,
        JobCreated,
        JobDispatchedV1,
        JobDispatched,
        JobQueued,
        JobStarted,
        JobProgress,
        JobCompleted,
        JobSucceeded,
        JobAttemptFailed,
        JobFailed,
        JobCancelRequested,
        JobCanceled,
        PresetsChanged,
        BalanceDebitedV1,
        BalanceDebited,
        DebitRejectedV1,
        DebitRejected,
        BalanceRefundedV1,
        BalanceRefunded,
        TopUpRequestedV1,
        TopUpRequested,
        PaymentCreated,
        PaymentSucceededV1,
        PaymentSucceeded,
        PaymentFailed,
        StarsPaymentReceived,
        StarsRefundRequested,
        StarsRefundSettled,
        TopUpRefunded,
        WeeklyBonusGrantedV1,
        WeeklyBonusGranted,
        CreditsGrantRequested,
        CreditsGrantedV1,
        CreditsGranted,
        CreditsGrantRefused,
        CreditsAdjustmentRequested,
        CreditsAdjustedV1,
        CreditsAdjusted,
        CreditsAdjustmentRefusedV1,
        CreditsAdjustmentRefused,
        TopUpRefundRequested,
        TopUpRefundDecided,
        PaymentRecheckRequested,
        PaymentRechecked,
        UserDataErasureRequested,
        ModerationRefused,
        ModerationHeld,
        ModerationDecisionRequested,
        ModerationDecided,
        ModerationDecisionRefused,
        UserRestrictionRequested,
        UserRestricted,
        UserRestrictionRefused,
        SharedUploadSeen,
        BroadcastRequested,
        BroadcastQueued,
        BroadcastCancelRequested,
        BroadcastCanceled,
        BroadcastCancelRefused,
        PresetCreationRequested,
        PresetUpdateRequested,
        PresetsReorderRequested,
        CatalogEditApplied,
        CatalogEditRefused,
        JobCancelOrdered,
        JobRetryOrdered,
        JobOrderApplied,
        JobOrderRefused,
        JobRetried,
        WorkflowPauseRequested,
        WorkflowResumeRequested,
        WorkflowPaused,
        WorkflowResumed,
        JobHeld,
        RunnerHeartbeat,
    )
}
"""Every event of the contract by (type, version)."""
