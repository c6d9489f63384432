"""Request/reply calls: reads and idempotent ensures only, always answered within a timeout.

Each request names its method (= the last part of its queue name `<namespace>.rpc.<method>`)
and the model of its result. On the wire a reply is a `Reply`: a result or an error.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.events import (
    BroadcastAudience,
    Credits,
    ExactCredits,
    JobId,
    Kopecks,
    PaymentId,
    PositiveCredits,
    SignedExactCredits,
    TelegramId,
    UserId,
    WorkflowType,
)


class Request(BaseModel):
    """A call to one service; the owning service answers it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: ClassVar[str]
    result_type: ClassVar[type[BaseModel]]


class Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RpcError(BaseModel):
    """Why a call was refused: `code` is machine-readable, `detail` is for logs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[a-z0-9_.]+$")]
    detail: Annotated[str, Field(max_length=2000)] = ""


class Reply(BaseModel):
    """Exactly one of `result` and `error`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    result: dict[str, Any] | None = None
    error: RpcError | None = None


# --- billing ------------------------------------------------------------------------------


class Account(Result):
    user_id: UserId
    telegram_id: TelegramId
    username: str | None
    balance: ExactCredits
    created: bool
    """True when this call opened the account (and granted the welcome credits)."""


class EnsureAccount(Request):
    """Open the account of a Telegram user if missing, keep its username current; idempotent."""

    method: ClassVar[str] = "billing.ensure_account"
    result_type: ClassVar[type[BaseModel]] = Account

    telegram_id: TelegramId
    username: Annotated[str, Field(max_length=100)] | None = None


class TopUpPackage(Result):
    package_id: Annotated[str, Field(min_length=1, max_length=50)]
    amount_kopecks: Kopecks
    credits: PositiveCredits


class StarsPackage(Result):
    """A top-up package paid in Telegram Stars (currency XTR)."""

    package_id: Annotated[str, Field(min_length=1, max_length=50)]
    stars: Annotated[int, Field(gt=0, le=100_000)]
    credits: PositiveCredits


class TopUpPackages(Result):
    packages: list[TopUpPackage]


class StarsPackages(Result):
    packages: list[StarsPackage]


class ListTopUpPackages(Request):
    """The price list of top-up packages, cheapest first."""

    method: ClassVar[str] = "billing.list_topup_packages"
    result_type: ClassVar[type[BaseModel]] = TopUpPackages


class ListStarsPackages(Request):
    """The price list of the packages paid in Telegram Stars, cheapest first (a method of its
    own: a gateway older than Stars never asks, and its TopUpPackages keeps its shape)."""

    method: ClassVar[str] = "billing.list_stars_packages"
    result_type: ClassVar[type[BaseModel]] = StarsPackages


class ReceiptPolicy(Result):
    """Whether the shop sends 54-FZ receipts (billing's YOOKASSA_RECEIPTS): while it does, a
    ruble top-up needs the buyer's email or phone, which the gateway asks for first."""

    receipts: bool


class GetReceiptPolicy(Request):
    """Billing's receipt setting, for the gateway to ask for the buyer's contact only when a
    receipt needs one (a method of its own: TopUpPackages keeps its shape for older gateways)."""

    method: ClassVar[str] = "billing.receipt_policy"
    result_type: ClassVar[type[BaseModel]] = ReceiptPolicy


# --- jobs ---------------------------------------------------------------------------------


class PresetView(Result):
    id: Annotated[int, Field(gt=0)]
    category: str
    name: str
    icon: str | None
    price: Credits
    order_index: int
    workflow_type: WorkflowType
    needs_image: bool


class PresetCatalog(Result):
    revision: Annotated[str, Field(min_length=1, max_length=100)]
    custom_prompt_price: Credits
    presets: list[PresetView]


class ListPresets(Request):
    """The enabled presets, in display order (category, then order_index)."""

    method: ClassVar[str] = "jobs.list_presets"
    result_type: ClassVar[type[BaseModel]] = PresetCatalog


class JobView(Result):
    job_id: JobId
    status: Annotated[str, Field(min_length=1, max_length=20)]
    prompt: str | None
    preset_id: int | None
    price: Credits
    result_key: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime | None


class JobHistory(Result):
    jobs: list[JobView]


class ListJobs(Request):
    """A user's most recent jobs, newest first."""

    method: ClassVar[str] = "jobs.list_jobs"
    result_type: ClassVar[type[BaseModel]] = JobHistory

    user_id: UserId
    limit: Annotated[int, Field(ge=1, le=50)] = 10


