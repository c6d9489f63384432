"""Request/reply calls: reads and idempotent ensures only, always answered within a timeout.

Each request names its method (= the last part of its queue name `<namespace>.rpc.<method>`)
and the model of its result. On the wire a reply is a `Reply`: a result or an error.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from contracts.events import (
    Credits,
    JobId,
    Kopecks,
    PositiveCredits,
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
    balance: Credits
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


class TopUpPackages(Result):
    packages: list[TopUpPackage]


class ListTopUpPackages(Request):
    """The price list of top-up packages, cheapest first."""

    method: ClassVar[str] = "billing.list_topup_packages"
    result_type: ClassVar[type[BaseModel]] = TopUpPackages


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


REQUESTS: dict[str, type[Request]] = {
    request.method: request for request in (EnsureAccount, ListTopUpPackages, ListPresets, ListJobs)
}
"""Every request/reply method by name; each has its own queue."""
