"""Broker topology, defined once: exchanges, service queues, GPU work queues, dead-letter queues.

`build_topology(namespace)` gives the same shape under any name prefix, so tests can run
isolated on a shared broker; `to_definitions()` renders it as RabbitMQ definitions JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contracts import events as ev
from contracts.envelope import Event
from contracts.rpc import REQUESTS

DEFAULT_NAMESPACE = "imagebot"
DELIVERY_LIMIT = 5
"""Redeliveries of one message before its queue dead-letters it (failures and crashes count):
it is delivered, and its handler run, DELIVERY_LIMIT + 1 times at most."""

SUBSCRIPTIONS: dict[str, tuple[type[Event], ...]] = {
    "billing": (
        ev.JobCreated,
        ev.JobFailed,
        ev.JobCanceled,
        ev.TopUpRequestedV1,
        ev.TopUpRequested,
        ev.CreditsGrantRequested,
        ev.CreditsAdjustmentRequested,
        ev.TopUpRefundRequested,
        ev.PaymentRecheckRequested,
        ev.StarsPaymentReceived,
        ev.StarsRefundSettled,
        ev.UserDataErasureRequested,
        ev.SharedUploadSeen,
    ),
    "jobs": (
        ev.JobRequestedV1,
        ev.JobRequestedV2,
        ev.JobRequested,
        ev.BalanceDebitedV1,
        ev.BalanceDebited,
        ev.DebitRejectedV1,
        ev.DebitRejected,
        ev.JobStarted,
        ev.JobCompleted,
        ev.JobAttemptFailed,
        ev.JobCancelRequested,
        ev.UserDataErasureRequested,
        ev.PresetCreationRequested,
        ev.PresetUpdateRequested,
        ev.PresetsReorderRequested,
        ev.JobCancelOrdered,
        ev.JobRetryOrdered,
        ev.WorkflowPauseRequested,
        ev.WorkflowResumeRequested,
    ),
    "bot_gateway": (
        ev.ModerationDecisionRequested,
        ev.UserRestrictionRequested,
        ev.JobRequestRejectedV1,
        ev.JobRequestRejected,
        ev.JobCreated,
        ev.JobQueued,
        ev.JobStarted,
        ev.JobProgress,
        ev.JobSucceeded,
        ev.JobFailed,
        ev.JobCanceled,
        ev.DebitRejectedV1,
        ev.DebitRejected,
        ev.BalanceRefundedV1,
        ev.BalanceRefunded,
        ev.PaymentCreated,
        ev.PaymentSucceededV1,
        ev.PaymentSucceeded,
        ev.PaymentFailed,
        ev.WeeklyBonusGrantedV1,
        ev.WeeklyBonusGranted,
        ev.CreditsGrantedV1,
        ev.CreditsGranted,
        ev.CreditsGrantRefused,
        ev.PresetsChanged,
        ev.BroadcastRequested,
        ev.BroadcastCancelRequested,
        ev.StarsRefundRequested,
        ev.TopUpRefunded,
        ev.CreditsAdjustedV1,
        ev.CreditsAdjusted,
        ev.JobHeld,
        ev.JobRetried,
    ),
    "backend_api": (
        ev.CatalogEditApplied,
        ev.CatalogEditRefused,
        ev.JobOrderApplied,
        ev.JobOrderRefused,
        ev.JobRetried,
        ev.ModerationRefused,
        ev.ModerationHeld,
        ev.ModerationDecided,
        ev.ModerationDecisionRefused,
        ev.UserRestricted,
        ev.UserRestrictionRefused,
        ev.BroadcastQueued,
        ev.BroadcastCanceled,
        ev.BroadcastCancelRefused,
        ev.CreditsAdjustedV1,
        ev.CreditsAdjusted,
        ev.CreditsAdjustmentRefusedV1,
        ev.CreditsAdjustmentRefused,
        ev.TopUpRefundDecided,
        ev.PaymentRechecked,
        ev.WorkflowPaused,
        ev.WorkflowResumed,
        ev.RunnerHeartbeat,
    ),
}
"""Which events each service's queue receives (every version it handles: one binding per type)."""