# --- operators' reads (the backend API) ----------------------------------------------------
# Every list is a page: `offset` and `limit` in, the page and the `total` matching the filters
# out. Rows of an adopted database may lack what the bot always fills (a telegram id, a date).

Offset = Annotated[int, Field(ge=0, le=10_000_000)]
PageLimit = Annotated[int, Field(ge=1, le=200)]
JobStage = Literal[
    "awaiting_payment",
    "waiting",
    "dispatched",
    "queued",
    "processing",
    "completed",
    "failed",
    "canceled",
]
"""A job's stage; `queued` (and the others the seed knew) for jobs of an adopted database that
have only the seed's status."""
LedgerKindName = Literal[
    "opening", "welcome", "debit", "refund", "topup", "bonus", "adjustment", "topup_refund"
]
PaymentStatusName = Literal["pending", "succeeded", "failed", "cancelled"]
UsernamePrefix = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f]+$")]


class AccountView(Result):
    user_id: UserId
    telegram_id: TelegramId | None
    username: str | None
    balance: ExactCredits
    created_at: datetime | None


class AccountPage(Result):
    accounts: list[AccountView]
    total: Annotated[int, Field(ge=0)]
    total_exact: bool = True
    """False: at least `total` match (counting stops there; a page stays fast on a big shop)."""


class SearchAccounts(Request):
    """Accounts by Telegram id (exact), user id (exact) or username (prefix, any case); with no
    filter, every account; newest first."""

    method: ClassVar[str] = "billing.search_accounts"
    result_type: ClassVar[type[BaseModel]] = AccountPage

    telegram_id: TelegramId | None = None
    user_id: UserId | None = None
    username_prefix: UsernamePrefix | None = None
    offset: Offset = 0
    limit: PageLimit = 50


class LedgerEntryView(Result):
    id: Annotated[int, Field(gt=0)]
    user_id: UserId
    kind: str
    amount: SignedExactCredits
    balance_after: ExactCredits
    job_id: int | None
    payment_id: int | None
    reason: str | None
    created_at: datetime


class LedgerPage(Result):
    entries: list[LedgerEntryView]
    total: Annotated[int, Field(ge=0)]
    total_exact: bool = True


class ListLedger(Request):
    """Ledger entries, newest first, of one user or all, optionally of one kind."""

    method: ClassVar[str] = "billing.list_ledger"
    result_type: ClassVar[type[BaseModel]] = LedgerPage

    user_id: UserId | None = None
    kind: LedgerKindName | None = None
    offset: Offset = 0
    limit: PageLimit = 50


class PaymentRecord(Result):
    id: Annotated[int, Field(gt=0)]
    user_id: int | None
    amount_kopecks: int | None
    currency: str | None
    status: str | None
    payment_type: str | None
    credits: int | None
    provider_payment_id: str | None
    created_at: datetime | None
    paid_at: datetime | None
    payment_method: str | None = None
    refund_of: int | None = None
    """The top-up a refund gives back (refunds only)."""


class CurrencyTotal(Result):
    currency: str | None
    payments: Annotated[int, Field(ge=0)]
    amount: int
    """In the currency's minor unit (kopecks) or, for Stars, in Stars."""


class PaymentPage(Result):
    payments: list[PaymentRecord]
    total: Annotated[int, Field(ge=0)]
    totals: list[CurrencyTotal] = []
    """Every payment matching the filters (not only this page's), per currency."""


PaymentTypeName = Literal["payment", "weekly_bonus", "refund"]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
PaymentMethod = Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[a-z0-9_]+$")]


class ListPayments(Request):
    """Payments, newest first, of one user or all, filtered by status, type, currency, method
    and creation time (from inclusive, until exclusive)."""

    method: ClassVar[str] = "billing.list_payments"
    result_type: ClassVar[type[BaseModel]] = PaymentPage

    payment_id: PaymentId | None = None
    user_id: UserId | None = None
    status: PaymentStatusName | None = None
    payment_type: PaymentTypeName | None = None
    refund_of: PaymentId | None = None
    """Refunds of this top-up."""
    currency: Currency | None = None
    payment_method: PaymentMethod | None = None
    created_from: datetime | None = None
    created_until: datetime | None = None
    offset: Offset = 0
    limit: PageLimit = 50


class PresetRecord(Result):
    """A preset as operators see it: its prompt and whether it is shown, too."""

    id: Annotated[int, Field(gt=0)]
    category: str
    name: str
    prompt: str
    icon: str | None
    price: Credits
    order_index: int
    workflow_type: str
    enabled: bool


