"""The backend API's composition root: broker, audit log, reads, the HTTP API and the panel.

One ASGI app: `/healthz`, `/readyz` and `/metrics` (and the broker's lifespan) are the service
runtime's, as on every service; every other path is FastAPI's (`/api/v1/...`, `/panel/...`,
`/openapi.json`, `/docs`).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field

from fastapi import FastAPI, Request, status
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from faststream.asgi import AsgiFastStream
from faststream.asgi.types import ASGIApp, Receive, Scope, Send
from starlette.exceptions import HTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Match

from backend_api import broadcasts, catalog, dashboard, job_orders, money, operations
from backend_api import commands as command_handlers
from backend_api.api import api_router
from backend_api.auth import Operators, PrincipalMiddleware
from backend_api.commands import Commands, IdempotencyConflictError
from backend_api.models import DELIVERY
from backend_api.moderation import register as register_moderation
from backend_api.panel import HOME, Panel
from backend_api.reads import Owners
from backend_api.settings import BackendApiSettings
from messaging.rpc import RpcClient
from messaging.runtime import ServiceRuntime
from messaging.settings import InfrastructureSettings
from object_store import StorageSettings, create_object_store

log = logging.getLogger(__name__)

SESSION_COOKIE = "imagebot_panel"


@dataclass
class Settings(InfrastructureSettings):
    backend_api: BackendApiSettings = field(default_factory=BackendApiSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    """Where preset icons go (the gateway's object store)."""


@dataclass
class BackendApi:
    """Everything `build` made, for tests that drive parts directly."""

    runtime: ServiceRuntime
    service: AsgiFastStream
    web: FastAPI
    commands: Commands
    app: ASGIApp
    operators: Operators


class _Composed:
    """The runtime's own paths (and the lifespan) to the service, the rest to the web app."""

    def __init__(self, service: AsgiFastStream, web: ASGIApp) -> None:
        self._service = service
        self._web = web
        self._service_paths = {path for path, _ in service.routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope["path"] not in self._service_paths:
            await self._web(scope, receive, send)
            return
        await self._service(scope, receive, send)


def build(settings: Settings | None = None) -> BackendApi:
    settings = settings or Settings()
    own = settings.backend_api
    runtime = ServiceRuntime.of("backend_api", DELIVERY, settings)
    command_handlers.register(runtime)
    broadcasts.register(runtime)
    money.register(runtime)
    catalog.register(runtime)
    job_orders.register(runtime)
    rpc = RpcClient(
        settings.broker.url.get_secret_value(),
        runtime.topology,
        timeout_s=settings.broker.rpc_timeout_s,
    )
    runtime.while_stopping(rpc.close)
    owners = Owners(rpc)
    commands = Commands(runtime, wait_s=own.command_wait_s, approval_above=own.approval_limits)
    operators = Operators(runtime.sessions, own)
    web = FastAPI(
        title="imagebot backend API",
        version="1",
        description=(
            "Operators' reads and writes. Reads come from the owning services; every write is "
            "a command with an idempotency key and a reason, applied once by its owner."
        ),
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    # Each area of operators' work adds its API routes and panel pages here (and its owners'
    # answers to `runtime` above); `api.guards`, `commands.submit`/`settle` and `Panel`'s
    # helpers are what they share.
    panel = Panel(owners, commands, operators, own.default_language)
    web.include_router(api_router(owners, commands, operators))
    web.include_router(panel.router())
    register_moderation(runtime, web, panel, rpc, commands, operators)  # queue, bans, signals
    operations.register(runtime, web, panel, rpc, commands, operators)  # DLQs, queues
    web.include_router(broadcasts.api_router(owners, commands, operators))
    web.include_router(broadcasts.BroadcastPages(panel, owners, commands).router())
    web.include_router(dashboard.api_router(owners, operators))
    web.include_router(dashboard.DashboardPage(panel, owners).router())
    web.include_router(money.api_router(owners, commands, operators))
    web.include_router(money.MoneyPages(panel, owners, commands).router())
    presets = catalog.Catalog(owners, commands, create_object_store(settings.storage))
    web.include_router(presets.api_router(operators))
    web.include_router(catalog.CatalogPanel(presets, panel).router())
    orders = job_orders.JobOrders(commands)
    web.include_router(orders.api_router(operators))
    web.include_router(orders.panel_router(panel))

    @web.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(HOME)

    @web.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 405:  # Starlette names the first matching route's methods only
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(_allowed(web, request))}
        if _on_panel(request):  # an operator's browser: a page, not the API's JSON
            return panel.error(request, exc.status_code, exc.headers or {})
        return await http_exception_handler(request, exc)

    @web.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        if _on_panel(request):  # a path's or query's value the page's parameters refuse
            return await http_error(request, HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT))
        return await request_validation_exception_handler(request, exc)

    @web.exception_handler(IdempotencyConflictError)
    async def key_reused(request: Request, exc: IdempotencyConflictError) -> Response:
        # A panel form sent again with other values (the browser's Back, another amount): its
        # key is the first command's. The API's writes answer it themselves (`command_answer`).
        conflict = HTTPException(status.HTTP_409_CONFLICT, detail="form sent twice")
        return await http_error(request, conflict)

    if not own.session_secret.get_secret_value():
        log.warning("BACKEND_API_SESSION_SECRET unset: panel cookies hold only on this process")
    secret = own.session_secret.get_secret_value() or secrets.token_hex(32)
    # the last added runs first: the cookie is read, then the session it names is looked up
    web.add_middleware(PrincipalMiddleware, operators=operators)
    web.add_middleware(
        SessionMiddleware,
        secret_key=secret,
        session_cookie=SESSION_COOKIE,
        max_age=own.session_max_age_s,
        same_site="strict",
        https_only=own.secure_cookies,
    )
    service = runtime.app()
    return BackendApi(runtime, service, web, commands, _Composed(service, web), operators)


def _on_panel(request: Request) -> bool:
    return f"{request.url.path}/".startswith("/panel/")


def create_app(settings: Settings | None = None) -> ASGIApp:
    """The backend API as an ASGI app: consumer, relay, /healthz, the API and the panel."""
    return build(settings).app


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed(web: FastAPI, request: Request) -> list[str]:
    """Every method some route takes at the request's path: each is asked whole, as routes
    included from routers are matched only through their router."""
    return [
        method
        for method in METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL
            for route in web.router.routes
        )
    ]
