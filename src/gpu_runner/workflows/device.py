"""Choosing the device and dtype (torch is imported only here and only when asked)."""

from __future__ import annotations

from typing import Any

from gpu_runner.settings import DtypeName


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