class PresetPage(Result):
    presets: list[PresetRecord]
    total: Annotated[int, Field(ge=0)]


class ListAllPresets(Request):
    """Every preset, disabled ones too, in display order (category, then order_index); by
    category (exact) and whether enabled."""

    method: ClassVar[str] = "jobs.list_all_presets"
    result_type: ClassVar[type[BaseModel]] = PresetPage

    preset_id: Annotated[int, Field(gt=0)] | None = None
    category: Annotated[str, Field(min_length=1, max_length=50)] | None = None
    enabled: bool | None = None
    offset: Offset = 0
    limit: PageLimit = 50


class AuditDrift(Result):
    user_id: UserId
    telegram_id: TelegramId | None
    balance: ExactCredits | None
    ledger_sum: SignedExactCredits


class LedgerAuditResult(Result):
    checked: Annotated[int, Field(ge=0)]
    """Accounts checked."""
    drifting: Annotated[int, Field(ge=0)]
    drifts: list[AuditDrift]
    """The first of them (by user id)."""


class LedgerAudit(Request):
    """`imagebot billing audit`'s check: every balance against its ledger sum, in one
    snapshot."""

    method: ClassVar[str] = "billing.ledger_audit"
    result_type: ClassVar[type[BaseModel]] = LedgerAuditResult


class JobRecord(Result):
    job_id: JobId
    user_id: int | None
    status: str
    prompt: str | None
    preset_id: int | None
    workflow_type: str | None
    price: int | None
    error: str | None
    created_at: datetime | None
    finished_at: datetime | None


class JobPage(Result):
    jobs: list[JobRecord]
    total: Annotated[int, Field(ge=0)]
    total_exact: bool = True


class SearchJobs(Request):
    """Jobs, newest first, filtered by user, stage, preset and creation time (from inclusive,
    until exclusive)."""

    method: ClassVar[str] = "jobs.search_jobs"
    result_type: ClassVar[type[BaseModel]] = JobPage

    user_id: UserId | None = None
    status: JobStage | None = None
    preset_id: Annotated[int, Field(gt=0)] | None = None
    created_from: datetime | None = None
    created_until: datetime | None = None
    offset: Offset = 0
    limit: PageLimit = 50


# --- broadcasts and the dashboard (the backend API asks; the gateway, jobs, billing answer) --

StatsDays = Annotated[int, Field(ge=1, le=366)]


class AudienceSize(Result):
    recipients: Annotated[int, Field(ge=0)]


class CountAudience(Request):
    """How many chats a broadcast to `audience` would reach now."""

    method: ClassVar[str] = "gateway.count_audience"
    result_type: ClassVar[type[BaseModel]] = AudienceSize

    audience: BroadcastAudience


class BroadcastView(Result):
    broadcast_id: uuid.UUID
    operator: str
    text: str
    reason: str
    audience: BroadcastAudience
    recipients: Annotated[int, Field(ge=0)]
    sent: Annotated[int, Field(ge=0)]
    failed: Annotated[int, Field(ge=0)]
    """Refused by Telegram for good (the user blocked the bot, the chat is gone)."""
    left: Annotated[int, Field(ge=0)]
    dropped: Annotated[int, Field(ge=0)]
    """Not sent because the broadcast was canceled."""
    created_at: datetime
    canceled_at: datetime | None


class BroadcastPage(Result):
    broadcasts: list[BroadcastView]
    total: Annotated[int, Field(ge=0)]


class ListBroadcasts(Request):
    """Operators' broadcasts with their progress, newest first (or the one of `broadcast_id`)."""

    method: ClassVar[str] = "gateway.list_broadcasts"
    result_type: ClassVar[type[BaseModel]] = BroadcastPage

    broadcast_id: uuid.UUID | None = None
    offset: Offset = 0
    limit: PageLimit = 50


class DayCount(Result):
    day: date
    count: Annotated[int, Field(ge=0)]


class SourceCount(Result):
    source: str | None
    """The `/start` payload the users first came with; None: none."""
    users: Annotated[int, Field(ge=0)]


class UserStats(Result):
    users: Annotated[int, Field(ge=0)]
    blocked: Annotated[int, Field(ge=0)]
    new_per_day: list[DayCount]
    """Every day of the period, oldest first (zero days too)."""
    active_1d: Annotated[int, Field(ge=0)]
    active_7d: Annotated[int, Field(ge=0)]
    active_30d: Annotated[int, Field(ge=0)]
    """Users who joined or asked for an image within the last 1, 7, 30 days."""
    sources: list[SourceCount]
    """The most common `/start` sources, most users first."""


