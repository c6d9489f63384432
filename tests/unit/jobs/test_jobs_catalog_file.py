"""The catalog file format: the shipped catalog, round trips, and refusals naming the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.catalog import CatalogError, dump_catalog, parse_catalog, read_catalog_file

ROOT = Path(__file__).resolve().parents[3]

GOOD = """presets:
  - category: фото
    name: Ретушь
    prompt: Retouch the portrait
    price: 30
"""


def test_the_shipped_catalog_is_valid_russian_and_big_enough() -> None:
    specs = read_catalog_file(ROOT / "catalog/presets.yaml")
    assert len(specs) >= 8
    assert {"фото", "иллюстрация", "стилизация"} <= {spec.category for spec in specs}
    assert all(len(spec.prompt) > 80 and spec.icon for spec in specs)


def test_an_export_parses_back_to_the_same_presets() -> None:
    specs = read_catalog_file(ROOT / "catalog/presets.yaml")
    assert parse_catalog(dump_catalog(specs)) == specs


def test_defaults_fill_what_a_preset_leaves_out() -> None:
    (spec,) = parse_catalog(GOOD)
    assert (spec.workflow_type, spec.order_index, spec.enabled, spec.icon) == (
        "qwen_edit_2511", 0, True, None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace("price: 30", "price: много"), "line 5: price: Input should be a valid int"),
        (GOOD.replace("price: 30", "price: -5"), "line 5: price: Input should be greater than"),
        (GOOD + "    colour: red\n", "line 6: colour: Extra inputs are not permitted"),
        (GOOD.replace("    prompt: Retouch the portrait\n", ""), "line 2: prompt: Field required"),
        (GOOD + "    workflow_type: sdxl\n", "line 6: workflow_type: Value error"),
        (GOOD.replace("name: Ретушь", "name: [Ретушь"), "line 4: invalid YAML"),
        (GOOD + GOOD.removeprefix("presets:\n"), "line 6: preset 'Ретушь' appears twice"),
        ("presets: {}\n", "line 1: `presets` must be a list"),
        ("preset:\n  - {}\n", "line 1: unknown key 'preset'"),
        ("", "line 1: the file is empty"),
        ("presets:\n  - just a string\n", "line 2: a preset must be a mapping"),
    ],
)  # fmt: skip
def test_a_malformed_file_is_refused_naming_the_line_and_reason(text: str, message: str) -> None:
    with pytest.raises(CatalogError) as refused:
        parse_catalog(text, source="bad.yaml")
    assert f"bad.yaml: {message}" in str(refused.value)
