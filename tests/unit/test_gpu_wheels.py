"""`make gpu-wheels` carries everything bench/gpu.py needs that a lent GPU machine lacks.

Such a machine has no internet and its own CUDA torch; its image (Python 3.12, torch 2.11,
transformers 5.17, accelerate, peft, numpy, pillow, pyyaml, regex, safetensors, tokenizers,
psutil, hf-xet, requests' charset-normalizer) has no diffusers and no pydantic. A distribution
the bench's code imports, or one of theirs requires, that neither the image nor the carried
wheels hold fails on the machine at the first import.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ON_THE_MACHINE = {
    "torch",
    "numpy",
    "pillow",
    "pyyaml",
    "regex",
    "safetensors",
    "tokenizers",
    "psutil",
    "hf-xet",
    "charset-normalizer",
}
"""Besides torch's own requirements, which come with it."""
IMPORTED_ONLY_WHEN_INSTALLED = {"kernels"}
"""transformers 5 lists it, and imports it only when it is there."""
OWN_MODULES = """
import json, os, sys
sys.argv = ["gpu.py"]
sys.path[:0] = ["bench"]
import gpu  # bench/gpu.py's imports, as `make bench-gpu` runs it
files = {getattr(m, "__file__", None) or "" for m in list(sys.modules.values())}
own = [os.path.join(os.getcwd(), d) for d in ("bench", "src")]
print(json.dumps(sorted(f for f in files if f.startswith(tuple(own)))))
"""


def _name(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _make_list(variable: str) -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    found = re.search(rf"^{variable} := ((?:.*\\\n)*.*)$", text, re.MULTILINE)
    assert found is not None, f"no {variable} in the Makefile"
    return {_name(pin.split("==")[0]) for pin in found.group(1).replace("\\\n", " ").split()}


def _imported_at_module_level(file: Path) -> set[str]:
    """Top-level names a module imports unconditionally (not in functions, ifs or trys)."""
    names = set()
    for statement in ast.parse(file.read_text(encoding="utf-8")).body:
        if isinstance(statement, ast.Import):
            names |= {alias.name.partition(".")[0] for alias in statement.names}
        elif isinstance(statement, ast.ImportFrom) and statement.level == 0 and statement.module:
            names.add(statement.module.partition(".")[0])
    return names


def _requirements(distribution: str) -> set[str]:
    found = set()
    for line in metadata.requires(distribution) or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            found.add(_name(requirement.name))
    return found


def test_every_distribution_the_gpu_bench_needs_is_on_the_machine_or_carried() -> None:
    own = subprocess.run(
        [sys.executable, "-c", OWN_MODULES], cwd=ROOT, capture_output=True, text=True, check=True
    )
    imported = set().union(*(_imported_at_module_level(Path(f)) for f in json.loads(own.stdout)))
    distributions = metadata.packages_distributions()
    needed = {_name(d) for top in imported for d in distributions.get(top, ())} - {"imagebot"}
    carried = _make_list("GPU_WHEELS") | _make_list("GPU_COMPILED_WHEELS")
    present = ON_THE_MACHINE | _requirements("torch")
    missing, seen = set(), set()
    while needed - seen:
        distribution = min(needed - seen)
        seen.add(distribution)
        if distribution in present or distribution in IMPORTED_ONLY_WHEN_INSTALLED:
            continue
        if distribution not in carried:
            missing.add(distribution)
        needed |= _requirements(distribution)
    assert not missing, f"bench/gpu.py needs {sorted(missing)}: neither carried nor there"
