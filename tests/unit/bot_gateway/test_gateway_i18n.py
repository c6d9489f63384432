"""Every sentence the gateway can say has a Russian and an English translation, with the same
placeholders, and the compiled catalogs are the current ones."""

from __future__ import annotations

import gettext
import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

import bot_gateway

PACKAGE = Path(bot_gateway.__file__).parent
LOCALES = ("ru", "en")


KEYWORDS = {"_": None, "ngettext": (1, 2)}
PLURAL_FORMS = {"ru": 3, "en": 2}


def source_messages() -> set[str]:
    found = extract_from_dir(str(PACKAGE), keywords=KEYWORDS, method_map=[("**.py", "python")])
    return {
        message for _file, _line, message, _comments, _context in found if isinstance(message, str)
    }


def source_plurals() -> set[tuple[str, str]]:
    found = extract_from_dir(str(PACKAGE), keywords=KEYWORDS, method_map=[("**.py", "python")])
    return {
        message
        for _file, _line, message, _comments, _context in found
        if isinstance(message, tuple)
    }


def catalog(locale: str) -> dict[str, str]:
    path = PACKAGE / "locales" / locale / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as file:
        return {m.id: m.string for m in read_po(file) if m.id and isinstance(m.id, str)}


def plural_catalog(locale: str) -> dict[tuple[str, str], tuple[str, ...]]:
    path = PACKAGE / "locales" / locale / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as file:
        return {tuple(m.id): tuple(m.string) for m in read_po(file) if isinstance(m.id, tuple)}


def test_the_sources_use_gettext_at_all() -> None:
    assert len(source_messages()) > 50


@pytest.mark.parametrize("locale", LOCALES)
def test_every_message_is_translated_with_the_same_placeholders(locale: str) -> None:
    translations = catalog(locale)
    missing = sorted(m for m in source_messages() if not translations.get(m))
    assert missing == [], f"untranslated in {locale}: {missing}"
    for message, translation in translations.items():
        assert set(re.findall(r"{\w+}", message)) == set(re.findall(r"{\w+}", translation)), message


@pytest.mark.parametrize("locale", LOCALES)
def test_every_count_has_each_plural_form_with_the_same_placeholders(locale: str) -> None:
    translations = plural_catalog(locale)
    assert source_plurals()
    for ids in source_plurals():
        forms = translations.get(ids, ())
        assert len(forms) == PLURAL_FORMS[locale], f"{locale}: {ids[0]}"
        assert all(forms), f"{locale}: {ids[0]}"
        for form in forms:
            assert set(re.findall(r"{\w+}", ids[1])) == set(re.findall(r"{\w+}", form)), form


@pytest.mark.parametrize("locale", LOCALES)
def test_the_compiled_catalog_matches_its_source(locale: str) -> None:
    directory = PACKAGE / "locales" / locale / "LC_MESSAGES"
    with (directory / "messages.mo").open("rb") as file:
        compiled = gettext.GNUTranslations(file)
    stale = [m for m, t in catalog(locale).items() if compiled.gettext(m) != t]
    stale += [
        ids[0]
        for ids, forms in plural_catalog(locale).items()
        if [compiled.ngettext(*ids, n) for n in (1, 2, 5)] != [forms[0], forms[1], forms[-1]]
    ]
    assert stale == [], "run `make locales` to recompile"


def test_russian_is_really_russian() -> None:
    translations = catalog("ru")
    assert translations["Choose the language:"] == "Выберите язык:"
    latin_only = [
        t
        for m, t in translations.items()
        if re.search(r"[a-z]{4}", m) and not re.search("[а-я]", t)
    ]
    assert latin_only == []


def test_a_job_from_before_us_shows_its_status_in_words() -> None:
    """Legacy rows carry only the seed's `queued`: /history must not show the raw value."""
    from aiogram.utils.i18n import I18n

    from bot_gateway import texts

    i18n = I18n(path=PACKAGE / "locales", default_locale="ru", domain="messages")
    with i18n.context(), i18n.use_locale("ru"):
        assert texts.job_status("queued") == texts.job_status("dispatched") == "в очереди"


@pytest.mark.parametrize(
    ("locale", "amount", "balance", "price"),
    [
        ("ru", 1, "Ваш баланс: 1 кредит.", "Стоимость: 1 кредит."),
        ("ru", 3, "Ваш баланс: 3 кредита.", "Стоимость: 3 кредита."),
        ("ru", 11, "Ваш баланс: 11 кредитов.", "Стоимость: 11 кредитов."),
        ("ru", 21, "Ваш баланс: 21 кредит.", "Стоимость: 21 кредит."),
        ("ru", 60, "Ваш баланс: 60 кредитов.", "Стоимость: 60 кредитов."),
        ("en", 1, "Your balance: 1 credit.", "Price: 1 credit."),
        ("en", 60, "Your balance: 60 credits.", "Price: 60 credits."),
    ],
)
def test_counts_agree_with_their_nouns(locale: str, amount: int, balance: str, price: str) -> None:
    """«1 кредитов», «Price: 1 credits» read wrong: a count takes its noun's plural form."""
    from aiogram.utils.i18n import I18n

    from bot_gateway import texts

    i18n = I18n(path=PACKAGE / "locales", default_locale="ru", domain="messages")
    with i18n.context(), i18n.use_locale(locale):
        assert texts.balance_line(amount) == balance
        assert price in texts.confirm("Эскиз", amount)


def test_a_fraction_of_a_credit_reads_right_in_russian() -> None:
    from decimal import Decimal

    from aiogram.utils.i18n import I18n

    from bot_gateway import texts

    i18n = I18n(path=PACKAGE / "locales", default_locale="ru", domain="messages")
    with i18n.context(), i18n.use_locale("ru"):
        assert texts.balance_line(Decimal("12.5")) == "Ваш баланс: 12,5 кредита."
