"""The seam billing gives the yookassa SDK's HTTP calls a socket timeout through.

The SDK passes no timeout to `requests`; `billing.yookassa_gateway` subclasses its resource
classes so their client's sessions carry our adapter. Every call billing makes is sent here to
a server that accepts and never answers: each must come back with an error once the socket
timeout passes. If an SDK upgrade moves the seam (how `Payment`/`Refund` make their client, or
how the client gets its session), the call hangs instead and this test fails.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from pydantic import SecretStr
from yookassa import Payment, Refund

from billing.settings import YooKassaSettings
from billing.yookassa_gateway import Shop, YooKassaGateway, _Client, _TimeoutAdapter

PLENTY_S = 30.0
"""How long a call may take before it counts as hung (its socket timeout is 0.2 s)."""


@pytest.fixture
def silent_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """An API URL whose server accepts connections and reads requests but never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v3", accepted
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


PAYMENT = "2f000000-000f-5000-8000-000000000000"
ONE_RUBLE = {"value": "1.00", "currency": "RUB"}
CALLS: dict[str, Callable[[YooKassaGateway], Any]] = {
    "Payment.create": lambda shop: shop.payments.create(
        {"amount": ONE_RUBLE, "confirmation": {"type": "redirect", "return_url": "https://t.me/"}},
        "key-1",
    ),
    "Payment.find_one": lambda shop: shop.payments.find_one(PAYMENT),
    "Payment.cancel": lambda shop: shop.payments.cancel(PAYMENT, "key-2"),
    "Refund.create": lambda shop: shop.refunds.create(
        {"payment_id": PAYMENT, "amount": ONE_RUBLE}, "key-3"
    ),
    "Refund.find_one": lambda shop: shop.refunds.find_one("2f000000-0015-5000-9000-000000000000"),
}


def gateway(api_url: str, shop_id: str = "100500", timeout_s: float = 0.2) -> YooKassaGateway:
    return YooKassaGateway(
        YooKassaSettings(
            shop_id=shop_id,
            secret_key=SecretStr("test_secret"),
            api_url=api_url,
            timeout_s=timeout_s,
        )
    )


@pytest.mark.parametrize("name", sorted(CALLS))
def test_every_sdk_call_billing_makes_times_out_at_the_socket(
    name: str, silent_server: tuple[str, list[socket.socket]], monkeypatch: pytest.MonkeyPatch
) -> None:
    api_url, accepted = silent_server
    shop = gateway(api_url)
    outcome: list[BaseException | None] = []

    def call() -> None:
        try:
            CALLS[name](shop)
            outcome.append(None)
        except BaseException as exc:  # what the gateway maps: AttributeError, RequestException
            outcome.append(exc)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(PLENTY_S)
    assert not worker.is_alive(), f"{name} hung: the SDK no longer goes through our transport"
    assert accepted, "the call never reached the server"
    [error] = outcome
    assert isinstance(error, AttributeError | requests.RequestException), repr(error)


def test_the_client_mounts_the_timeout_adapter_for_both_schemes() -> None:
    shop = gateway("http://127.0.0.1:9/v3")
    session = _Client(Shop("100500", "test_secret", "http://127.0.0.1:9/v3", 0.2)).get_session()
    for scheme in ("http://", "https://"):
        adapter = session.get_adapter(scheme + "example.org")
        assert isinstance(adapter, _TimeoutAdapter)
    assert shop.payments().client.__class__ is _Client
    assert shop.refunds().client.__class__ is _Client
    assert shop.payments is not Payment  # subclassed, the SDK left as it is
    assert shop.refunds is not Refund


def test_two_gateways_in_one_process_each_call_their_own_shop() -> None:
    # the SDK's own configuration is one per process: two billings (the tests' sandboxes)
    # would otherwise both call whichever was configured last
    first, second = gateway("http://127.0.0.1:1/v3", "1"), gateway("http://127.0.0.1:2/v3", "2")
    for shop, url, shop_id in (
        (first, "http://127.0.0.1:1/v3", "1"),
        (second, "http://127.0.0.1:2/v3", "2"),
    ):
        for client in (shop.payments().client, shop.refunds().client):
            assert (client.endpoint, client.shop_id) == (url, shop_id)
            assert client.prepare_request_headers(None)["Authorization"] == client.basic_auth(
                shop_id, "test_secret"
            )
