"""The AsyncAPI 3 document of the whole system, generated from the contract (no I/O).

Channels are what a subscriber can bind to or read from: one per routing key on the events
exchange (`job.dispatched.{workflow_type}` takes its workflow as a parameter), one per service
queue and GPU work queue, one per request/reply queue. Operations say who does what: each event's
one publisher (`PUBLISHERS`) sends it, each subscribed service (`SUBSCRIPTIONS`) receives it from
its own queue, each request/reply method is answered by the service that owns it. Payloads are
the events' JSON Schemas (`contracts.schemas`), envelope included, so the document is the same
contract as `docs/events/`.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from contracts.envelope import Event
from contracts.events import CATALOG, WORKFLOW_TYPES, JobDispatched
from contracts.rpc import REQUESTS, Reply, Request, RpcError
from contracts.schemas import event_schema
from contracts.topology import (
    DEFAULT_NAMESPACE,
    DELIVERY_LIMIT,
    GPU_WORK,
    PUBLISHERS,
    RPC_REQUEST_TTL_MS,
    SUBSCRIPTIONS,
    Topology,
    build_topology,
)

ASYNCAPI_VERSION = "3.1.0"
AMQP_BINDING_VERSION = "0.3.0"
CONTRACT_VERSION = "1.0.0"
SERVICES = {
    "bot_gateway": "The Telegram bot: user requests in, notifications out.",
    "jobs": "The preset catalog and every job's lifecycle, retries, fairness and timeouts.",
    "billing": "Balances, the ledger, debits and refunds, YooKassa top-ups, the weekly bonus.",
    "gpu_runner": "Runs diffusion pipelines per workflow type on one GPU each.",
    "backend_api": "The operators' HTTP API and web panel: reads from the owners, writes as "
    "commands with an idempotency key, the operator and a reason.",
}

DESCRIPTION = f"""\
Every event of imagebot on RabbitMQ. Events are published persistent, mandatory and with
publisher confirms to the durable topic exchange `{{namespace}}.events`; the routing key is the
event type (`job.created`), `job.dispatched` adds the workflow type.

**Subscribing.** Declare a queue of your own (quorum, with a dead-letter queue) and bind it to
the exchange with the routing keys you want; never read our services' queues. See
docs/subscribing.md.

**Envelope.** Every message body is `{{id, type, version, source, time, correlation_id,
causation_id, data}}`; `id` is also the AMQP `message_id`, `type` the AMQP `type`. Deduplicate
on `id`: delivery is at least once. `correlation_id` is shared by every event a user's request
caused.

**Versioning.** The schemas are closed (`additionalProperties: false`): any change to an
event's fields, even an added optional one, is a new `version`, published beside the old one
until every subscriber has moved. A request one service acts on (`job.requested`) changes
version instead once that service takes both, as two copies of one request would race. A
subscriber should dead-letter a version it does not know.

**Failures.** Each of our queues dead-letters a message after {DELIVERY_LIMIT + 1} deliveries
(`x-delivery-limit` {DELIVERY_LIMIT}: the first and {DELIVERY_LIMIT} redeliveries; or at once
when it is malformed) to `<queue>.dlq`, where `imagebot dlq` lists, replays and purges it.
"""


def build_asyncapi(namespace: str = DEFAULT_NAMESPACE) -> dict[str, Any]:
    """The AsyncAPI 3.0 document for the topology under `namespace`."""
    topology = build_topology(namespace)
    schemas: dict[str, Any] = {}
    messages = {
        event.__name__: _event_message(event, schemas) for event in _by_name(CATALOG.values())
    }
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    _add_routing_key_channels(topology, channels)
    _add_queue_channels(topology, channels)
    _add_event_operations(channels, operations)
    _add_request_reply(topology, channels, operations, messages, schemas)
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "imagebot events",
            "version": CONTRACT_VERSION,
            "description": DESCRIPTION.replace("{namespace}", namespace),
            "tags": [{"name": name, "description": text} for name, text in SERVICES.items()],
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {
                "host": "rabbitmq:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "The deployment's RabbitMQ (vhost `/`); see docs/deployment.md.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "messages": messages,
            "correlationIds": {
                "envelope": {
                    "description": "Shared by every event a user's request caused.",
                    "location": "$message.payload#/correlation_id",
                }
            },
        },
    }


def render_asyncapi(namespace: str = DEFAULT_NAMESPACE) -> str:
    """The document as YAML, as committed in `docs/asyncapi.yaml`."""
    header = "# Generated by `imagebot docs asyncapi` from src/contracts; do not edit.\n"
    body = yaml.dump(
        build_asyncapi(namespace),
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
    )
    return header + body


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so the descriptions read as written; no aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


# --- messages and schemas ---------------------------------------------------------------------


def _event_message(event: type[Event], schemas: dict[str, Any]) -> dict[str, Any]:
    envelope = _hoist(event_schema(event), schemas)
    for key in ("$schema", "$id"):
        envelope.pop(key, None)
    envelope_name = f"{event.__name__}Envelope"
    _register(schemas, envelope_name, envelope)
    return {
        "name": event.__name__,
        "title": f"{event.__name__} v{event.event_version}",
        "summary": (event.__doc__ or "").strip(),
        "contentType": "application/json",
        "headers": {
            "type": "object",
            "properties": {
                "x-event-version": {"type": "integer", "const": event.event_version},
                "x-source": {"type": "string", "description": "The publishing service."},
            },
        },
        "correlationId": {"$ref": "#/components/correlationIds/envelope"},
        "payload": {"$ref": f"#/components/schemas/{envelope_name}"},
        "bindings": {
            "amqp": {"messageType": event.event_type, "bindingVersion": AMQP_BINDING_VERSION}
        },
    }


def _model_schema(model: type[BaseModel], schemas: dict[str, Any]) -> str:
    """Registers `model`'s JSON Schema (and its definitions); returns its component name."""
    schema = _hoist(model.model_json_schema(ref_template="#/components/schemas/{model}"), schemas)
    _register(schemas, model.__name__, schema)
    return model.__name__


