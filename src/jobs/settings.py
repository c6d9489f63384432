"""Settings of the jobs service: pricing, limits, retries, timeouts, the dispatcher's pace."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.events import PROMPT_MAX_LENGTH


class JobsSettings(BaseSettings):
    """How jobs prices, limits, retries and times out the work it dispatches."""

    model_config = SettingsConfigDict(env_prefix="JOBS_", env_file=".env", extra="ignore")

    custom_prompt_price: int = Field(default=30, ge=0)
    """Credits for a job from the user's own prompt (no preset)."""
    prompt_max_length: int = Field(default=1000, ge=1, le=PROMPT_MAX_LENGTH)
    unconfirmed_request_max_age_s: float = Field(default=300.0, gt=0)
    """A JobRequested v1 (gateways before v2) names no price, so it is priced on arrival; one
    older than this (a dead letter replayed late) is refused instead: the price its user saw is
    not known, and may not be today's."""
    max_active_jobs_per_user: int = Field(default=2, ge=1)
    """A user's jobs on the GPU queues at once; the rest wait, paid, inside jobs."""
    max_unfinished_jobs_per_user: int = Field(default=10, ge=1)
    """Requests past this many unfinished jobs are refused (`active_jobs_cap`), uncharged."""
    max_attempts: int = Field(default=3, ge=1, le=1000)
    """Attempts per job, the first included; then the job fails and billing refunds."""
    retry_backoff_s: float = Field(default=5.0, ge=0)
    """Wait before the second attempt; doubles with each further attempt."""
    retry_backoff_max_s: float = Field(default=300.0, ge=0)
    processing_timeout_s: float = Field(default=600.0, gt=0)
    """A started attempt that reports nothing for this long is retried or failed."""
    payment_timeout_s: float = Field(default=900.0, gt=0)
    """A job billing neither debited nor refused within this long fails (JobFailed)."""
    queue_timeout_s: float = Field(default=3600.0, gt=0)
    """A dispatched attempt no runner started within this long is retried or failed."""
    dispatch_interval_s: float = Field(default=1.0, gt=0)
    """How often the dispatcher looks for paid jobs whose turn or retry time has come."""
    sweep_interval_s: float = Field(default=5.0, gt=0)
    """How often the sweeper looks for attempts past their deadline."""
    dispatch_batch: int = Field(default=100, ge=1)
    """Users the dispatcher serves per pass, fewest in-flight jobs first."""
    default_duration_s: int = Field(default=60, ge=0)
    """ETA basis for a workflow with no completed job yet."""
    eta_sample_size: int = Field(default=20, ge=1)
    """How many recent completions of a workflow the ETA averages."""
