"""Each service's consumer handles exactly what its queue is bound to, every version included:
a version bound but not handled would be dead-lettered as "no handler", one handled but not
bound would never arrive."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend_api.app import build as build_backend_api
from billing.app import build as build_billing
from bot_gateway.app import build as build_gateway
from contracts.events import CATALOG
from contracts.topology import RETIRED, SUBSCRIPTIONS
from jobs.handlers import register_handlers as register_jobs
from jobs.lifecycle import JobLifecycle
from jobs.models import DELIVERY as JOBS_DELIVERY
from jobs.settings import JobsSettings
from messaging.runtime import ServiceRuntime
from messaging.settings import BrokerSettings, DatabaseSettings, OutboxSettings, ServiceSettings


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings enough to build the services; nothing connects until they start."""
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/nothing")
    monkeypatch.setenv("AMQP_URL", "amqp://nobody:nothing@127.0.0.1:1/")
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123456:" + "A" * 35)
    monkeypatch.setenv("STORAGE_LOCAL_ROOT", str(tmp_path / "objects"))


def test_every_service_handles_exactly_the_event_versions_it_subscribes_to(
    environment: None,
) -> None:
    jobs = ServiceRuntime(
        "jobs",
        JOBS_DELIVERY,
        database=DatabaseSettings(),
        broker=BrokerSettings(),
        outbox=OutboxSettings(),
        service=ServiceSettings(),
    )
    register_jobs(jobs, JobLifecycle(JobsSettings()))
    handled = {
        "jobs": set(jobs.consumer.handled),
        "billing": set(build_billing().runtime.consumer.handled),
        "bot_gateway": set(build_gateway().runtime.consumer.handled),
        "backend_api": set(build_backend_api().runtime.consumer.handled),
    }
    for service, events in SUBSCRIPTIONS.items():
        assert handled[service] == set(events), service
        # a queue binds a type, so it receives every version of it: each must be handled
        bound = {event.event_type for event in events}
        assert {e for e in CATALOG.values() if e.event_type in bound} <= handled[service], service
    subscribed = {event for events in SUBSCRIPTIONS.values() for event in events}
    assert set(RETIRED) <= subscribed  # a retired version is still taken, or it is lost
