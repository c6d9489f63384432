"""Composition root of the gpu_runner: no database, so no ServiceRuntime; broker pieces only."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from faststream import AckPolicy
from faststream.asgi import AsgiFastStream
from faststream.rabbit import Channel, ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage

from contracts.events import JobCanceled, JobFailed
from contracts.topology import Topology, build_topology
from gpu_runner.cancellations import Cancellations
from gpu_runner.failures import ModerationUnavailableError
from gpu_runner.heartbeat import Heartbeat
from gpu_runner.runner import Runner
from gpu_runner.settings import RunnerSettings
from gpu_runner.workflows import Workflow, build_workflows, check_memory
from messaging.broker import create_broker, keep_message, rabbit_queue
from messaging.faststream_internals import cancel_consumer
from messaging.health import ReadinessCheck, health_routes
from messaging.lifecycle import ServiceLifecycle
from messaging.logs import name_service
from messaging.publisher import EventPublisher
from messaging.settings import BrokerSettings, ServiceSettings
from moderation import Moderation, ModerationSettings, create_moderation
from moderation import ModerationUnavailableError as NoDetectorError
from object_store import ObjectStore, StorageSettings, create_object_store

SOURCE = "gpu_runner"

log = logging.getLogger(__name__)


@dataclass
class Settings:
    """The runner has no database: its own settings, storage, broker and process."""

    runner: RunnerSettings = field(default_factory=RunnerSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)
    moderation: ModerationSettings = field(default_factory=ModerationSettings)


def create_app(
    settings: Settings | None = None,
    *,
    workflows: Mapping[str, Workflow] | None = None,
    store: ObjectStore | None = None,
    on_device_lost: Callable[[str], None] | None = None,
    moderation: Moderation | None = None,
) -> AsgiFastStream:
    """The runner as an ASGI app; raises `CannotStartError` (model or LoRA missing, a profile
    contradicted, not enough device memory, moderation on without its detector) before
    touching the broker.

    `on_device_lost` is called once the device cannot run more jobs (a sticky CUDA error, or
    out of memory again and again), after the failed attempt is reported: the process should
    stop (`__main__` exits non-zero so its supervisor restarts it)."""
    settings = settings or Settings()
    name_service(SOURCE)
    broker, service = settings.broker, settings.service
    workflows = dict(workflows) if workflows is not None else build_workflows(settings.runner)
    for workflow in workflows.values():
        workflow.check()
    check_memory(workflows.values(), settings.runner)
    try:
        moderation = moderation or create_moderation(settings.moderation)
    except NoDetectorError as exc:
        raise ModerationUnavailableError(str(exc)) from exc
    topology = build_topology(broker.namespace)
    rabbit = create_broker(broker, graceful_timeout_s=service.graceful_timeout_s)
    publisher = EventPublisher(
        rabbit, topology.events_exchange, source=SOURCE, timeout_s=broker.publish_timeout_s
    )
    runner = Runner(
        workflows,
        store or create_object_store(settings.storage),
        publisher,
        settings.runner,
        Cancellations(),
        stop_consuming=lambda: _stop_consuming(rabbit),
        on_device_lost=on_device_lost,
        moderation=moderation,
    )
    subscribe_runner(rabbit, topology, runner, settings.runner)
    lifecycle = ServiceLifecycle(rabbit, broker.url.get_secret_value(), topology)
    heartbeat = Heartbeat(runner, publisher, settings.runner)
    return AsgiFastStream(
        rabbit,
        asgi_routes=health_routes(rabbit, _models_loading(runner)),
        # Models load before the broker connects: no job is taken by a runner still loading.
        on_startup=[runner.load, lifecycle.on_startup],
        after_startup=[lifecycle.after_startup, heartbeat.start],
        on_shutdown=[runner.stop_taking, heartbeat.stop, lifecycle.on_shutdown],
        after_shutdown=[runner.close],
    )


def subscribe_runner(
    rabbit: RabbitBroker, topology: Topology, runner: Runner, settings: RunnerSettings
) -> None:
    """The work queues of the served workflows, and this process's own cancel queue."""
    for name in runner.workflows:
        rabbit.subscriber(
            rabbit_queue(topology.gpu_queues[name]),
            # One job on the device plus `stage_ahead` being fetched and decoded meanwhile.
            channel=Channel(prefetch_count=1 + settings.stage_ahead),
            ack_policy=AckPolicy.MANUAL,
            decoder=keep_message,
            no_reply=True,
            title=topology.gpu_queues[name].name,
        )(_bound(runner, topology.gpu_queues[name].name))
    for closing in (JobCanceled, JobFailed):  # a job closed for good need not run, or go on
        cancel_queue = RabbitQueue(
            f"{topology.namespace}.gpu.cancels.{settings.name}.{uuid.uuid4().hex[:8]}",
            exclusive=True,
            auto_delete=True,
            routing_key=closing.event_type,
        )
        rabbit.subscriber(
            cancel_queue,
            RabbitExchange(topology.events_exchange, type=ExchangeType.TOPIC, durable=True),
            ack_policy=AckPolicy.ACK,
            decoder=keep_message,
            no_reply=True,
            title=cancel_queue.name,
        )(_closing(runner))


def _bound(runner: Runner, queue: str) -> Callable[[RabbitMessage], Awaitable[None]]:
    """A handler of its own per subscriber (FastStream wraps the function it is given)."""

    async def take(message: RabbitMessage) -> None:
        await runner.on_message(message, queue=queue)

    return take


def _closing(runner: Runner) -> Callable[[RabbitMessage], Awaitable[None]]:
    """A handler of its own per subscriber (FastStream wraps the function it is given)."""

    async def close(message: RabbitMessage) -> None:
        await runner.on_cancel(message)

    return close


async def _stop_consuming(rabbit: RabbitBroker) -> None:
    """basic.cancel on every queue at once: nothing more is delivered to a broken device, and
    the jobs handed back go to other runners."""
    for subscriber in rabbit.subscribers:
        await cancel_consumer(subscriber)


def _models_loading(runner: Runner) -> ReadinessCheck:
    async def check() -> str | None:
        if runner.health.lost is not None:
            return f"device unusable: {runner.health.lost}"
        return None if runner.loaded else "models loading"

    return check
