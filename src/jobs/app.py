"""The jobs service's composition root."""

from __future__ import annotations

from dataclasses import dataclass, field

from faststream.asgi import AsgiFastStream

from jobs.handlers import register_handlers
from jobs.lifecycle import JobLifecycle
from jobs.metrics import observe_jobs
from jobs.models import DELIVERY
from jobs.settings import JobsSettings
from messaging.runtime import ServiceRuntime
from messaging.settings import InfrastructureSettings


@dataclass
class Settings(InfrastructureSettings):
    jobs: JobsSettings = field(default_factory=JobsSettings)


def create_app(settings: Settings | None = None) -> AsgiFastStream:
    """Consumer, catalog and history reads, the fair dispatcher and the timeout sweeper."""
    settings = settings or Settings()
    runtime = ServiceRuntime.of("jobs", DELIVERY, settings)
    lifecycle = JobLifecycle(settings.jobs)
    register_handlers(runtime, lifecycle)
    runtime.every(
        settings.jobs.dispatch_interval_s,
        "dispatcher",
        lambda: lifecycle.dispatcher.dispatch_ready(runtime.unit_of_work),
    )
    runtime.every(
        settings.jobs.sweep_interval_s,
        "sweeper",
        lambda: lifecycle.sweeper.sweep(runtime.unit_of_work),
    )
    runtime.every(
        settings.service.metrics_interval_s, "jobs_gauge", lambda: observe_jobs(runtime.sessions)
    )
    return runtime.app()
