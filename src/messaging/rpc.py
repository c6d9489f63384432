"""Request/reply over RabbitMQ direct reply-to: reads and idempotent ensures, with a timeout.

The server answers every request, refusals included, with a `Reply`; it never raises into
FastStream, so a bad request gets an error reply instead of a redelivery loop. The client
turns error replies into `RpcRefusedError` and silence into `TimeoutError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aiormq.exceptions import AMQPError, ChannelInvalidStateError
from faststream.rabbit import Channel, RabbitBroker, RabbitQueue, RabbitResponse
from faststream.rabbit.annotations import RabbitMessage
from pydantic import BaseModel, ValidationError

from contracts.rpc import Reply, Request, RpcError
from contracts.topology import RPC_ARGUMENTS, RPC_REQUEST_TTL_MS, Topology
from messaging.broker import keep_message
from messaging.consumer import is_transient
from messaging.logs import current, handling

log = logging.getLogger(__name__)

RequestT = TypeVar("RequestT", bound=Request)
ResultT = TypeVar("ResultT", bound=BaseModel)


BROKER_TROUBLE = (AMQPError, ChannelInvalidStateError, ConnectionError)
"""What a lost or restarting broker raises; aiormq's closed-channel error is a RuntimeError."""


class RpcRefusedError(Exception):
    """The server answered with an error: bad request, unknown entity, ..."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


def serve(
    broker: RabbitBroker,
    topology: Topology,
    request_type: type[RequestT],
    handler: Callable[[RequestT], Awaitable[BaseModel]],
    *,
    prefetch: int = 10,
) -> None:
    """Answer `request_type` calls with `handler`; `RpcRefusedError` becomes an error reply."""

    async def answer(message: RabbitMessage) -> RabbitResponse:
        with handling(
            correlation_id=_caller_correlation_id(message) or message.correlation_id,
            event_id=message.message_id,
            event_type=request_type.method,
        ):
            # Not mandatory: RabbitMQ returns mandatory replies to direct reply-to even when
            # it delivered them, and the broker's channel raises on every return.
            return RabbitResponse(await _answer(message), mandatory=False)

    async def _answer(message: RabbitMessage) -> bytes:
        try:
            request = request_type.model_validate_json(message.body)
        except ValidationError as exc:
            log.warning("rpc %s: invalid request: %s", request_type.method, exc.errors()[:3])
            return _reply(error=RpcError(code="invalid_request", detail=str(exc)[:2000]))
        try:
            try:
                result = await handler(request)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                # a read or an idempotent ensure: once more at once, before the caller, who is
                # waiting, is told to come back later
                log.info("rpc %s: %r; trying once more", request_type.method, exc)
                result = await handler(request)
        except RpcRefusedError as exc:
            log.info("rpc %s refused: %s", request_type.method, exc)
            return _reply(error=RpcError(code=exc.code, detail=exc.detail))
        except Exception:
            log.exception("rpc %s failed", request_type.method)
            return _reply(error=RpcError(code="internal_error"))
        return _reply(result=result.model_dump(mode="json"))

    broker.subscriber(
        RabbitQueue(
            topology.rpc_queue(request_type.method),
            durable=True,
            arguments=cast("Any", RPC_ARGUMENTS),
        ),
        channel=Channel(prefetch_count=prefetch),
        decoder=keep_message,
        title=topology.rpc_queue(request_type.method),
    )(answer)


class RpcClient:
    """Calls request/reply methods; any number at once over one direct reply-to consumer.

    FastStream's own `broker.request` takes a lock and subscribes anew for every call, so one
    broker makes one call at a time; under load that queue of callers is the latency. Here one
    channel consumes `amq.rabbitmq.reply-to` for good and replies find their caller by
    correlation id. The connection opens on the first call and again whenever it was lost (a
    broker restart): calls waiting on the lost one time out, later ones go through.
    """

    def __init__(self, amqp_url: str, topology: Topology, *, timeout_s: float) -> None:
        self._url = amqp_url
        self._topology = topology
        self._timeout_s = timeout_s
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._opening = asyncio.Lock()
        self._waiting: dict[str, asyncio.Future[bytes]] = {}

    async def call(self, request: Request, result_type: type[ResultT]) -> ResultT:
        """Send `request`, wait at most the timeout for its reply, return the validated result."""
        if not issubclass(request.result_type, result_type):
            raise TypeError(f"{request.method} answers {request.result_type.__name__}")
        async with asyncio.timeout(self._timeout_s):
            correlation_id = uuid.uuid4().hex
            reply = self._waiting[correlation_id] = asyncio.get_running_loop().create_future()
            try:
                await self._send(request, correlation_id)
                body = await reply
            finally:
                self._waiting.pop(correlation_id, None)
        answer = Reply.model_validate_json(body)
        if answer.error is not None:
            raise RpcRefusedError(answer.error.code, answer.error.detail)
        if answer.result is None:
            raise RpcRefusedError("empty_reply", f"{request.method} answered nothing")
        return result_type.model_validate(answer.result)

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._connection = self._channel = None

    async def _send(self, request: Request, correlation_id: str) -> None:
        """Publish the request; a channel lost meanwhile (broker restart) is opened anew once."""
        message = aio_pika.Message(
            request.model_dump_json().encode(),
            content_type="application/json",
            correlation_id=correlation_id,
            reply_to=DIRECT_REPLY_TO,
            expiration=min(self._timeout_s, RPC_REQUEST_TTL_MS / 1000),
            headers=_correlation_header(),
        )
        for attempt in (1, 2):
            channel = await self._open()
            try:
                await channel.default_exchange.publish(
                    message, routing_key=self._topology.rpc_queue(request.method)
                )
                return
            except BROKER_TROUBLE as exc:
                log.warning("rpc %s: channel lost (%r); reconnecting", request.method, exc)
                await self._drop(channel)
                if attempt == 2:
                    raise

    async def _open(self) -> AbstractChannel:
        """The reply consumer's channel, (re)opened when there is none or it closed."""
        async with self._opening:
            if self._channel is None or self._channel.is_closed:
                await self.close()
                connection = await aio_pika.connect(self._url)
                channel = await connection.channel(publisher_confirms=False)
                replies = await channel.declare_queue(DIRECT_REPLY_TO, passive=True)
                await replies.consume(self._on_reply, no_ack=True)
                self._connection, self._channel = connection, channel
            return self._channel

    async def _drop(self, channel: AbstractChannel) -> None:
        async with self._opening:
            if self._channel is channel:
                await self.close()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        waiting = self._waiting.get(message.correlation_id or "")
        if waiting is not None and not waiting.done():
            waiting.set_result(message.body)


DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
CORRELATION_HEADER = "x-correlation-id"
"""The caller's correlation id (the message it was handling), so the server's logs name it."""


def _correlation_header() -> dict[str, Any]:
    correlation_id = current().correlation_id
    return {CORRELATION_HEADER: correlation_id} if correlation_id else {}


def _caller_correlation_id(message: RabbitMessage) -> str | None:
    value = message.headers.get(CORRELATION_HEADER)
    return value if isinstance(value, str) else None


def _reply(*, result: dict[str, Any] | None = None, error: RpcError | None = None) -> bytes:
    return Reply(result=result, error=error).model_dump_json().encode()
