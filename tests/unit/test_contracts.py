import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from contracts import CATALOG, Event, UnknownEventError, new_envelope, open_envelope
from contracts.envelope import RawEnvelope
from contracts.events import (
    BalanceDebited,
    JobDispatched,
    JobDispatchedV1,
    JobRequested,
    JobRequestedV1,
    JobRequestedV2,
    JobRequestRejected,
    PaymentCreated,
    PaymentSucceeded,
    WeeklyBonusGranted,
)
from contracts.rpc import REQUESTS
from contracts.schemas import all_schemas
from contracts.topology import SUBSCRIPTIONS, build_topology

ROOT = Path(__file__).resolve().parents[2]

REQUIRED_EVENTS = {
    "JobRequested", "JobCreated", "BalanceDebited", "DebitRejected", "JobDispatched",
    "JobQueued", "JobStarted", "JobProgress", "JobCompleted", "JobSucceeded", "JobAttemptFailed",
    "JobFailed", "JobCancelRequested", "JobCanceled", "BalanceRefunded", "TopUpRequested",
    "PaymentCreated", "PaymentSucceeded", "PaymentFailed", "WeeklyBonusGranted",
}  # fmt: skip


def test_catalog_holds_every_event_of_the_design() -> None:
    assert {event.__name__ for event in CATALOG.values()} >= REQUIRED_EVENTS


def test_event_types_are_area_dot_event_routing_keys() -> None:
    for event_type, version in CATALOG:
        area, _, name = event_type.partition(".")
        assert area, event_type
        assert name, event_type
        assert version >= 1, event_type


def test_versions_of_one_type_count_up_from_one_and_only_the_newest_is_unsuffixed() -> None:
    by_type: dict[str, list[type[Event]]] = {}
    for event in CATALOG.values():
        by_type.setdefault(event.event_type, []).append(event)
    for event_type, events in by_type.items():
        events.sort(key=lambda event: event.event_version)
        assert [e.event_version for e in events] == list(range(1, len(events) + 1)), event_type
        *older, newest = events
        assert newest.__name__[-2:-1] != "V", newest
        assert [e.__name__ for e in older] == [
            f"{newest.__name__}V{e.event_version}" for e in older
        ]


def test_envelope_round_trip_keeps_id_and_payload() -> None:
    event = BalanceDebited(job_id=7, user_id=3, amount=30, balance=30)
    envelope = new_envelope(event, source="billing", correlation_id="req-1")
    decoded = RawEnvelope.model_validate_json(envelope.model_dump_json())
    assert decoded.id == envelope.id
    assert decoded.correlation_id == "req-1"
    assert open_envelope(decoded, CATALOG) == event


def test_caused_envelope_inherits_correlation_and_names_its_cause() -> None:
    cause = new_envelope(BalanceDebited(job_id=7, user_id=3, amount=1, balance=0), source="b")
    effect = new_envelope(
        BalanceDebited(job_id=8, user_id=3, amount=1, balance=0), source="b", cause=cause
    )
    assert effect.correlation_id == cause.correlation_id
    assert effect.causation_id == cause.id


def test_unknown_type_or_version_is_refused() -> None:
    envelope = new_envelope(BalanceDebited(job_id=7, user_id=3, amount=1, balance=0), source="b")
    for change in ({"version": 99}, {"type": "balance.stolen"}):
        with pytest.raises(UnknownEventError):
            open_envelope(envelope.model_copy(update=change), CATALOG)


def test_payload_must_match_the_schema() -> None:
    envelope = new_envelope(BalanceDebited(job_id=7, user_id=3, amount=1, balance=0), source="b")
    wrong = envelope.model_copy(update={"data": {**envelope.data, "amount": -5}})
    with pytest.raises(ValidationError):
        open_envelope(wrong, CATALOG)
    with pytest.raises(ValidationError):
        open_envelope(envelope.model_copy(update={"data": {**envelope.data, "x": 1}}), CATALOG)


