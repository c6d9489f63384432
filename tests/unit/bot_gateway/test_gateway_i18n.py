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


def source_messages() -> set[str]:
    found = extract_from_dir(str(PACKAGE), keywords={"_": None}, method_map=[("**.py", "python")])
    return {message for _file, _line, message, _comments, _context in found}


def catalog(locale: str) -> dict[str, str]:
    path = PACKAGE / "locales" / locale / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as file:
        return {m.id: m.string for m in read_po(file) if m.id and isinstance(m.id, str)}


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
def test_the_compiled_catalog_matches_its_source(locale: str) -> None:
    directory = PACKAGE / "locales" / locale / "LC_MESSAGES"
    with (directory / "messages.mo").open("rb") as file:
        compiled = gettext.GNUTranslations(file)
    stale = [m for m, t in catalog(locale).items() if compiled.gettext(m) != t]
    assert stale == [], "run `make locales` to recompile"


def test_russian_is_really_russian() -> None:
    translations = catalog("ru")
    assert translations["Your balance: {balance} credits."] == "Ваш баланс: {balance} кредитов."
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
