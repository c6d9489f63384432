"""The gateway's calls to billing and jobs: every way they can fail to answer is "busy"."""

from __future__ import annotations

from typing import Any, cast

import pytest
from aiormq.exceptions import AMQPConnectionError, ChannelInvalidStateError

from bot_gateway.backends import Backends, ServiceBusyError
from messaging.rpc import RpcClient, RpcRefusedError


class FailingRpc:
    def __init__(self, error: BaseException) -> None:
        self._error = error

    async def call(self, request: Any, result_type: Any) -> Any:
        raise self._error


@pytest.mark.parametrize(
    "error",
    [
        TimeoutError(),
        RpcRefusedError("internal", "billing broke"),
        AMQPConnectionError("Connect call failed"),
        ConnectionResetError(),
        ChannelInvalidStateError("writer is None"),  # the channel closed by a broker restart
    ],
)
async def test_a_backend_that_does_not_answer_is_busy(error: BaseException) -> None:
    backends = Backends(cast("RpcClient", FailingRpc(error)), catalog_ttl_s=60)
    with pytest.raises(ServiceBusyError):
        await backends.packages()


async def test_a_bug_is_not_called_busy() -> None:
    backends = Backends(cast("RpcClient", FailingRpc(ValueError("a bug"))), catalog_ttl_s=60)
    with pytest.raises(ValueError, match="a bug"):
        await backends.packages()