class CountUsers(Request):
    """The gateway's users: new per day over the last `days`, active, by `/start` source."""

    method: ClassVar[str] = "gateway.count_users"
    result_type: ClassVar[type[BaseModel]] = UserStats

    days: StatsDays = 30
    sources: Annotated[int, Field(ge=1, le=100)] = 10


class OutcomeCount(Result):
    status: str
    jobs: Annotated[int, Field(ge=0)]


class PresetStats(Result):
    preset_id: int | None
    """None: jobs with a prompt of the user's own."""
    name: str | None
    jobs: Annotated[int, Field(ge=0)]
    completed: Annotated[int, Field(ge=0)]
    failed: Annotated[int, Field(ge=0)]
    success_rate: Annotated[float, Field(ge=0, le=1)] | None
    """completed / (completed + failed); None before any finished."""
    revenue: Annotated[int, Field(ge=0)]
    """Credits charged for the completed jobs (the failed and canceled were refunded)."""


class JobStats(Result):
    outcomes: list[OutcomeCount]
    presets: list[PresetStats]


class CountJobs(Request):
    """Jobs created within the last `days`: by outcome, and per preset."""

    method: ClassVar[str] = "jobs.count_jobs"
    result_type: ClassVar[type[BaseModel]] = JobStats

    days: StatsDays = 30


class MoneyDay(Result):
    day: date
    currency: str
    revenue: Annotated[int, Field(ge=0)]
    """Succeeded payments that day, in the currency's minor unit (kopecks) or Stars."""
    payments: Annotated[int, Field(ge=0)]
    refunds: Annotated[int, Field(ge=0)]
    """Succeeded refunds that day, in the same unit."""


class BonusWeek(Result):
    week: date
    """The ISO week's Monday."""
    users: Annotated[int, Field(ge=0)]
    credits: Annotated[int, Field(ge=0)]


class MoneyStats(Result):
    days: list[MoneyDay]
    """The days with a payment or a refund, oldest first, per currency."""
    bonus_weeks: list[BonusWeek]
    """The weekly bonus's cost in credits per ISO week, oldest first."""


class CountMoney(Request):
    """Revenue and refunds per day and currency, and the weekly bonus's cost, over the last
    `days`."""

    method: ClassVar[str] = "billing.count_money"
    result_type: ClassVar[type[BaseModel]] = MoneyStats

    days: StatsDays = 30


# --- bot_gateway: moderation ------------------------------------------------------------------

HeldState = Literal["held", "approved", "rejected"]


class HeldRecord(Result):
    """A request held for an operator's decision (the gateway's moderation queue)."""

    item_id: Annotated[int, Field(gt=0)]
    request_id: str
    subject: str
    state: str
    telegram_id: int
    user_id: int
    title: str
    price: int
    prompt: str | None
    images: Annotated[int, Field(ge=0)]
    category: str
    scores: dict[str, float]
    decided_by: str | None
    reason: str | None
    created_at: datetime
    decided_at: datetime | None


class HeldPage(Result):
    items: list[HeldRecord]
    total: Annotated[int, Field(ge=0)]


class ListHeld(Request):
    """The moderation queue, oldest held first (decided ones newest first), by state and user."""

    method: ClassVar[str] = "bot_gateway.list_held"
    result_type: ClassVar[type[BaseModel]] = HeldPage

    state: HeldState | None = "held"
    telegram_id: TelegramId | None = None
    item_id: Annotated[int, Field(gt=0, lt=2**63)] | None = None
    offset: Offset = 0
    limit: PageLimit = 50


class HeldPreview(Result):
    """A held photo, downscaled for an operator's eyes (JPEG)."""

    content_type: str
    data_base64: str


class GetHeldPreview(Request):
    """One of a held request's photos (`index`), as a preview; unknown: `unknown_item`."""

    method: ClassVar[str] = "bot_gateway.held_preview"
    result_type: ClassVar[type[BaseModel]] = HeldPreview

    item_id: Annotated[int, Field(gt=0, lt=2**63)]
    index: Annotated[int, Field(ge=0, le=2)] = 0


class ModerationLogRecord(Result):
    id: Annotated[int, Field(gt=0)]
    subject: str
    decision: str
    category: str
    detail: str
    actor: str
    created_at: datetime


