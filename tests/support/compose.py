"""Compose files resolved and validated in Python, with no docker or docker-compose binary.

`resolve()` does what `docker compose config` does with our files: YAML anchors and merge
keys (PyYAML), variable interpolation with the Compose syntax, merging override files and
dropping services whose profiles are not active. `validate()` checks a document against the
Compose Specification's JSON Schema, which check-jsonschema ships as package data (vendored
from compose-spec/compose-spec, Apache-2.0) and keeps up to date with each release.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import yaml

# $$ (a literal $), $NAME, ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error},
# ${NAME?error}, ${NAME:+replacement}, ${NAME+replacement}. Anything else after a $ is an error,
# as it is for Compose.
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<operator>:?[-?+])(?P<argument>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<invalid>))"
)


class ComposeError(ValueError):
    """A compose file that Compose itself would refuse to load."""


@cache
def compose_schema() -> dict[str, Any]:
    """The Compose Specification's JSON Schema (compose-spec/compose-spec: schema/compose-spec.json)
    as the installed check-jsonschema release vendors it."""
    vendored = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema: dict[str, Any] = json.loads(vendored.read_text(encoding="utf-8"))
    jsonschema.validators.validator_for(schema).check_schema(schema)
    return schema


def validate(document: Mapping[str, Any]) -> None:
    """Raise jsonschema.ValidationError, naming every error and where it is, if the document
    does not follow the Compose Specification."""
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        lines = [f"{'/'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}" for e in errors]
        raise jsonschema.ValidationError(
            "not a valid compose file:\n  " + "\n  ".join(lines),
            path=first.absolute_path,
            validator=first.validator,
            instance=first.instance,
        )


def interpolate(value: Any, environment: Mapping[str, str]) -> Any:
    """Substitute variables in every string value (not in keys), as Compose does."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda found: _substitute(found, environment, value), value)
    if isinstance(value, dict):
        return {key: interpolate(item, environment) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, environment) for item in value]
    return value


def _substitute(found: re.Match[str], environment: Mapping[str, str], text: str) -> str:
    if found["escaped"]:
        return "$"
    if found["named"]:
        return environment.get(found["named"], "")
    if found["braced"] is None:
        raise ComposeError(f"invalid interpolation format in {text!r}")
    name, operator, argument = found["braced"], found["operator"], found["argument"]
    value = environment.get(name)
    if operator is None:
        return value or ""
    unset = value is None or (operator.startswith(":") and value == "")
    match operator[-1]:
        case "-":
            return argument if unset else str(value)
        case "?":
            if unset:
                raise ComposeError(f"required variable {name} is missing a value: {argument}")
            return str(value)
        case _:  # "+"
            return "" if unset else argument


def merge(base: Any, override: Any, path: str = "") -> Any:
    """An override file over a base, for what our files need: mappings merge key by key, and
    the override's scalars win. Compose merges sequences by rules that differ per key, so a
    sequence that both files set is refused rather than guessed at."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base[key], value, f"{path}/{key}") if key in base else value
        return merged
    if isinstance(base, list) or isinstance(override, list):
        raise ComposeError(f"{path}: both files set this sequence; merge it by hand")
    return override


def load(path: Path, environment: Mapping[str, str]) -> dict[str, Any]:
    """One compose file, its anchors and merge keys expanded, interpolated, then validated."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise ComposeError(f"{path.name}: not a mapping")
    interpolated: dict[str, Any] = interpolate(document, environment)
    validate(interpolated)
    return interpolated


def resolve(
    *paths: Path,
    profiles: Iterable[str] = (),
    environment: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The configuration as Compose resolves it from these files, in order.

    The environment is empty unless given, so every variable takes its default from the file:
    the result does not depend on the shell that runs the tests.
    """
    environment = {} if environment is None else environment
    config: dict[str, Any] = {}
    for path in paths:
        config = merge(config, load(path, environment))
    active = set(profiles)
    services: dict[str, dict[str, Any]] = {
        name: service
        for name, service in config.get("services", {}).items()
        if not service.get("profiles") or active & set(service["profiles"])
    }
    for service in services.values():
        if isinstance(service.get("environment"), list):
            service["environment"] = dict(
                item.split("=", 1) if "=" in item else (item, None)
                for item in service["environment"]
            )
    config["services"] = services
    validate(config)
    _check_references(config)
    return config


def _check_references(config: Mapping[str, Any]) -> None:
    """What Compose refuses beyond the schema: a dependency on a service that is not there,
    a named volume that is not declared."""
    services: Mapping[str, Mapping[str, Any]] = config["services"]
    declared = set(config.get("volumes") or {})
    for name, service in services.items():
        for dependency in service.get("depends_on", ()):
            if dependency not in services:
                raise ComposeError(f"service {name} depends on undefined service {dependency}")
        for volume in service.get("volumes", ()):
            if isinstance(volume, str):  # SOURCE:TARGET[:MODE]; a path is a bind mount
                source, *target = volume.split(":")
                named = bool(target) and not source.startswith((".", "/", "~"))
            else:
                source, named = volume.get("source"), volume.get("type") == "volume"
            if named and source not in declared:
                raise ComposeError(f"service {name} uses volume {source}, which is not declared")