def test_job_requested_needs_a_preset_or_a_prompt() -> None:
    common = {"request_id": uuid.uuid4(), "user_id": 1, "telegram_id": 2**40, "chat_id": 2**40}
    with pytest.raises(ValidationError, match="preset_id or prompt"):
        JobRequestedV1(**common)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="preset_id or prompt"):
        JobRequested(**common, price=5)  # type: ignore[arg-type]
    assert JobRequested(**common, preset_id=3, price=5).preset_id == 3  # type: ignore[arg-type]


def test_job_requested_v2_is_v1_with_the_confirmed_price() -> None:
    data = {"request_id": str(uuid.uuid4()), "user_id": 1, "telegram_id": 7, "chat_id": 7,
            "preset_id": 3}  # fmt: skip
    v1 = open_envelope(_raw("job.requested", 1, data), CATALOG)
    v2 = open_envelope(_raw("job.requested", 2, {**data, "price": 20}), CATALOG)
    assert type(v1) is JobRequestedV1
    assert v1.confirmed_price is None
    assert type(v2) is JobRequestedV2
    assert v2.confirmed_price == 20
    with pytest.raises(ValidationError):  # closed schemas: v1 has no price, v2 needs one
        open_envelope(_raw("job.requested", 1, {**data, "price": 20}), CATALOG)
    with pytest.raises(ValidationError):
        open_envelope(_raw("job.requested", 2, data), CATALOG)


def test_job_requested_v3_carries_up_to_three_images_and_older_versions_one() -> None:
    data = {"request_id": str(uuid.uuid4()), "user_id": 1, "telegram_id": 7, "chat_id": 7,
            "preset_id": 3, "price": 20}  # fmt: skip
    keys = ["uploads/a.jpg", "uploads/b.jpg", "uploads/c.jpg"]
    v3 = open_envelope(_raw("job.requested", 3, {**data, "image_keys": keys}), CATALOG)
    v2 = open_envelope(_raw("job.requested", 2, {**data, "image_key": keys[0]}), CATALOG)
    assert type(v3) is JobRequested
    assert (v3.images, v3.confirmed_price) == (tuple(keys), 20)
    assert isinstance(v2, JobRequestedV2)
    assert v2.images == (keys[0],)
    assert open_envelope(_raw("job.requested", 3, data), CATALOG).images == ()  # type: ignore[attr-defined]
    with pytest.raises(ValidationError):  # four is one too many
        open_envelope(_raw("job.requested", 3, {**data, "image_keys": [*keys, "x.jpg"]}), CATALOG)
    with pytest.raises(ValidationError):  # v3 has no image_key
        open_envelope(_raw("job.requested", 3, {**data, "image_key": keys[0]}), CATALOG)


def test_job_dispatched_v2_carries_an_albums_images_and_v1_one() -> None:
    data = {"job_id": 1, "attempt": 1, "workflow_type": "qwen_edit_2511", "prompt": "p"}
    v2 = open_envelope(_raw("job.dispatched", 2, {**data, "image_keys": ["a", "b"]}), CATALOG)
    v1 = open_envelope(_raw("job.dispatched", 1, {**data, "image_key": "a"}), CATALOG)
    assert isinstance(v2, JobDispatched)
    assert v2.images == ("a", "b")
    assert isinstance(v1, JobDispatchedV1)
    assert v1.images == ("a",)
    assert v1.routing_key() == v2.routing_key() == "job.dispatched.qwen_edit_2511"


def test_v1_of_a_refusal_knows_no_price_changed() -> None:
    data = {"request_id": str(uuid.uuid4()), "user_id": 1, "chat_id": 7}
    v2 = open_envelope(
        _raw("job.request_rejected", 2, {**data, "reason": "price_changed", "price": 25}), CATALOG
    )
    assert isinstance(v2, JobRequestRejected)
    assert v2.price == 25
    with pytest.raises(ValidationError):
        open_envelope(_raw("job.request_rejected", 1, {**data, "reason": "price_changed"}), CATALOG)


