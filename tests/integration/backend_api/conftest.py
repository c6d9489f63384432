"""The backend API against the real billing and jobs services (in process, one database of
their own, a broker namespace per test), served over HTTP on a free port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import uvicorn
from playwright.async_api import Browser, Page, async_playwright
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from backend_api.app import Settings as BackendApp
from backend_api.app import build
from backend_api.passwords import hash_password
from backend_api.settings import BackendApiSettings
from billing.app import build as build_billing
from contracts.topology import Topology
from jobs.app import Settings as JobsApp
from jobs.app import create_app as create_jobs
from jobs.settings import JobsSettings
from messaging.settings import BrokerSettings, DatabaseSettings, OutboxSettings, ServiceSettings
from object_store import StorageSettings
from sandbox.stack import free_port
from sandbox.yookassa import YooKassaSandbox
from support.backend_gateway import bot_side
from support.backend_harness import PASSWORD, Running, seat_operators
from support.billing_harness import make_settings
from support.database import DatabaseFactory, engine_at, migrated_database

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's chromium: Playwright's own browser download is not reachable here."""
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def chromium() -> Path:
    assert CHROMIUM.exists(), "Debian's chromium is missing: run `make install`"
    return CHROMIUM


@pytest.fixture(scope="session")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    """One headless Chromium for every panel test (each page a context of its own)."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_FLAGS
        )
        yield browser
        await browser.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh browser context (no cookies: signed out), in Russian, the panel's first language."""
    context = await browser.new_context(locale="ru-RU")
    page = await context.new_page()
    page.set_default_timeout(20_000)
    yield page
    await context.close()


@pytest.fixture(scope="session")
async def backend_database_url(databases: DatabaseFactory) -> str:
    return await migrated_database(databases, "backend_api")


@pytest.fixture(scope="session")
async def backend_engine(backend_database_url: str) -> AsyncIterator[AsyncEngine]:
    async with engine_at(backend_database_url) as engine:
        yield engine


@pytest.fixture(scope="session")
def operator_hash() -> str:
    return hash_password(PASSWORD)


@pytest.fixture(scope="session")
def objects_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The object store's directory (preset icons) behind the API."""
    return tmp_path_factory.mktemp("objects")


@pytest.fixture
async def running(
    backend_database_url: str,
    amqp_url: str,
    topology: Topology,
    operator_hash: str,
    tmp_path: Path,
    objects_root: Path,
) -> AsyncIterator[Running]:
    """Billing, jobs, the gateway (with the fake Telegram) and the backend API, started; the
    API served at `running.url`."""
    database = DatabaseSettings(url=backend_database_url)  # type: ignore[arg-type]
    broker = BrokerSettings(url=amqp_url, namespace=topology.namespace)  # type: ignore[arg-type]
    async with AsyncExitStack() as stack:
        fake = YooKassaSandbox()
        await fake.start()
        stack.push_async_callback(fake.stop)
        billing = build_billing(make_settings(backend_database_url, amqp_url, topology, fake))
        await stack.enter_async_context(billing.app)
        jobs = create_jobs(
            JobsApp(
                jobs=JobsSettings(dispatch_interval_s=3600, sweep_interval_s=3600),
                database=database,
                broker=broker,
                outbox=OutboxSettings(poll_interval_s=0.1),
                service=ServiceSettings(graceful_timeout_s=5),
            )
        )
        await stack.enter_async_context(jobs)
        bot = await stack.enter_async_context(
            bot_side(backend_database_url, amqp_url, topology, tmp_path)
        )
        backend = build(
            BackendApp(
                backend_api=BackendApiSettings(
                    session_secret=SecretStr("test-session-secret-" + "x" * 32),
                    command_wait_s=15,
                ),
                database=database,
                broker=broker,
                outbox=OutboxSettings(poll_interval_s=0.1),
                service=ServiceSettings(graceful_timeout_s=5),
                storage=StorageSettings(local_root=objects_root),
            )
        )
        await stack.enter_async_context(backend.service)
        tokens = await seat_operators(backend, operator_hash)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                backend.app, host="127.0.0.1", port=port, lifespan="off", log_config=None
            )
        )
        serving = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 (uvicorn's flag; no event to wait on)
            await asyncio.sleep(0.02)

        async def stop_serving() -> None:
            server.should_exit = True
            await serving

        stack.push_async_callback(stop_serving)
        yield Running(
            backend,
            f"http://127.0.0.1:{port}",
            billing=billing,
            yookassa=fake,
            tokens=tokens,
            bot=bot,
        )
