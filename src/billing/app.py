"""Billing's composition root."""

from __future__ import annotations

from dataclasses import dataclass, field

from faststream.asgi import AsgiFastStream

from billing import dashboard, operator_money
from billing.bonus import WeeklyBonus
from billing.farming import register as register_farming
from billing.handlers import register
from billing.models import DELIVERY
from billing.reconcile import Reconciler
from billing.settings import BillingSettings, BonusSettings, WebhookSettings, YooKassaSettings
from billing.topups import TopUps
from billing.webhook import YooKassaWebhook
from billing.yookassa_gateway import PaymentProvider, YooKassaGateway
from messaging.runtime import ServiceRuntime
from messaging.settings import InfrastructureSettings

WEBHOOK_PATH = "/webhooks/yookassa"


@dataclass
class Settings(InfrastructureSettings):
    billing: BillingSettings = field(default_factory=BillingSettings)
    yookassa: YooKassaSettings = field(default_factory=YooKassaSettings)
    bonus: BonusSettings = field(default_factory=BonusSettings)
    webhook: WebhookSettings = field(default_factory=WebhookSettings)


@dataclass
class Billing:
    """Everything `create_app` built, for tests and tools that drive parts directly."""

    runtime: ServiceRuntime
    topups: TopUps
    webhook: YooKassaWebhook
    bonus: WeeklyBonus
    reconciler: Reconciler
    app: AsgiFastStream


def build(settings: Settings | None = None, *, yookassa: PaymentProvider | None = None) -> Billing:
    settings = settings or Settings()
    runtime = ServiceRuntime.of("billing", DELIVERY, settings)
    provider = yookassa or YooKassaGateway(settings.yookassa)
    topups = TopUps(provider, settings.billing, settings.yookassa)
    register(runtime, settings.billing, topups)
    register_farming(runtime, settings.billing, settings.bonus)  # shared uploads, signals
    dashboard.register(runtime)  # the backend API's dashboard: money per day, bonus cost
    operator_money.register(runtime, provider, settings.yookassa)
    webhook = YooKassaWebhook(settings.webhook, provider, runtime.unit_of_work)
    bonus = WeeklyBonus(runtime.unit_of_work, settings.bonus, settings.billing)
    reconciler = Reconciler(runtime.unit_of_work, provider, settings.billing, settings.yookassa)
    runtime.every(settings.bonus.interval_s, "weekly_bonus", bonus.run_once)
    runtime.every(settings.billing.reconcile_interval_s, "reconcile", reconciler.run_once)
    app = runtime.app(routes=[(WEBHOOK_PATH, webhook)])
    return Billing(runtime, topups, webhook, bonus, reconciler, app)


def create_app(
    settings: Settings | None = None, *, yookassa: PaymentProvider | None = None
) -> AsgiFastStream:
    """The billing service as an ASGI app: consumer, rpc, loops, /healthz and the webhook."""
    return build(settings, yookassa=yookassa).app
