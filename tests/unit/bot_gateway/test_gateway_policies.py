"""The operator's /paysupport, /terms and /privacy texts: per language, both ru and en needed."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from bot_gateway.settings import ConversationSettings


def test_the_configured_text_in_the_users_language_and_english_for_another() -> None:
    texts = json.dumps({"ru": "Пишите на pay@shop.ru", "en": "Write to pay@shop.ru"})
    settings = ConversationSettings(paysupport_texts=texts)
    assert settings.policy("paysupport", "ru") == "Пишите на pay@shop.ru"
    assert settings.policy("paysupport", "en") == "Write to pay@shop.ru"
    assert settings.policy("paysupport", "de") == "Write to pay@shop.ru"
    assert settings.policy("terms", "ru") != settings.policy("terms", "en")


@pytest.mark.parametrize(
    "texts",
    [
        '{"ru": "Только по-русски"}',
        '{"ru": "", "en": "empty ru"}',
        '["ru", "en"]',
        "not json",
    ],
)
def test_a_text_missing_a_language_or_empty_is_refused(texts: str) -> None:
    with pytest.raises((ValidationError, ValueError)):
        ConversationSettings(privacy_texts=texts)
