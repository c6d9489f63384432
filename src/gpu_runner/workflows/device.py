"""Choosing the device and dtype, binding the inference thread to it, and reading or freeing its
memory (torch is imported only here and only when asked)."""

from __future__ import annotations

import gc
import re
import sys
from typing import Any

from gpu_runner.settings import DtypeName

_CUDA_INDEX = re.compile(r"^cuda:(\d+)$")


def choose_device(spec: str) -> str:
    """`auto`: the first CUDA device when one is present, else the CPU."""
    import torch

    if spec != "auto":
        return spec
    return "cuda" if torch.cuda.is_available() else "cpu"


def choose_dtype(name: DtypeName, device: str) -> Any:
    """`auto`: bfloat16 on CUDA (what Qwen-Image ships in), float32 on the CPU."""
    import torch

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, name)


def bind_device(spec: str) -> None:
    """Make `cuda:N` the calling thread's current device: torch keeps it per thread, and
    whatever allocates on plain `cuda` (loading with device_map, the pipelines' own tensors)
    goes there. Run as the inference thread's initializer."""
    if (index := _CUDA_INDEX.match(spec)) is not None:
        import torch

        torch.cuda.set_device(int(index.group(1)))


def device_map(device: str) -> str:
    """What `from_pretrained(device_map=...)` takes to load weights straight onto `device`:
    diffusers accepts only the device type there (`cuda`, `cpu`), meaning the current device,
    which `bind_device` made `cuda:N` on the loading thread."""
    return device.split(":", 1)[0]


def free_cached_memory() -> None:
    """After an out-of-memory error: collect what the failed render left and hand the caching
    allocator's free blocks back, so the next job starts from what the weights hold."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def memory_of(device: str) -> tuple[int, int] | None:
    """(free, total) bytes of a CUDA device; None for the CPU (no check there)."""
    if not device.startswith("cuda"):
        return None
    import torch

    free, total = torch.cuda.mem_get_info(torch.device(device))
    return int(free), int(total)