def _hoist(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """Moves `$defs` into the components, pointing every reference at them."""
    for name, definition in schema.pop("$defs", {}).items():
        _register(schemas, name, _repoint(definition))
    result: dict[str, Any] = _repoint(schema)
    return result


def _repoint(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: value.replace("#/$defs/", "#/components/schemas/")
            if key == "$ref" and isinstance(value, str)
            else _repoint(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_repoint(item) for item in node]
    return node


def _register(schemas: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    if schemas.setdefault(name, schema) != schema:
        raise ValueError(f"two different schemas are named {name!r}")


def _by_name(events: Any) -> list[type[Event]]:
    return sorted(events, key=lambda event: (event.event_type, event.event_version))


# --- channels ---------------------------------------------------------------------------------


def _message_refs(events: Any) -> dict[str, Any]:
    return {
        event.__name__: {"$ref": f"#/components/messages/{event.__name__}"}
        for event in _by_name(events)
    }


def _add_routing_key_channels(topology: Topology, channels: dict[str, Any]) -> None:
    exchange = {
        "name": topology.events_exchange,
        "type": "topic",
        "durable": True,
        "autoDelete": False,
        "vhost": "/",
    }
    versions: dict[str, list[type[Event]]] = {}
    for event in _by_name(CATALOG.values()):
        versions.setdefault(event.event_type, []).append(event)
    for event_type, events in versions.items():
        address = event_type
        if event_type == JobDispatched.event_type:
            address = f"{event_type}.{{workflow_type}}"
        channel: dict[str, Any] = {
            "title": f"{event_type} on {topology.events_exchange}",
            "description": (
                f"Routing key `{address}` on the `{topology.events_exchange}` topic "
                "exchange: bind a queue of your own to receive it."
            ),
        }
        if event_type == JobDispatched.event_type:
            channel["parameters"] = {
                "workflow_type": {
                    "enum": list(WORKFLOW_TYPES),
                    "description": "Each workflow has a GPU work queue of its own.",
                }
            }
        channels[event_type] = {
            "address": address,
            **channel,
            "messages": _message_refs(events),
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": exchange,
                    "bindingVersion": AMQP_BINDING_VERSION,
                }
            },
        }


def _queue_binding(name: str, *, durable: bool = True) -> dict[str, Any]:
    return {
        "amqp": {
            "is": "queue",
            "queue": {
                "name": name,
                "durable": durable,
                "exclusive": False,
                "autoDelete": False,
                "vhost": "/",
            },
            "bindingVersion": AMQP_BINDING_VERSION,
        }
    }


def _add_queue_channels(topology: Topology, channels: dict[str, Any]) -> None:
    for service, handled in SUBSCRIPTIONS.items():
        queue = topology.service_queues[service]
        channels[f"queue.{service}"] = {
            "address": queue.name,
            "title": f"{service}'s queue",
            "description": (
                f"Quorum queue of {service}, bound to "
                + ", ".join(f"`{key}`" for key in queue.routing_keys)
                + f"; dead-letters to `{queue.dlq}`. Internal: subscribers bind their own."
            ),
            "messages": _message_refs(handled),
            "bindings": _queue_binding(queue.name),
        }
    for workflow, queue in topology.gpu_queues.items():
        channels[f"queue.gpu.{workflow}"] = {
            "address": queue.name,
            "title": f"GPU work queue of {workflow}",
            "description": (
                f"Quorum queue bound to `{queue.routing_keys[0]}`: runners serving {workflow} "
                f"share it, one job per GPU at a time; dead-letters to `{queue.dlq}`."
            ),
            "messages": _message_refs(list(GPU_WORK)),
            "bindings": _queue_binding(queue.name),
        }


def _add_event_operations(channels: dict[str, Any], operations: dict[str, Any]) -> None:
    for service, published in PUBLISHERS.items():
        for event in _by_name(published):
            operations[f"{service}.publishes.{event.__name__}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{_escape(event.event_type)}"},
                "title": f"{service} publishes {event.__name__}",
                "summary": (event.__doc__ or "").strip(),
                "tags": [{"name": service}],
                "messages": [
                    {"$ref": f"#/channels/{_escape(event.event_type)}/messages/{event.__name__}"}
                ],
                "bindings": {
                    "amqp": {
                        "deliveryMode": 2,
                        "mandatory": True,
                        "bindingVersion": AMQP_BINDING_VERSION,
                    }
                },
            }
    consumers: dict[str, tuple[type[Event], ...]] = {
        **{f"queue.{service}": handled for service, handled in SUBSCRIPTIONS.items()},
        **{f"queue.gpu.{workflow}": GPU_WORK for workflow in WORKFLOW_TYPES},
    }
    for channel_id, handled in consumers.items():
        service = "gpu_runner" if channel_id.startswith("queue.gpu.") else channel_id[6:]
        queue = channels[channel_id]["address"]
        for event in _by_name(handled):
            operation_id = f"{service}.consumes.{event.__name__}"
            if channel_id.startswith("queue.gpu."):
                operation_id += f".{channel_id.rsplit('.', 1)[1]}"
            operations[operation_id] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{_escape(channel_id)}"},
                "title": f"{service} consumes {event.__name__} from {queue}",
                "tags": [{"name": service}],
                "messages": [
                    {"$ref": f"#/channels/{_escape(channel_id)}/messages/{event.__name__}"}
                ],
                "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}},
            }


