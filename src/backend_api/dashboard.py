"""The dashboard, the panel's home page: users (new per day, active within 1/7/30 days, by
`/start` source) from the gateway, jobs by outcome and success rate and revenue per preset from
jobs, revenue and refunds per day and currency and the weekly bonus's cost from billing; in the
API (`/api/v1/dashboard`, the figures as JSON) and the panel (`/panel/dashboard`, as charts).

The charts are inline SVG drawn by the template from the geometry computed here: nothing is
fetched by the browser (no script, no CDN), and their words come from the panel's catalogs.
"""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, TypeVar

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import BaseModel

from backend_api.api import ERRORS, guards
from backend_api.auth import Operators
from backend_api.panel import Panel
from backend_api.reads import Owners
from contracts.rpc import (
    CountJobs,
    CountMoney,
    CountUsers,
    JobStats,
    MoneyDay,
    MoneyStats,
    UserStats,
)

PERIODS = (7, 30, 90)
"""The panel's choice of periods, in days."""
T = TypeVar("T")

WIDTH = 640
LABEL_W = 190
ROW_H = 22
PLOT_H = 140
COLORS = {"main": "#3f51b5", "second": "#e57373", "ok": "#2e7d32", "bad": "#c62828"}


class Dashboard(BaseModel):
    days: int
    """The period the figures cover, ending today (UTC)."""
    users: UserStats
    jobs: JobStats
    money: MoneyStats


# --- charts: geometry for inline SVG ------------------------------------------------------


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    color: str
    title: str


@dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str
    anchor: str = "start"


@dataclass
class Chart:
    width: int
    height: int
    rects: list[Rect] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)


def bars(rows: Sequence[tuple[str, float, str]], color: str = COLORS["main"]) -> Chart:
    """A horizontal bar per (label, value, shown value), scaled to the largest."""
    top = max((value for _, value, _ in rows), default=0) or 1
    plot = WIDTH - LABEL_W - 90
    chart = Chart(WIDTH, max(len(rows), 1) * ROW_H + 4)
    for index, (label, value, shown) in enumerate(rows):
        y = index * ROW_H + 2
        width = plot * value / top
        chart.rects.append(Rect(LABEL_W, y + 3, width, ROW_H - 6, color, f"{label}: {shown}"))
        chart.labels.append(Label(LABEL_W - 6, y + ROW_H - 7, _short(label), "end"))
        chart.labels.append(Label(LABEL_W + width + 6, y + ROW_H - 7, shown))
    return chart