def test_one_binding_per_type_whatever_the_versions_handled() -> None:
    keys = build_topology().service_queues["jobs"].routing_keys
    assert keys.count("job.requested") == 1


def _raw(event_type: str, version: int, data: dict[str, Any]) -> RawEnvelope:
    return RawEnvelope(
        id=uuid.uuid4(), type=event_type, version=version, source="test",
        time=datetime.now(UTC), correlation_id="c", data=data,
    )  # fmt: skip


def test_dispatch_routes_to_the_queue_of_its_workflow() -> None:
    event = JobDispatched(job_id=1, attempt=1, workflow_type="qwen_image", prompt="a cat")
    assert event.routing_key() == "job.dispatched.qwen_image"
    queue = build_topology().gpu_queues["qwen_image"]
    assert queue.routing_keys == ("job.dispatched.qwen_image",)


def test_money_fields_refuse_nonsense() -> None:
    with pytest.raises(ValidationError):
        PaymentSucceeded(
            payment_id=1, user_id=1, telegram_id=1, amount_kopecks=0, credits=10, balance=10
        )
    with pytest.raises(ValidationError):
        PaymentCreated(
            request_id=uuid.uuid4(), payment_id=1, user_id=1, chat_id=1, amount_kopecks=100,
            credits=1, confirmation_url="not a url",  # type: ignore[arg-type]
        )  # fmt: skip
    with pytest.raises(ValidationError):
        WeeklyBonusGranted.model_validate(
            {"user_id": 1, "telegram_id": 1, "amount": 5, "balance": 5, "week": "2026-48",
             "granted_at": "2026-11-25T10:00:00+03:00"}
        )  # fmt: skip


def test_every_subscription_is_an_event_of_the_catalog() -> None:
    for handled in SUBSCRIPTIONS.values():
        assert set(handled) <= set(CATALOG.values())
        assert all(issubclass(event, Event) for event in handled)


def test_committed_json_schemas_match_the_code() -> None:
    """`imagebot contracts export docs/events` must be rerun after any contract change."""
    committed = {
        path.name: json.loads(path.read_text()) for path in (ROOT / "docs/events").glob("*.json")
    }
    assert committed == all_schemas()
    assert len(committed) == len(CATALOG)


def test_committed_definitions_match_the_topology() -> None:
    """`imagebot topology export > rabbitmq/definitions.json` must be rerun after a change."""
    committed = json.loads((ROOT / "rabbitmq/definitions.json").read_text())
    assert committed == build_topology().to_definitions()


def test_every_queue_dead_letters_to_its_own_dlq() -> None:
    definitions = build_topology().to_definitions()
    queues = {queue["name"]: queue for queue in definitions["queues"]}
    for name, queue in queues.items():
        if name.endswith(".dlq") or ".rpc." in name:
            continue
        assert queue["arguments"]["x-dead-letter-routing-key"] == name
        assert queue["arguments"]["x-queue-type"] == "quorum"
        assert f"{name}.dlq" in queues
        dlq_binding = {
            "source": "imagebot.dlx",
            "vhost": "/",
            "destination": f"{name}.dlq",
            "destination_type": "queue",
            "routing_key": name,
            "arguments": {},
        }
        assert dlq_binding in definitions["bindings"]


def test_request_reply_queues_expire_unanswered_requests_instead_of_dead_lettering() -> None:
    definitions = build_topology().to_definitions()
    rpc = {q["name"]: q for q in definitions["queues"] if ".rpc." in q["name"]}
    assert set(rpc) == {f"imagebot.rpc.{method}" for method in REQUESTS}
    for queue in rpc.values():
        assert queue["arguments"]["x-message-ttl"] > 0
        assert "x-dead-letter-exchange" not in queue["arguments"]


def test_a_dispatch_to_a_workflow_no_runner_serves_is_refused_before_the_outbox() -> None:
    with pytest.raises(ValidationError):
        JobDispatched(job_id=1, attempt=1, workflow_type="sdxl_turbo", prompt="a cat")  # type: ignore[arg-type]