def _add_request_reply(
    topology: Topology,
    channels: dict[str, Any],
    operations: dict[str, Any],
    messages: dict[str, Any],
    schemas: dict[str, Any],
) -> None:
    error = _model_schema(RpcError, schemas)
    reply_refs: dict[str, Any] = {}
    for method, request in sorted(REQUESTS.items()):
        request_message, reply_message = _request_messages(request, error, messages, schemas)
        reply_refs[reply_message] = {"$ref": f"#/components/messages/{reply_message}"}
        channel_id = f"rpc.{method}"
        queue = topology.rpc_queue(method)
        channels[channel_id] = {
            "address": queue,
            "title": f"{method} requests",
            "description": (
                f"Classic queue on the default exchange (routing key `{queue}`); requests expire "
                f"unanswered after {RPC_REQUEST_TTL_MS // 1000} s. Replies go to the caller's "
                "`reply_to` (RabbitMQ direct reply-to) with the request's `correlation_id`."
            ),
            "messages": {request_message: {"$ref": f"#/components/messages/{request_message}"}},
            "bindings": _queue_binding(queue),
        }
        server, name = method.split(".", 1)
        operations[f"{server}.answers.{name}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{_escape(channel_id)}"},
            "title": f"{server} answers {method}",
            "summary": (request.__doc__ or "").strip(),
            "tags": [{"name": server}],
            "messages": [{"$ref": f"#/channels/{_escape(channel_id)}/messages/{request_message}"}],
            "reply": {
                "address": {
                    "description": "The AMQP `reply_to` property of the request.",
                    "location": "$message.header#/reply_to",
                },
                "channel": {"$ref": "#/channels/rpc.replies"},
                "messages": [{"$ref": f"#/channels/rpc.replies/messages/{reply_message}"}],
            },
        }
    channels["rpc.replies"] = {
        "address": None,
        "title": "Request/reply answers",
        "description": "Each caller's direct reply-to pseudo-queue; the address is per request.",
        "messages": reply_refs,
    }


def _request_messages(
    request: type[Request], error: str, messages: dict[str, Any], schemas: dict[str, Any]
) -> tuple[str, str]:
    request_name = _model_schema(request, schemas)
    result_name = _model_schema(request.result_type, schemas)
    reply_name = f"{request.__name__}Reply"
    _register(
        schemas,
        reply_name,
        {
            "title": reply_name,
            "description": (Reply.__doc__ or "").strip(),
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "result": {
                    "anyOf": [{"$ref": f"#/components/schemas/{result_name}"}, {"type": "null"}]
                },
                "error": {"anyOf": [{"$ref": f"#/components/schemas/{error}"}, {"type": "null"}]},
            },
        },
    )
    messages[request.__name__] = {
        "name": request.__name__,
        "title": f"{request.method} request",
        "summary": (request.__doc__ or "").strip(),
        "contentType": "application/json",
        "payload": {"$ref": f"#/components/schemas/{request_name}"},
    }
    messages[reply_name] = {
        "name": reply_name,
        "title": f"{request.method} reply",
        "summary": f"A {result_name}, or an error with a machine-readable code.",
        "contentType": "application/json",
        "payload": {"$ref": f"#/components/schemas/{reply_name}"},
    }
    return request.__name__, reply_name


def _escape(channel_id: str) -> str:
    """A JSON Pointer segment: `~` and `/` escaped (our ids contain neither, dots are fine)."""
    return channel_id.replace("~", "~0").replace("/", "~1")
