"""The prompt check: ru and en lists, and the simple evasions it sees through."""

from pathlib import Path

import pytest

from moderation import ModerationSettings, PromptCheck, create_moderation, normalise
from moderation.verdicts import ALLOWED


@pytest.fixture(scope="module")
def check() -> PromptCheck:
    return PromptCheck.from_files()


@pytest.mark.parametrize(
    ("prompt", "category"),
    [
        ("make her naked", "nudity"),
        ("n.a.k.e.d woman", "nudity"),  # separators inside the word
        ("n a k e d woman", "nudity"),  # letters apart
        ("nаked", "nudity"),  # a Cyrillic а among Latin letters
        ("N4K3D", "nudity"),  # leetspeak
        ("naaaaked", "nudity"),  # repeated letters
        ("ｎａｋｅｄ", "nudity"),  # fullwidth
        ("xxx pics", "nudity"),
        ("na\u200bked", "nudity"),  # a zero-width space
        ("take off her clothes", "undressing"),
        ("remove the dress", "undressing"),
        ("раздень её", "undressing"),
        ("pаздeнь её", "undressing"),  # Latin p and e among Cyrillic letters
        ("сними с неё платье", "undressing"),
        ("г0лая девушка", "nudity"),
        ("без белья", "nudity"),
        ("child nude", "minors"),
        ("школьница без одежды", "minors"),
    ],
)
def test_listed_prompts_are_refused_with_their_category(
    check: PromptCheck, prompt: str, category: str
) -> None:
    verdict = check.check(prompt)
    assert verdict.refused
    assert verdict.category == category
    assert verdict.summary() == f"prompt refused: {category}"


@pytest.mark.parametrize(
    "prompt",
    [
        "a cat in a hat",
        "girl in a red dress",
        "portrait of a nun, oil painting",
        "Essex landscape at dawn",  # 'sex' inside a word
        "голова кота в шляпе",  # 'гол' inside a word
        "remove the background",
        "x" * 1001,  # `xxx` is listed: collapsed, it must not become any lone `x`
        "y" * 1001,
        "сделай фон голубым",
        "",
    ],
)
def test_ordinary_prompts_pass(check: PromptCheck, prompt: str) -> None:
    assert not check.check(prompt).refused


def test_a_prompt_is_read_in_both_scripts_with_and_without_repeats() -> None:
    latin, cyrillic, latin_collapsed, cyrillic_collapsed = normalise("Г0ЛАЯ n.a.k.e.d Sheeep")
    assert latin.endswith("naked sheeep")
    assert cyrillic.startswith("голая ")
    assert latin_collapsed.endswith("naked shep")
    assert cyrillic_collapsed.startswith("голая ")


def test_lists_and_words_come_from_settings(tmp_path: Path) -> None:
    lists = tmp_path / "lists.yaml"
    lists.write_text("weapons:\n  - bazooka*\n  - 're:gun ?powder'\n")
    settings = ModerationSettings(prompt_lists=str(lists), prompt_words="kraken, re:sea ?monster")
    moderation = create_moderation(settings, detector=StubDetector())
    assert moderation.check_prompt("two bazookas").category == "weapons"
    assert moderation.check_prompt("g u n p o w d e r").category == "weapons"
    assert moderation.check_prompt("a KRAKEN attacks").category == "custom"
    assert moderation.check_prompt("a seamonster").category == "custom"
    assert not moderation.check_prompt("naked").refused  # the built-in lists were replaced


def test_moderation_off_allows_everything() -> None:
    moderation = create_moderation(ModerationSettings(enabled=False))
    assert moderation.check_prompt("naked") is ALLOWED
    assert moderation.images is None


class StubDetector:
    name = "stub"

    def detect(self, image: object) -> dict[str, float]:
        return {}