class UserModeration(Result):
    """A user's standing, their recent moderation decisions and the farming signal the gateway
    sees (uploads shared with other accounts)."""

    telegram_id: int
    standing: Literal["ok", "slowed", "suspended", "banned"]
    reason: str
    until: datetime | None
    decisions: list[ModerationLogRecord]
    held: Annotated[int, Field(ge=0)]
    """Their requests waiting in the moderation queue."""
    shared_uploads: Annotated[int, Field(ge=0)]
    """Their uploads that other accounts uploaded too (the same pixels)."""
    most_shared: Annotated[int, Field(ge=0)]
    """The most accounts sharing one of their uploads (them included; 0: none shared)."""


class GetUserModeration(Request):
    method: ClassVar[str] = "bot_gateway.user_moderation"
    result_type: ClassVar[type[BaseModel]] = UserModeration

    telegram_id: TelegramId
    limit: PageLimit = 20


class FarmingSignals(Result):
    """What billing sees of a user's free credits: whether they ever paid, whether their
    welcome credits were withheld (a creation burst), the shared-upload flag, and so whether
    the weekly bonus reaches them."""

    telegram_id: int
    known: bool
    """False: billing has no account of this Telegram id (the rest is then empty)."""
    paid: bool
    account_age_days: Annotated[int, Field(ge=0)] | None
    welcome_withheld: bool
    shared_upload_accounts: Annotated[int, Field(ge=0)]
    """0 unless flagged: the accounts that uploaded the same picture when it was reported."""
    weekly_bonus_eligible: bool


class GetFarmingSignals(Request):
    method: ClassVar[str] = "billing.farming_signals"
    result_type: ClassVar[type[BaseModel]] = FarmingSignals

    telegram_id: TelegramId


# --- jobs: the operations area --------------------------------------------------------------


class WorkflowQueueView(Result):
    """One workflow's line, as jobs sees it now."""

    workflow_type: WorkflowType
    paused: bool
    """Its queue is paused by an operator: paid jobs wait, none is dispatched."""
    waiting: Annotated[int, Field(ge=0)]
    """Paid and held in jobs (a user's cap, a retry's backoff or a pause)."""
    dispatched: Annotated[int, Field(ge=0)]
    """On its GPU queue, not started."""
    running: Annotated[int, Field(ge=0)]
    recent_durations: Annotated[int, Field(ge=0)]
    """How many recent completions the mean duration is taken from (0: none yet)."""
    mean_duration_s: Annotated[float, Field(ge=0)] | None
    eta_seconds: Annotated[int, Field(ge=0)]
    """Until a job queued now would be done: behind everything waiting and dispatched."""


class WorkflowQueues(Result):
    workflows: list[WorkflowQueueView]


class QueueStats(Request):
    """Each workflow's queue depth and ETA (every workflow, busy or not)."""

    method: ClassVar[str] = "jobs.queue_stats"
    result_type: ClassVar[type[BaseModel]] = WorkflowQueues


class GatewayProfile(Result):
    """What the gateway knows of a user; `known` False when the bot never talked to them (an
    account of an adopted database)."""

    telegram_id: int
    known: bool
    language: str | None = None
    """The one the bot speaks to them: chosen in the menu (`chosen_language`), else Telegram's."""
    chosen_language: str | None = None
    source: str | None = None
    """The first `/start` deep-link payload they came with (a campaign, a referral)."""
    source_at: datetime | None = None
    first_seen: datetime | None = None
    blocked: bool = False
    """Telegram said they blocked the bot."""


class GetGatewayProfile(Request):
    method: ClassVar[str] = "bot_gateway.user_profile"
    result_type: ClassVar[type[BaseModel]] = GatewayProfile

    telegram_id: TelegramId


REQUESTS: dict[str, type[Request]] = {
    request.method: request
    for request in (
        ListHeld,
        GetHeldPreview,
        GetUserModeration,
        GetFarmingSignals,
        EnsureAccount,
        ListTopUpPackages,
        ListStarsPackages,
        GetReceiptPolicy,
        ListPresets,
        ListJobs,
        SearchAccounts,
        ListLedger,
        ListPayments,
        LedgerAudit,
        GetGatewayProfile,
        SearchJobs,
        ListAllPresets,
        CountAudience,
        ListBroadcasts,
        CountUsers,
        CountJobs,
        CountMoney,
        QueueStats,
    )
}
"""Every request/reply method by name; each has its own queue."""