PUBLISHERS: dict[str, tuple[type[Event], ...]] = {
    "bot_gateway": (
        ev.ModerationRefused,
        ev.ModerationHeld,
        ev.ModerationDecided,
        ev.ModerationDecisionRefused,
        ev.UserRestricted,
        ev.UserRestrictionRefused,
        ev.SharedUploadSeen,
        ev.JobRequested,
        ev.JobCancelRequested,
        ev.TopUpRequested,
        ev.CreditsGrantRequested,
        ev.StarsPaymentReceived,
        ev.StarsRefundSettled,
        ev.UserDataErasureRequested,
        ev.BroadcastQueued,
        ev.BroadcastCanceled,
        ev.BroadcastCancelRefused,
    ),
    "jobs": (
        ev.JobRequestRejectedV1,
        ev.JobRequestRejected,
        ev.JobCreated,
        ev.JobDispatchedV1,
        ev.JobDispatched,
        ev.JobQueued,
        ev.JobSucceeded,
        ev.JobFailed,
        ev.JobCanceled,
        ev.PresetsChanged,
        ev.CatalogEditApplied,
        ev.CatalogEditRefused,
        ev.JobOrderApplied,
        ev.JobOrderRefused,
        ev.JobRetried,
        ev.WorkflowPaused,
        ev.WorkflowResumed,
        ev.JobHeld,
    ),
    "billing": (
        ev.BalanceDebitedV1,
        ev.BalanceDebited,
        ev.DebitRejectedV1,
        ev.DebitRejected,
        ev.BalanceRefundedV1,
        ev.BalanceRefunded,
        ev.PaymentCreated,
        ev.PaymentSucceededV1,
        ev.PaymentSucceeded,
        ev.PaymentFailed,
        ev.WeeklyBonusGrantedV1,
        ev.WeeklyBonusGranted,
        ev.CreditsGrantedV1,
        ev.CreditsGranted,
        ev.CreditsGrantRefused,
        ev.CreditsAdjustedV1,
        ev.CreditsAdjusted,
        ev.CreditsAdjustmentRefusedV1,
        ev.CreditsAdjustmentRefused,
        ev.TopUpRefundDecided,
        ev.PaymentRechecked,
        ev.StarsRefundRequested,
        ev.TopUpRefunded,
    ),
    "backend_api": (
        ev.PresetCreationRequested,
        ev.PresetUpdateRequested,
        ev.PresetsReorderRequested,
        ev.JobCancelOrdered,
        ev.JobRetryOrdered,
        ev.ModerationDecisionRequested,
        ev.UserRestrictionRequested,
        ev.BroadcastRequested,
        ev.BroadcastCancelRequested,
        ev.CreditsAdjustmentRequested,
        ev.TopUpRefundRequested,
        ev.PaymentRecheckRequested,
        ev.WorkflowPauseRequested,
        ev.WorkflowResumeRequested,
    ),
    "gpu_runner": (
        ev.JobStarted,
        ev.JobProgress,
        ev.JobCompleted,
        ev.JobAttemptFailed,
        ev.RunnerHeartbeat,
    ),
}
"""Which service publishes each event: exactly one per event (the AsyncAPI document's source)."""

GPU_WORK: tuple[type[Event], ...] = (ev.JobDispatchedV1, ev.JobDispatched)
"""What a runner takes from the GPU work queue of a workflow it serves: every version."""

RETIRED: tuple[type[Event], ...] = (ev.JobRequestedV1, ev.JobRequestedV2, ev.TopUpRequestedV1)
"""Versions no service of this release publishes any more; their subscribers still take them,
from a service of the release before while both run, or from a queue or DLQ at the upgrade."""


