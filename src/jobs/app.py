"""The jobs service's composition root."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from jobs.handlers import register_handlers
from jobs.lifecycle import JobLifecycle
from jobs.metrics import observe_jobs
from jobs.models import DELIVERY
from jobs.settings import JobsSettings
from messaging.runtime import OBSERVE_EVERY_S, ServiceRuntime
from messaging.settings import BrokerSettings, DatabaseSettings, OutboxSettings, ServiceSettings


def create_app(
    settings: JobsSettings | None = None,
    *,
    database: DatabaseSettings | None = None,
    broker: BrokerSettings | None = None,
    outbox: OutboxSettings | None = None,
    service: ServiceSettings | None = None,
) -> AsgiFastStream:
    """Consumer, catalog and history reads, the fair dispatcher and the timeout sweeper."""
    settings = settings or JobsSettings()
    runtime = ServiceRuntime(
        "jobs",
        DELIVERY,
        database=database or DatabaseSettings(),
        broker=broker or BrokerSettings(),
        outbox=outbox or OutboxSettings(),
        service=service or ServiceSettings(),
    )
    lifecycle = JobLifecycle(settings)
    register_handlers(runtime, lifecycle)
    runtime.every(
        settings.dispatch_interval_s,
        "dispatcher",
        lambda: lifecycle.dispatcher.dispatch_ready(runtime.unit_of_work),
    )
    runtime.every(
        settings.sweep_interval_s,
        "sweeper",
        lambda: lifecycle.sweeper.sweep(runtime.unit_of_work),
    )
    runtime.every(OBSERVE_EVERY_S, "jobs_gauge", lambda: observe_jobs(runtime.sessions))
    return runtime.app()
