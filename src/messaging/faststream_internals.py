"""The one place that reads FastStream's private subscriber state.

A RabbitMQ subscriber of FastStream 0.7 keeps its aio-pika queue and consumer tag private
(`_queue_obj`, `_consumer_tag`) and offers no public way to do the two things we need:

- cancel consuming while handling goes on: its public `stop()` first marks the subscriber
  stopped, waits for the drain and only then sends basic.cancel, so whatever the broker
  delivers in between is dropped unacknowledged (and comes back with a delivery counted);
- tell whether the broker still delivers: the broker may cancel a consumer (its queue
  deleted, a quorum queue's leader lost) while the connection stays up, and the subscriber
  still reports `running`.

Everything past those two attributes is public aio-pika and aiormq. tests/unit/
test_faststream_internals.py checks on the installed FastStream that the attributes exist and
mean what is assumed here, so an upgrade that renames them, or that makes `stop()` cancel first
(and this module needless), fails there rather than silently at shutdown.
"""

from __future__ import annotations

from typing import Any

QUEUE = "_queue_obj"
"""The subscriber's aio-pika queue once started; None before and after."""
CONSUMER_TAG = "_consumer_tag"
"""The tag its queue.consume returned; `stop()` cancels it unless it is None."""


def _consumer(subscriber: Any) -> tuple[Any, str] | None:
    """The subscriber's queue and consumer tag, while it consumes on an open channel."""
    queue = getattr(subscriber, QUEUE, None)
    tag = getattr(subscriber, CONSUMER_TAG, None)
    if queue is None or tag is None or queue.channel.is_closed:
        return None
    return queue, tag


async def consuming(subscriber: Any) -> bool:
    """Whether the broker still delivers to this subscriber.

    When the broker cancels a consumer, aiormq drops its tag from the channel's consumers.
    """
    found = _consumer(subscriber)
    if found is None:
        return False
    queue, tag = found
    try:
        channel = await queue.channel.get_underlay_channel()
    except Exception:  # the channel is not open (yet, or any more)
        return False
    return tag in channel.consumers


async def cancel_consumer(subscriber: Any) -> None:
    """basic.cancel while the subscriber still runs, so deliveries already here get handled.

    The tag is then forgotten, so the subscriber's own `stop()` (which still drains) does not
    cancel it a second time.
    """
    found = _consumer(subscriber)
    if found is None:
        return
    queue, tag = found
    await queue.cancel(tag)
    setattr(subscriber, CONSUMER_TAG, None)