@dataclass(frozen=True)
class QueueSpec:
    """A durable quorum queue bound to the events exchange, dead-lettering to `<name>.dlq`."""

    name: str
    routing_keys: tuple[str, ...]
    dead_letter_exchange: str

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"

    @property
    def arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": self.dead_letter_exchange,
            "x-dead-letter-routing-key": self.name,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }


DLQ_ARGUMENTS: dict[str, Any] = {"x-queue-type": "quorum"}

RPC_REQUEST_TTL_MS = 60_000
RPC_ARGUMENTS: dict[str, Any] = {"x-queue-type": "classic", "x-message-ttl": RPC_REQUEST_TTL_MS}
"""Requests nobody answered in time are worthless to their callers: they expire, unlogged."""


@dataclass(frozen=True)
class Topology:
    namespace: str
    service_queues: dict[str, QueueSpec]
    gpu_queues: dict[str, QueueSpec]

    def rpc_queue(self, method: str) -> str:
        """The queue a request/reply method is served on (default exchange, no dead-lettering)."""
        return f"{self.namespace}.rpc.{method}"

    @property
    def rpc_queues(self) -> tuple[str, ...]:
        return tuple(self.rpc_queue(method) for method in REQUESTS)

    @property
    def events_exchange(self) -> str:
        return f"{self.namespace}.events"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}.dlx"

    @property
    def queues(self) -> tuple[QueueSpec, ...]:
        return (*self.service_queues.values(), *self.gpu_queues.values())

    def to_definitions(self, vhost: str = "/") -> dict[str, Any]:
        """RabbitMQ definitions JSON (the format `rabbitmqctl import_definitions` reads)."""
        exchanges = [
            {
                "name": name,
                "vhost": vhost,
                "type": kind,
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            }
            for name, kind in (
                (self.events_exchange, "topic"),
                (self.dead_letter_exchange, "direct"),
            )
        ]
        queues: list[dict[str, Any]] = []
        bindings: list[dict[str, Any]] = []
        for queue in self.queues:
            queues.append(_queue_definition(queue.name, vhost, queue.arguments))
            queues.append(_queue_definition(queue.dlq, vhost, DLQ_ARGUMENTS))
            bindings.extend(
                _binding_definition(self.events_exchange, queue.name, key, vhost)
                for key in queue.routing_keys
            )
            bindings.append(
                _binding_definition(self.dead_letter_exchange, queue.dlq, queue.name, vhost)
            )
        queues.extend(_queue_definition(name, vhost, RPC_ARGUMENTS) for name in self.rpc_queues)
        return {
            "vhosts": [{"name": vhost}],
            "exchanges": exchanges,
            "queues": queues,
            "bindings": bindings,
        }


def _queue_definition(name: str, vhost: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "vhost": vhost,
        "durable": True,
        "auto_delete": False,
        "arguments": arguments,
    }


def _binding_definition(source: str, queue: str, routing_key: str, vhost: str) -> dict[str, Any]:
    return {
        "source": source,
        "vhost": vhost,
        "destination": queue,
        "destination_type": "queue",
        "routing_key": routing_key,
        "arguments": {},
    }


def build_topology(namespace: str = DEFAULT_NAMESPACE) -> Topology:
    dlx = f"{namespace}.dlx"
    service_queues = {
        service: QueueSpec(
            name=f"{namespace}.{service}",
            routing_keys=tuple(dict.fromkeys(event.event_type for event in handled)),
            dead_letter_exchange=dlx,
        )
        for service, handled in SUBSCRIPTIONS.items()
    }
    gpu_queues = {
        workflow: QueueSpec(
            name=f"{namespace}.gpu.{workflow}",
            routing_keys=(f"{ev.JobDispatched.event_type}.{workflow}",),
            dead_letter_exchange=dlx,
        )
        for workflow in ev.WORKFLOW_TYPES
    }
    return Topology(namespace=namespace, service_queues=service_queues, gpu_queues=gpu_queues)
