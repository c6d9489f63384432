"""The metric names a PromQL expression reads, and the names a /metrics page exports.

No maintained Python PromQL parser exists, so names are found the way PromQL's lexer tells
them apart: strings, label matchers, ranges and label lists removed, an identifier is a metric
name unless a `(` follows it (a function or aggregation) or it is a keyword.
"""

from __future__ import annotations

import re

KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
    | {"and", "or", "unless", "atan2", "inf", "nan"}
)
PROMETHEUS_MADE = frozenset({"up"})
"""Series Prometheus itself writes for every target; no service exports them."""

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_MATCHER = re.compile(r'\b(job|__name__)\s*=\s*"(\d+)"')


def metric_names(expression: str) -> set[tuple[str, str | None]]:
    """(metric, job) for every series the expression selects; job when it names one."""
    strings: list[str] = []

    def keep(match: re.Match[str]) -> str:  # each string becomes "<its index>"
        strings.append(match.group(0)[1:-1])
        return f'"{len(strings) - 1}"'

    text = _STRING.sub(keep, expression)
    found: set[tuple[str, str | None]] = set()
    for selector in _SELECTOR.finditer(text):
        matchers = {key: strings[int(n)] for key, n in _MATCHER.findall(selector.group(2))}
        name = selector.group(1) or matchers.get("__name__")
        if name and name not in KEYWORDS:
            found.add((name, matchers.get("job")))
    rest = _SELECTOR.sub(" ", _RANGE.sub(" ", text))
    rest = _LABEL_LIST.sub(" ", re.sub(r"\$\w+", " ", rest))
    named = {name for name, _ in found}
    found |= {(name, None) for name in _IDENTIFIER.findall(rest) if name not in KEYWORDS | named}
    return found


def exported_names(exposition: str) -> set[str]:
    """Every series name a Prometheus text page offers, the suffixes of each type included
    (a labelled family with no sample yet is still declared by its TYPE line)."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind == "counter":  # the text format names it with _total or without
                names.add(name.removesuffix("_total") + "_total")
            elif kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            elif kind == "summary":
                names |= {f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names
