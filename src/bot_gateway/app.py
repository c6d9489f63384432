"""The bot gateway's composition root: the aiogram dispatcher and bot, the event consumer,
the outbound sender, and the service runtime's ASGI app that runs them all."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from aiogram import Bot, Dispatcher, methods
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.methods.base import Response
from aiogram.utils.i18n import I18n
from faststream.asgi import AsgiFastStream

from bot_gateway import broadcasts, stars_refunds, user_profile, user_stats
from bot_gateway.albums import Albums
from bot_gateway.backends import Backends
from bot_gateway.commands import publish_commands
from bot_gateway.conversation import Conversation
from bot_gateway.dispatcher import TrackingDispatcher
from bot_gateway.erasure import Erasure
from bot_gateway.errors import error_handler
from bot_gateway.fingerprints import UploadFingerprints
from bot_gateway.fsm_storage import PostgresStorage
from bot_gateway.handlers import register_handlers
from bot_gateway.late_answers import LateAnswers
from bot_gateway.limits import RateLimiter
from bot_gateway.middlewares import AccountMiddleware, FloodMiddleware, LanguageMiddleware
from bot_gateway.models import DELIVERY
from bot_gateway.moderation_queue import ModerationQueue
from bot_gateway.moderation_queue import register as register_moderation
from bot_gateway.notifications import Notifications
from bot_gateway.rate_limited import RateLimitedRequests
from bot_gateway.recent_jobs import RecentJobs
from bot_gateway.restrictions import Restrictions
from bot_gateway.results import Results
from bot_gateway.retention import RetentionSettings, UploadRetention
from bot_gateway.routers import feature_routers
from bot_gateway.screening import PromptScreening, RestrictionGate, Screening
from bot_gateway.sender import OutboundSender
from bot_gateway.settings import (
    ConversationSettings,
    DeliverySettings,
    TelegramSettings,
)
from bot_gateway.snapshot import SnapshotMiddleware
from bot_gateway.split_texts import SplitTexts
from bot_gateway.throttling import FloodGuard
from bot_gateway.uploads import Uploads
from bot_gateway.webhook import PATH as WEBHOOK_PATH
from bot_gateway.webhook import TelegramWebhook
from messaging.rpc import RpcClient
from messaging.runtime import ServiceRuntime
from messaging.settings import InfrastructureSettings
from moderation import ModerationSettings, create_moderation
from object_store import ObjectStore, StorageSettings, create_object_store

log = logging.getLogger(__name__)

LOCALES = Path(__file__).parent / "locales"


@dataclass
class Settings(InfrastructureSettings):
    telegram: TelegramSettings = field(default_factory=TelegramSettings)
    conversation: ConversationSettings = field(default_factory=ConversationSettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    moderation: ModerationSettings = field(default_factory=ModerationSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)


@dataclass
class Gateway:
    """Everything `build` made, for tests and benchmarks that drive parts directly."""

    runtime: ServiceRuntime
    bot: Bot
    dispatcher: Dispatcher
    sender: OutboundSender
    conversation: Conversation
    backends: Backends
    webhook: TelegramWebhook
    app: AsgiFastStream
    results: Results


def create_bot(settings: TelegramSettings) -> Bot:
    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.api_url))
    return Bot(settings.bot_token.get_secret_value(), session=session)


RESPONSE_TYPES = tuple(
    Response[method.__returning__]  # type: ignore[name-defined]
    for method in (
        methods.AnswerCallbackQuery,
        methods.DeleteWebhook,
        methods.EditMessageText,
        methods.GetFile,
        methods.GetMe,
        methods.GetUpdates,
        methods.SendDocument,
        methods.SendMessage,
        methods.SendPhoto,
        methods.SetWebhook,
    )
)
"""aiogram parses every answer with `Response[<the method's result>]`; pydantic keeps such
generic classes only weakly, so without a reference they are rebuilt (schema and all) over and
over: a sixth of the gateway's CPU under load. Held here, each is built once."""


