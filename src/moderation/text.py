"""The prompt check: word and pattern lists (ru, en) against a prompt normalised against
simple evasions — look-alike letters of the other script, leetspeak, separators inside a word
(`n.a.k.e.d`, `n a k e d`), repeated letters and invisible characters."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path

import yaml

from moderation.verdicts import Verdict

_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
)
# Letters that look alike in Cyrillic and Latin, each way.
_CYRILLIC_LOOKALIKES = "аеорсухкмтвніј"
_LATIN_LOOKALIKES = "aeopcyxkmtbhij"
_TO_LATIN = str.maketrans(_CYRILLIC_LOOKALIKES, _LATIN_LOOKALIKES)
_TO_CYRILLIC = str.maketrans(_LATIN_LOOKALIKES, _CYRILLIC_LOOKALIKES)
_SEPARATORS_IN_WORD = re.compile(r"(?<=\w)[._\-*~|/\\+'\"`•·]+(?=\w)")
_LETTERS_APART = re.compile(r"(?<!\w)\w(?:\s+\w){2,}(?!\w)")
_REPEATS = re.compile(r"(\w)\1+")
_TOKEN = re.compile(r"[\w@$]+")


def _visible(text: str) -> str:
    """NFKC (fullwidth and styled letters become plain), lower case, no format characters."""
    text = unicodedata.normalize("NFKC", text).casefold().replace("ё", "е")
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def _unleet(token: str) -> str:
    return token.translate(_LEET) if any(ch.isalpha() for ch in token) else token


def normalise(text: str) -> tuple[str, ...]:
    """The prompt read as Latin and as Cyrillic, each with and without repeated letters
    collapsed (list entries are compared collapsed, patterns either way): single spaces
    between words."""
    text = _SEPARATORS_IN_WORD.sub("", _visible(text))
    text = _LETTERS_APART.sub(lambda m: re.sub(r"\s+", "", m.group()), text)
    words = " ".join(_unleet(token) for token in _TOKEN.findall(text))
    forms = (words, _REPEATS.sub(r"\1", words))
    return tuple(form.translate(script) for form in forms for script in (_TO_LATIN, _TO_CYRILLIC))


def _entry_pattern(entry: str) -> str:
    if entry.startswith("re:"):
        return entry[3:]
    plain = _visible(entry.strip())
    collapsed = _REPEATS.sub(r"\1", plain)
    # `xxx` collapsed would be any lone `x`: an entry that short is matched as written
    plain = collapsed if len(collapsed.rstrip("*")) >= 3 else plain
    if plain.endswith("*"):
        return rf"(?<!\w){re.escape(plain[:-1])}\w*"
    return rf"(?<!\w){re.escape(plain)}(?!\w)"


class PromptCheck:
    """Refuses a prompt that names a listed category; the first category listed wins."""

    name = "prompt"

    def __init__(self, lists: Mapping[str, Iterable[str]]) -> None:
        self._patterns = {
            category: re.compile("|".join(f"(?:{_entry_pattern(e)})" for e in entries))
            for category, entries in lists.items()
            if entries
        }

    @classmethod
    def from_files(cls, path: Path | None = None, extra: Iterable[str] = ()) -> PromptCheck:
        """The built-in ru/en lists (or `path`'s), with `extra` entries as `custom`."""
        source = path.read_text() if path else _builtin_lists()
        lists: dict[str, list[str]] = {
            str(category): [str(entry) for entry in entries]
            for category, entries in (yaml.safe_load(source) or {}).items()
        }
        if extra := list(extra):
            lists["custom"] = extra
        return cls(lists)

    def check(self, prompt: str) -> Verdict:
        forms = normalise(prompt)
        for category, pattern in self._patterns.items():
            if any(pattern.search(form) for form in forms):
                return Verdict(refused=True, category=category, check=self.name)
        return Verdict(refused=False, check=self.name)


def _builtin_lists() -> str:
    return resources.files("moderation").joinpath("prompt_lists.yaml").read_text()
