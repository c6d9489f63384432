"""A diffusers model directory's components: their size in memory, and which are the same files
as another workflow's (so one process loads a text encoder or VAE once for both)."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

WEIGHTED = ("transformer", "text_encoder", "vae")
"""The components that hold weights (tokenizer, processor and scheduler are a few MiB)."""
SHAREABLE = ("text_encoder", "vae")
"""Used as loaded by every workflow (no LoRA, no compile or quantization touches them)."""
GIB = 2**30


def component_dirs(model_dir: Path) -> dict[str, Path]:
    """The weighted components `model_index.json` names, by name."""
    index = json.loads((model_dir / "model_index.json").read_text())
    return {
        name: model_dir / name
        for name in WEIGHTED
        if isinstance(index.get(name), list) and index[name][0] is not None
    }


@functools.cache
def parameter_count(directory: Path) -> int:
    """Parameters in a component's safetensors files, read from their headers (no weights)."""
    from safetensors import safe_open

    count = 0
    for file in sorted(directory.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as weights:
            for key in weights.keys():  # noqa: SIM118 (safe_open is no mapping)
                count += _numel(weights.get_slice(key).get_shape())
    return count


def _numel(shape: list[int]) -> int:
    numel = 1
    for side in shape:
        numel *= side
    return numel


@functools.cache
def _outline(directory: Path) -> tuple[Any, ...]:
    """Config and weight files' names and sizes: different outlines mean different weights."""
    config = directory / "config.json"
    files = sorted(directory.glob("*.safetensors"))
    return (
        config.read_bytes() if config.is_file() else b"",
        tuple((file.name, file.stat().st_size) for file in files),
    )


@functools.cache
def _digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(directory.glob("*.safetensors")):
        with file.open("rb") as weights:
            digest.update(hashlib.file_digest(weights, "sha256").digest())
    return digest.hexdigest()


def same_files(first: Path, second: Path) -> bool:
    """The same directory, or one with the same config and byte-identical weights (hashed only
    when names and sizes already agree: once per process start, ~16 GiB for Qwen's encoder)."""
    if first.resolve() == second.resolve():
        return True
    return _outline(first) == _outline(second) and _digest(first) == _digest(second)


class SharedComponents:
    """Components loaded once per process, handed to every later pipeline whose files match."""

    def __init__(self) -> None:
        self._loaded: list[tuple[Path, Any]] = []

    def find(self, directory: Path) -> Any | None:
        for loaded_from, module in self._loaded:
            if same_files(directory, loaded_from):
                return module
        return None

    def add(self, directory: Path, module: Any) -> None:
        if self.find(directory) is None:
            self._loaded.append((directory, module))