def build(
    settings: Settings | None = None, *, bot: Bot | None = None, store: ObjectStore | None = None
) -> Gateway:
    settings = settings or Settings()
    runtime = ServiceRuntime.of("bot_gateway", DELIVERY, settings)
    delivery = settings.delivery
    bot = bot or create_bot(settings.telegram)
    limiter = RateLimiter(
        global_rate_per_s=delivery.global_rate_per_s,
        chat_burst=delivery.chat_burst,
        chat_interval_s=delivery.chat_interval_s,
        group_interval_s=delivery.group_interval_s,
    )
    bot.session.middleware(
        RateLimitedRequests(limiter, retry_after_tries=delivery.retry_after_tries)
    )
    bot.session.middleware(LateAnswers())
    store = store or create_object_store(settings.storage)
    sender = OutboundSender(runtime.sessions, bot, store, delivery)
    rpc = RpcClient(
        settings.broker.url.get_secret_value(),
        runtime.topology,
        timeout_s=settings.broker.rpc_timeout_s,
    )
    backends = Backends(rpc, catalog_ttl_s=settings.conversation.catalog_ttl_s)
    recent_jobs = RecentJobs()  # what this process's Start and job events left, shared
    conversation = Conversation(
        runtime.unit_of_work, mail_committed=sender.notify, recent_jobs=recent_jobs
    )
    i18n = I18n(path=LOCALES, default_locale=settings.telegram.default_language, domain="messages")
    notifications = Notifications(
        i18n,
        default_language=settings.telegram.default_language,
        edit_interval_s=delivery.edit_interval_s,
        recent_jobs=recent_jobs,
        mail_committed=sender.notify,
    )
    restrictions = Restrictions.of(runtime.unit_of_work, settings.moderation)
    register_handlers(runtime.consumer, notifications, backends, restrictions)
    held = ModerationQueue(
        runtime.unit_of_work,
        store,
        i18n,
        default_language=settings.telegram.default_language,
        restrictions=restrictions,
        mail_committed=sender.notify,
    )
    register_moderation(runtime, held, restrictions)  # held inputs, bans (backend API)
    broadcasts.register(runtime, sender.notify)  # operators' broadcasts (the backend API)
    user_stats.register(runtime)  # the dashboard's users
    user_profile.register(runtime)  # a user's language and /start source, for the operators
    stars_refunds.register(runtime.consumer, bot)  # refundStarPayment, asked by billing
    uploads = UploadRetention(
        store, settings.conversation.upload_prefix, settings.retention.upload_days
    )
    runtime.every(settings.retention.purge_interval_s, "purge_uploads", uploads.purge)
    runtime.every(
        3600.0, "purge_outbound", lambda: sender.purge_sent(settings.outbox.retention_days)
    )
    results = Results(runtime.unit_of_work, store, settings.conversation)
    runtime.every(settings.conversation.result_purge_interval_s, "purge_results", results.purge)
    dispatcher = _dispatcher(settings, runtime, i18n, conversation, backends, store, results, held)
    webhook = TelegramWebhook(dispatcher, bot, settings.telegram.webhook_secret.get_secret_value())
    routes = [(WEBHOOK_PATH, webhook)] if settings.telegram.mode == "webhook" else []
    updates = _Updates(settings.telegram, dispatcher, bot, webhook)
    runtime.while_stopping(updates.stop)  # no new updates; those in hand finish and commit
    app = runtime.app(routes)

    @app.after_startup
    async def start_bot() -> None:
        sender.start()
        await publish_commands(bot, i18n, settings.telegram.foreign_language)
        await updates.start()

    @app.on_shutdown
    async def stop_bot() -> None:
        """After the updates in hand finished and the outbox was flushed."""
        await sender.stop()
        await bot.session.close()
        await rpc.close()

    return Gateway(runtime, bot, dispatcher, sender, conversation, backends, webhook, app, results)


def create_app(
    settings: Settings | None = None, *, bot: Bot | None = None, store: ObjectStore | None = None
) -> AsgiFastStream:
    """The bot gateway as an ASGI app: polling or webhook, consumer, sender, /healthz."""
    return build(settings, bot=bot, store=store).app


