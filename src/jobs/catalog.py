"""The preset catalog: a validated YAML format, import (upsert by category + name), export,
and the view the gateway reads.

A malformed file is refused as a whole, naming the line and the reason; nothing is written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
)

from contracts.events import DEFAULT_WORKFLOW, WORKFLOW_TYPES, PresetsChanged
from contracts.rpc import PresetCatalog, PresetView
from jobs.domain import credits, needs_image
from jobs.models import Preset
from jobs.repository import CatalogRepository
from messaging.unit_of_work import UnitOfWork

PRESET_PROMPT_MAX_LENGTH = 2000


class CatalogError(ValueError):
    """A catalog file that cannot be imported; the message names the line and the reason."""


class PresetSpec(BaseModel):
    """One preset as the catalog file describes it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    category: Annotated[str, Field(min_length=1, max_length=50)]
    name: Annotated[str, Field(min_length=1, max_length=100)]
    prompt: Annotated[str, Field(min_length=1, max_length=PRESET_PROMPT_MAX_LENGTH)]
    icon: Annotated[str, Field(max_length=255)] | None = None
    price: Annotated[StrictInt, Field(ge=0, le=10**6)]
    order_index: StrictInt = 0
    workflow_type: str = DEFAULT_WORKFLOW
    enabled: StrictBool = True

    @field_validator("workflow_type")
    @classmethod
    def _known_workflow(cls, workflow_type: str) -> str:
        if workflow_type not in WORKFLOW_TYPES:
            raise ValueError(f"unknown workflow; one of {', '.join(WORKFLOW_TYPES)}")
        return workflow_type


# --- the file format --------------------------------------------------------------------------


def parse_catalog(text: str, *, source: str = "catalog") -> list[PresetSpec]:
    """Validate a catalog file: `presets:` followed by a list of presets."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise CatalogError(f"{source}: line 1: the file is empty; expected `presets:`")
        presets_node = _root_presets(root, source)
        specs = [_spec(item, loader, source) for item in presets_node.value]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise CatalogError(f"{source}: line {line}: invalid YAML: {exc.problem}") from exc
    finally:
        loader.dispose()
    _refuse_duplicates(specs, presets_node.value, source)
    return specs


def _root_presets(root: yaml.Node, source: str) -> yaml.SequenceNode:
    if not isinstance(root, yaml.MappingNode):
        raise CatalogError(f"{_at(source, root)}: expected a mapping with the key `presets`")
    for key, _ in root.value:
        if key.value != "presets":
            raise CatalogError(f"{_at(source, key)}: unknown key {key.value!r}; only `presets`")
    found = [value for key, value in root.value if key.value == "presets"]
    if not found or not isinstance(found[0], yaml.SequenceNode):
        raise CatalogError(f"{_at(source, root)}: `presets` must be a list of presets")
    return found[0]


def _spec(node: yaml.Node, loader: yaml.SafeLoader, source: str) -> PresetSpec:
    if not isinstance(node, yaml.MappingNode):
        raise CatalogError(f"{_at(source, node)}: a preset must be a mapping of its fields")
    fields: dict[str, Any] = {}
    lines: dict[str, yaml.Node] = {}
    for key, value in node.value:
        name = str(key.value)
        if name in fields:
            raise CatalogError(f"{_at(source, key)}: {name!r} given twice")
        fields[name] = loader.construct_object(value, deep=True)
        lines[name] = value if name in PresetSpec.model_fields else key
    try:
        return PresetSpec.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        where = _at(source, lines.get(field, node))
        label = f"{field}: " if field else ""
        raise CatalogError(f"{where}: {label}{error['msg']}") from exc


def _refuse_duplicates(
    specs: Sequence[PresetSpec], nodes: Sequence[yaml.Node], source: str
) -> None:
    seen: set[tuple[str, str]] = set()
    for spec, node in zip(specs, nodes, strict=True):
        key = (spec.category, spec.name)
        if key in seen:
            raise CatalogError(
                f"{_at(source, node)}: preset {spec.name!r} appears twice in {spec.category!r}"
            )
        seen.add(key)


def _at(source: str, node: yaml.Node) -> str:
    return f"{source}: line {node.start_mark.line + 1}"


class _CatalogDumper(yaml.SafeDumper):
    """Multi-line prompts as literal blocks, so an exported file reads like the shipped one."""


def _represent_text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_CatalogDumper.add_representer(str, _represent_text)


def dump_catalog(specs: Sequence[PresetSpec]) -> str:
    document = {"presets": [spec.model_dump() for spec in specs]}
    return yaml.dump(
        document, Dumper=_CatalogDumper, allow_unicode=True, sort_keys=False, width=100
    )


def read_catalog_file(path: Path) -> list[PresetSpec]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path}: cannot read: {exc}") from exc
    return parse_catalog(text, source=str(path))


# --- use cases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportResult:
    created: int
    updated: int
    unchanged: int
    revision: str


def spec_of(preset: Preset) -> PresetSpec:
    return PresetSpec.model_construct(
        category=preset.category or "",
        name=preset.name or "",
        prompt=preset.prompt or "",
        icon=preset.icon,
        price=credits(preset.price),
        order_index=preset.order_index or 0,
        workflow_type=preset.workflow_type or DEFAULT_WORKFLOW,
        enabled=preset.enabled,
    )


def catalog_view(presets: Sequence[Preset], custom_prompt_price: int) -> PresetCatalog:
    """What the gateway shows: enabled presets in display order, and a revision to cache by."""
    views = [
        PresetView(
            id=preset.id,
            category=preset.category or "",
            name=preset.name or "",
            icon=preset.icon,
            price=credits(preset.price),
            order_index=preset.order_index or 0,
            workflow_type=preset.workflow_type or DEFAULT_WORKFLOW,
            needs_image=needs_image(preset.workflow_type or DEFAULT_WORKFLOW),
        )
        for preset in presets
        if preset.enabled
    ]
    # The prompts are not shown but change what a preset does, so they count too.
    fingerprint = json.dumps(
        {
            "custom_prompt_price": custom_prompt_price,
            "presets": [view.model_dump() for view in views],
            "prompts": [preset.prompt for preset in presets if preset.enabled],
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    revision = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
    return PresetCatalog(revision=revision, custom_prompt_price=custom_prompt_price, presets=views)


async def import_catalog(
    uow: UnitOfWork, specs: Sequence[PresetSpec], custom_prompt_price: int
) -> ImportResult:
    """Upsert presets by (category, name); PresetsChanged goes out if what users see changed."""
    repository = CatalogRepository(await uow.orm())
    await repository.lock_catalog()
    before = catalog_view(await repository.all_presets(), custom_prompt_price).revision
    created = updated = 0
    for spec in specs:
        outcome = await repository.upsert(spec.model_dump())
        created += outcome == "created"
        updated += outcome == "updated"
    after = catalog_view(await repository.all_presets(), custom_prompt_price).revision
    if after != before:
        uow.emit(PresetsChanged(revision=after))
    await uow.commit()
    return ImportResult(created, updated, len(specs) - created - updated, after)


async def export_catalog(repository: CatalogRepository) -> str:
    return dump_catalog([spec_of(preset) for preset in await repository.all_presets()])
