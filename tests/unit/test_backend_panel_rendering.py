"""The panel's rendering helpers: the pager (rows shown, previous/next links that keep the
filters, a total the owner stopped counting at shown as "at least"), the status labels and the
error pages, in both languages."""

from __future__ import annotations

from typing import get_args

import pytest
from starlette.requests import Request

from backend_api.dashboard import Dashboard, charts
from backend_api.panel import PAGE, _environment, pager
from contracts.rpc import (
    JobStage,
    JobStats,
    LedgerKindName,
    MoneyStats,
    OutcomeCount,
    PaymentStatusName,
    PaymentTypeName,
    UserStats,
)

pytestmark = pytest.mark.unit


def request(query: str) -> Request:
    scope = {"type": "http", "path": "/panel/jobs", "query_string": query.encode(), "headers": []}
    return Request(scope)


def shown(language: str, **page: object) -> str:
    macros = _environment(language).get_template("macros.html").module
    keys = ("total", "first_row", "last_row", "previous", "next")
    return " ".join(str(macros.pager(*(page[key] for key in keys), page["total_exact"])).split())  # type: ignore[attr-defined]


def test_a_middle_page_links_both_ways_and_keeps_the_filters() -> None:
    page = pager(request("status=failed&offset=50"), 50, 120)
    assert (page["first_row"], page["last_row"], page["total_exact"]) == (51, 100, True)
    assert page["previous"] == "/panel/jobs?status=failed&offset=0"
    assert page["next"] == f"/panel/jobs?status=failed&offset={50 + PAGE}"
    assert "51–100 из 120" in shown("ru", **page)


def test_an_empty_list_shows_none_and_no_links() -> None:
    page = pager(request(""), 0, 0)
    assert (page["first_row"], page["last_row"], page["previous"], page["next"]) == (
        0,
        0,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("language", "text"),
    [("ru", "1–50 из не менее чем 1000"), ("en", "1–50 of at least 1000")],
)
def test_a_total_counted_no_further_is_shown_as_at_least(language: str, text: str) -> None:
    page = pager(request(""), 0, 1000, exact=False)
    assert page["next"] is not None
    assert text in shown(language, **page)
    assert text not in shown(language, **{**page, "total_exact": True})


CODES = [
    *get_args(JobStage),
    *get_args(PaymentStatusName),
    *get_args(PaymentTypeName),
    *get_args(LedgerKindName),
]
COMMAND_STATUSES = ["pending", "awaiting_approval", "applied", "refused", "rejected"]


@pytest.mark.parametrize("code", sorted({*CODES, *COMMAND_STATUSES, "unknown"}))
def test_every_status_a_page_shows_is_in_words_in_russian(code: str) -> None:
    label = _environment("ru").filters["label"]
    assert label(code) != code  # translated (an untranslated one would show the code)
    assert _environment("en").filters["label"](code).replace(" ", "_") == code
    assert label(None) == "—"


@pytest.mark.parametrize("status", [403, 404, 405, 409, 422, 502])
def test_an_error_page_says_what_happened_in_both_languages(status: int) -> None:
    page = {"status": status, "request": request(""), "languages": ("ru", "en"), "csrf": "t"}
    russian, english = (
        _environment(language).get_template("error.html").render(**page, language=language)
        for language in ("ru", "en")
    )
    heading = english.split("<h1>")[1].split("</h1>")[0]
    assert heading not in russian  # translated
    assert 'href="/panel/dashboard"' in russian


def test_the_dashboards_outcomes_are_in_words() -> None:
    figures = Dashboard(
        days=7,
        users=UserStats(
            users=0, blocked=0, new_per_day=[], active_1d=0, active_7d=0, active_30d=0, sources=[]
        ),
        jobs=JobStats(outcomes=[OutcomeCount(status="completed", jobs=2)], presets=[]),
        money=MoneyStats(days=[], bonus_weeks=[]),
    )
    chart = charts(figures, _environment("ru").filters["label"])["outcomes"]
    assert [label.text for label in chart.labels][:1] == ["готово"]  # type: ignore[attr-defined]


def test_a_commands_details_read_as_written_and_stay_escaped() -> None:
    details = {"text": "Спасибо, что вы с нами! <b>", "languages": ["ru"]}
    shown = _environment("ru").from_string("{{ details | tojson }}").render(details=details)
    assert "Спасибо, что вы с нами!" in shown
    assert "<b>" not in shown  # escaped for the page (\u003cb\u003e)
