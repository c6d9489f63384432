"""The HTTP routes every service serves: `/healthz` (alive), `/readyz`, `/metrics`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from faststream.asgi import AsgiResponse, get
from faststream.asgi.types import ASGIApp, Scope
from faststream.rabbit import RabbitBroker

from messaging.faststream_internals import consuming
from messaging.metrics import READY, exposition

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[str | None]]
"""Says why the service is not ready yet (None when it is)."""


def health_routes(broker: RabbitBroker, *checks: ReadinessCheck) -> list[tuple[str, ASGIApp]]:
    """Alive while the process serves; ready when `checks` pass, the broker answers and every
    subscriber is still consuming (the broker may cancel one while the connection stays up)."""

    @get(include_in_schema=False)
    async def healthz(scope: Scope) -> AsgiResponse:
        return AsgiResponse(b"ok", 200)

    async def unready() -> str | None:
        for check in checks:
            if (reason := await check()) is not None:
                return reason
        if not await broker.ping(3.0):
            return "broker unreachable"
        for subscriber in broker.subscribers:
            if not await consuming(subscriber):
                log.warning("readiness: %s is not consuming", subscriber)
                return "a consumer is not consuming"
        return None

    @get(include_in_schema=False)
    async def readyz(scope: Scope) -> AsgiResponse:
        if (reason := await unready()) is not None:
            log.warning("readiness: %s", reason)
            return AsgiResponse(reason.encode(), 503)
        return AsgiResponse(b"ready", 200)

    @get(include_in_schema=False)
    async def metrics(scope: Scope) -> AsgiResponse:
        # Readiness as a series, so an alert sees a replica that is up but not ready.
        READY.set(await unready() is None)
        body, content_type = exposition()
        return AsgiResponse(body, 200, headers={"content-type": content_type})

    return [("/healthz", healthz), ("/readyz", readyz), ("/metrics", metrics)]