def columns(
    days: Sequence[date],
    series: Sequence[tuple[dict[date, float], str]],
    shown: Callable[[float], str] | None = None,
) -> Chart:
    """A column per day for each series (side by side), scaled to the largest, with the
    largest value and some dates written along the axes."""
    top = max((value for values, _ in series for value in values.values()), default=0) or 1
    left, bottom = 8, 18
    slot = (WIDTH - left) / max(len(days), 1)
    width = max(slot / max(len(series), 1) - 1, 1)
    chart = Chart(WIDTH, PLOT_H + bottom + 14)
    for index, day in enumerate(days):
        for number, (values, color) in enumerate(series):
            value = values.get(day, 0)
            if value <= 0:
                continue
            height = PLOT_H * value / top
            title = f"{day.isoformat()}: {(shown or _number)(value)}"
            x = left + index * slot + number * (width + 1)
            chart.rects.append(Rect(x, 14 + PLOT_H - height, width, height, color, title))
        if index % max(len(days) // 6, 1) == 0:
            chart.labels.append(
                Label(left + index * slot, PLOT_H + bottom + 10, day.strftime("%d.%m"))
            )
    chart.labels.append(Label(left, 10, (shown or _number)(top)))
    return chart


def _short(label: str, most: int = 24) -> str:
    """A bar's label that fits left of it."""
    return label if len(label) <= most else label[: most - 1] + "…"


def _number(value: float) -> str:
    return f"{value:,.0f}".replace(",", " ")


def money(amount: int, currency: str) -> str:
    """Kopecks as rubles; Stars as they are (XTR)."""
    if currency == "RUB":
        return f"{amount / 100:,.2f} ₽".replace(",", " ")
    if currency == "XTR":  # no star glyph: not every font has one
        return f"{_number(amount)} XTR"
    return f"{amount / 100:,.2f} {currency}".replace(",", " ")


def period(days: int) -> list[date]:
    today = datetime.now(UTC).date()
    return [today - timedelta(days=offset) for offset in range(days - 1, -1, -1)]


def charts(figures: Dashboard, label: Callable[[str], str] = str) -> dict[str, object]:
    """The dashboard's charts, by name, for `dashboard.html`; `label` puts a job's outcome
    (a status code) in the operator's words."""
    days = period(figures.days)
    users = figures.users
    result: dict[str, object] = {
        "new_users": columns(
            days, [({one.day: one.count for one in users.new_per_day}, COLORS["main"])]
        ),
        "sources": bars(
            [(one.source or "—", one.users, _number(one.users)) for one in users.sources]
        ),
        "outcomes": bars(
            [(label(one.status), one.jobs, _number(one.jobs)) for one in figures.jobs.outcomes]
        ),
        "success": bars(
            [
                (_preset(one.preset_id, one.name), one.success_rate or 0, _rate(one.success_rate))
                for one in figures.jobs.presets
            ],
            COLORS["ok"],
        ),
        "preset_revenue": bars(
            [
                (_preset(one.preset_id, one.name), one.revenue, _number(one.revenue))
                for one in figures.jobs.presets
            ]
        ),
        "bonus": bars(
            [
                (one.week.isoformat(), one.credits, f"{_number(one.credits)} / {one.users}")
                for one in figures.money.bonus_weeks
            ],
            COLORS["second"],
        ),
    }
    result["money"] = {
        currency: _money_chart(days, figures.money.days, currency)
        for currency in sorted({one.currency for one in figures.money.days} | {"RUB", "XTR"})
    }
    return result


def _money_chart(days: list[date], rows: list[MoneyDay], currency: str) -> dict[str, object]:
    mine = [one for one in rows if one.currency == currency]
    revenue = {one.day: float(one.revenue) for one in mine}
    refunds = {one.day: float(one.refunds) for one in mine}
    return {
        "chart": columns(
            days,
            [(revenue, COLORS["main"]), (refunds, COLORS["second"])],
            lambda value: money(int(value), currency),
        ),
        "revenue": money(sum(one.revenue for one in mine), currency),
        "refunds": money(sum(one.refunds for one in mine), currency),
        "payments": sum(one.payments for one in mine),
    }


def _preset(preset_id: int | None, name: str | None) -> str:
    if preset_id is None:
        return "✎"  # the user's own prompt
    return f"{name or '?'} (#{preset_id})"


def _rate(rate: float | None) -> str:
    return "—" if rate is None else f"{rate:.0%}"


# --- the API and the panel ----------------------------------------------------------------


async def figures(owners: Owners, days: int) -> Dashboard:
    """The three owners' figures, asked at once: the page waits for the slowest, not the sum."""
    users, jobs, money_ = await asyncio.gather(
        owners.user_stats(CountUsers(days=days)),
        owners.job_stats(CountJobs(days=days)),
        owners.money_stats(CountMoney(days=days)),
    )
    return Dashboard(days=days, users=users, jobs=jobs, money=money_)


def api_router(owners: Owners, operators: Operators) -> APIRouter:
    guard = guards(operators)
    router = APIRouter(prefix="/api/v1", responses=ERRORS, tags=["dashboard"])

    @router.get("/dashboard")
    async def dashboard(
        _: Annotated[str, guard.viewer], days: Annotated[int, Query(ge=1, le=366)] = 30
    ) -> Dashboard:
        """The dashboard's figures over the last `days` (UTC days, today included): users
        (gateway), jobs (jobs), money and the weekly bonus's cost (billing)."""
        return await figures(owners, days)

    return router


class DashboardPage:
    def __init__(self, panel: Panel, owners: Owners) -> None:
        self._panel = panel
        self._owners = owners

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/panel", include_in_schema=False)
        router.add_api_route("/dashboard", self.show, methods=["GET"])
        return router

    async def show(self, request: Request, days: int = 30) -> Response:
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        days = days if days in PERIODS else 30
        users, jobs, money_ = await asyncio.gather(
            _answer(self._owners.user_stats(CountUsers(days=days))),
            _answer(self._owners.job_stats(CountJobs(days=days))),
            _answer(self._owners.money_stats(CountMoney(days=days))),
        )
        figures_ = Dashboard(
            days=days,
            users=users
            or UserStats(
                users=0,
                blocked=0,
                new_per_day=[],
                active_1d=0,
                active_7d=0,
                active_30d=0,
                sources=[],
            ),
            jobs=jobs or JobStats(outcomes=[], presets=[]),
            money=money_ or MoneyStats(days=[], bonus_weeks=[]),
        )
        context = {
            "days": days,
            "periods": PERIODS,
            "figures": figures_,
            "silent": {
                "users": users is None,
                "jobs": jobs is None,
                "money": money_ is None,
            },
            "charts": charts(figures_, self._panel.label(request)),
            "money": money,
        }
        return self._panel.render(request, "dashboard.html", context)


async def _answer(read: Awaitable[T]) -> T | None:
    """An owner's figures, or None when it did not answer: the page shows the others."""
    try:
        return await read
    except HTTPException:
        return None