def _dispatcher(
    settings: Settings,
    runtime: ServiceRuntime,
    i18n: I18n,
    conversation: Conversation,
    backends: Backends,
    store: ObjectStore,
    results: Results,
    held: ModerationQueue,
) -> TrackingDispatcher:
    storage = PostgresStorage(runtime.engine)
    # on without its detector: ModerationUnavailableError, and the gateway does not start
    moderation = create_moderation(settings.moderation)
    restrictions = Restrictions.of(runtime.unit_of_work, settings.moderation)
    fingerprints = UploadFingerprints(
        runtime.unit_of_work, settings.moderation.shared_upload_accounts
    )
    screening = Screening(moderation, restrictions, fingerprints)
    dispatcher = TrackingDispatcher(
        storage=storage,
        conversation=conversation,
        backends=backends,
        results=results,
        uploads=Uploads(store, settings.conversation, screening),
        erasing=Erasure(runtime.unit_of_work, store, settings.conversation.upload_prefix),
        limits=settings.conversation,
        moderation_queue=held,
    )
    flood = FloodMiddleware(
        FloodGuard(
            burst=settings.conversation.flood_messages,
            interval_s=settings.conversation.flood_interval_s,
        )
    )
    # first: an album's photos, and a long text's parts, are one update before anything reads
    # or answers them
    dispatcher.update.outer_middleware(Albums(window_s=settings.conversation.album_window_s))
    dispatcher.update.outer_middleware(
        SplitTexts(
            window_s=settings.conversation.split_text_window_s,
            min_part_length=settings.conversation.split_text_min_length,
        )
    )
    SnapshotMiddleware(storage, dispatcher.fsm).install(dispatcher.update)
    language = LanguageMiddleware(i18n, settings.telegram.foreign_language)
    account = AccountMiddleware(conversation, backends)
    for observer in (dispatcher.message, dispatcher.callback_query):
        observer.outer_middleware(language)
        observer.outer_middleware(flood)
        observer.outer_middleware(account)
    gate = RestrictionGate(restrictions)  # banned, suspended, slowed down: before any handler
    dispatcher.message.middleware(gate)
    dispatcher.callback_query.middleware(gate)
    dispatcher.message.middleware(PromptScreening(screening))  # words, before any handler
    dispatcher.my_chat_member.outer_middleware(language)  # added to a group, blocked, back
    dispatcher.pre_checkout_query.outer_middleware(language)  # a refusal's reason, in theirs
    dispatcher.errors.register(error_handler(i18n, settings.telegram.foreign_language))
    dispatcher.include_routers(*feature_routers(settings.telegram.admins))
    return dispatcher


class _Updates:
    """Polling (started here, stopped before shutdown) or the webhook (registered with Telegram)."""

    def __init__(
        self,
        settings: TelegramSettings,
        dispatcher: TrackingDispatcher,
        bot: Bot,
        webhook: TelegramWebhook,
    ) -> None:
        self._settings = settings
        self._dispatcher = dispatcher
        self._bot = bot
        self._webhook = webhook
        self._polling: asyncio.Task[None] | None = None

    async def start(self) -> None:
        allowed = self._dispatcher.resolve_used_update_types()
        if self._settings.mode == "webhook":
            await self._bot.set_webhook(
                self._settings.webhook_url + WEBHOOK_PATH,
                secret_token=self._settings.webhook_secret.get_secret_value(),
                allowed_updates=allowed,
            )
            return
        await self._bot.delete_webhook()  # getUpdates is refused while a webhook is set
        self._polling = asyncio.create_task(
            self._dispatcher.start_polling(
                self._bot,
                polling_timeout=self._settings.polling_timeout_s,
                handle_signals=False,
                close_bot_session=False,
                allowed_updates=allowed,
            ),
            name="gateway.polling",
        )

    async def stop(self) -> None:
        if self._polling is not None:
            with contextlib.suppress(RuntimeError):
                await self._dispatcher.stop_polling()
            with contextlib.suppress(Exception):
                await self._polling
        in_hand = [*self._webhook.in_flight, *self._dispatcher.in_hand]
        if in_hand:
            await asyncio.wait(in_hand, timeout=10)
