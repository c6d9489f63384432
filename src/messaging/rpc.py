"""Request/reply over RabbitMQ direct reply-to: reads and idempotent ensures, with a timeout.

The server answers every request, refusals included, with a `Reply`; it never raises into
FastStream, so a bad request gets an error reply instead of a redelivery loop. The client
turns error replies into `RpcRefusedError` and silence into `TimeoutError`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from faststream.rabbit import Channel, RabbitBroker, RabbitQueue, RabbitResponse
from faststream.rabbit.annotations import RabbitMessage
from pydantic import BaseModel, ValidationError

from contracts.rpc import Reply, Request, RpcError
from contracts.topology import RPC_ARGUMENTS, RPC_REQUEST_TTL_MS, Topology
from messaging.broker import keep_message
from messaging.logs import current, handling

log = logging.getLogger(__name__)

RequestT = TypeVar("RequestT", bound=Request)
ResultT = TypeVar("ResultT", bound=BaseModel)


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
    """Calls request/reply methods; one broker serves calls one at a time (FastStream)."""

    def __init__(self, broker: RabbitBroker, topology: Topology, *, timeout_s: float) -> None:
        self._broker = broker
        self._topology = topology
        self._timeout_s = timeout_s

    async def call(self, request: Request, result_type: type[ResultT]) -> ResultT:
        """Send `request`, wait at most the timeout for its reply, return the validated result."""
        if not issubclass(request.result_type, result_type):
            raise TypeError(f"{request.method} answers {request.result_type.__name__}")
        response = await self._broker.request(
            request.model_dump_json().encode(),
            queue=self._topology.rpc_queue(request.method),
            timeout=self._timeout_s,
            expiration=min(self._timeout_s, RPC_REQUEST_TTL_MS / 1000),
            content_type="application/json",
            headers=_correlation_header(),
        )
        reply = Reply.model_validate_json(response.body)
        if reply.error is not None:
            raise RpcRefusedError(reply.error.code, reply.error.detail)
        if reply.result is None:
            raise RpcRefusedError("empty_reply", f"{request.method} answered nothing")
        return result_type.model_validate(reply.result)


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
