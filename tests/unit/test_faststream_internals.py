"""What messaging.faststream_internals assumes of the installed FastStream's private subscriber
state. A failure here after an upgrade means: re-read RabbitSubscriber.start/stop and adapt
that module (or drop it, if `stop()` now cancels before it drains)."""

from __future__ import annotations

from typing import Any

from faststream.rabbit import RabbitBroker
from faststream.rabbit.subscriber.usecase import RabbitSubscriber

from messaging.faststream_internals import CONSUMER_TAG, QUEUE, cancel_consumer, consuming


class FakeChannel:
    """Plays both aio-pika's channel and the aiormq channel under it."""

    def __init__(self) -> None:
        self.is_closed = False
        self.consumers: dict[str, Any] = {}

    async def get_underlay_channel(self) -> FakeChannel:
        return self


class FakeQueue:
    """An aio-pika queue that notes each basic.cancel and whether the subscriber still ran."""

    def __init__(self, subscriber: RabbitSubscriber) -> None:
        self._subscriber = subscriber
        self.channel = FakeChannel()
        self.cancels: list[tuple[str, bool]] = []

    async def cancel(self, tag: str) -> None:
        self.cancels.append((tag, self._subscriber.running))
        self.channel.consumers.pop(tag, None)


def a_subscriber() -> tuple[RabbitSubscriber, list[Any]]:
    handled: list[Any] = []
    subscriber = RabbitBroker().subscriber("internals-probe")

    @subscriber
    async def handle(body: Any) -> None:
        handled.append(body)

    assert isinstance(subscriber, RabbitSubscriber)
    return subscriber, handled


def consuming_on(subscriber: RabbitSubscriber, tag: str = "ctag-1") -> FakeQueue:
    """The state `start()` leaves: the queue object and the tag its consume() returned."""
    queue = FakeQueue(subscriber)
    queue.channel.consumers[tag] = object()
    setattr(subscriber, QUEUE, queue)
    setattr(subscriber, CONSUMER_TAG, tag)
    subscriber.running = True
    return queue


def test_a_new_subscriber_has_the_private_slots_unset() -> None:
    subscriber, _ = a_subscriber()
    assert {QUEUE, CONSUMER_TAG} <= set(RabbitSubscriber.__slots__)
    assert getattr(subscriber, QUEUE) is None
    assert getattr(subscriber, CONSUMER_TAG) is None


async def test_faststream_stop_marks_the_subscriber_stopped_before_it_cancels() -> None:
    """The reason for cancel_consumer: in between, deliveries are dropped unhandled."""
    subscriber, handled = a_subscriber()
    queue = consuming_on(subscriber)
    await subscriber.stop()
    assert queue.cancels == [("ctag-1", False)]  # cancelled only once no longer running
    assert getattr(subscriber, QUEUE) is None
    assert getattr(subscriber, CONSUMER_TAG) is None
    assert await subscriber.consume(object()) is None  # type: ignore[arg-type]
    assert handled == []  # what arrives while stopped is not handled (nor acked)


async def test_consuming_reads_the_tag_in_the_channel_consumers() -> None:
    subscriber, _ = a_subscriber()
    assert not await consuming(subscriber)  # not started
    queue = consuming_on(subscriber)
    assert await consuming(subscriber)
    queue.channel.consumers.clear()  # the broker cancelled it
    assert not await consuming(subscriber)
    queue.channel.consumers["ctag-1"] = object()
    queue.channel.is_closed = True
    assert not await consuming(subscriber)


async def test_cancel_consumer_cancels_while_running_and_stop_does_not_cancel_again() -> None:
    subscriber, _ = a_subscriber()
    await cancel_consumer(subscriber)  # not started: nothing to cancel
    queue = consuming_on(subscriber)
    await cancel_consumer(subscriber)
    assert queue.cancels == [("ctag-1", True)]
    assert subscriber.running  # deliveries already here still get handled
    assert not await consuming(subscriber)
    await subscriber.stop()
    assert queue.cancels == [("ctag-1", True)]  # stop() skips a forgotten tag
    assert getattr(subscriber, QUEUE) is None
