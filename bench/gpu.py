"""Qwen-Image-Edit-2511 on the GPU: seconds per image through the runner's own workflow code.

The real-size components (the 20 B transformer, Qwen2.5-VL-7B, the VAE) are built with random
weights directly on the device (`with torch.device(...)`: nothing is staged in host memory, no
weights are downloaded) and handed to `DiffusionWorkflow.adopt`, which applies the profile and
speed levers and renders exactly as the runner does. Timing random weights is timing the model:
the same shapes and kernels, whatever the numbers; except for the step cache, which skips a step
by how little its first block's output moved: its figure here says nothing of real photos.

Per variant, a render of STEPS_A and of STEPS_B steps after a warm render gives the fixed cost
(prompt encoding, reference VAE encode, decode) and the cost per step; N steps are extrapolated
as fixed + N·step unless the variant runs few enough steps to be measured whole (each line says
which). Variants: 40 steps with true CFG, Lightning 8 and 4 (scheduler shift 3, CFG off; the
fused LoRA costs nothing per step, so the base weights time it), each speed lever on Lightning 4
and on 40 steps (attention backends, first-block step cache, FP8 through torchao when
installed, compile_repeated_blocks), and the first job after a warm-up against a steady one.
The last line: `BENCH s_per_image_40=… s_per_image_4=… peak_gib=… first_over_steady=…`.

    make bench-gpu                     # real size on the GPU (about 5 min on an H100/H200)
    python bench/gpu.py --size tiny    # tiny components on the CPU (make test runs this)

On a lent machine with its own CUDA torch and no internet, bring only the pure-Python wheels
(docs/deployment.md, "GPU benchmark") and run it with that torch.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import diffusers  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration  # noqa: E402
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (  # noqa: E402
    Qwen2VLImageProcessorPil,
)

from gpu_runner.settings import PipelineSettings  # noqa: E402
from gpu_runner.workflows.base import RenderRequest  # noqa: E402
from gpu_runner.workflows.diffusion import DiffusionWorkflow, edit_reference_size  # noqa: E402
from sandbox.models import (  # noqa: E402
    SPECIAL_TOKENS,
    ImageOnlyQwen2VLProcessor,
    byte_level_tokenizer,
    shrink_edit_image_sizes,
)

GIB = 2**30
DIFFUSERS: Any = diffusers
"""Its classes take keyword configs their annotations do not know (see sandbox.models)."""


@dataclass(frozen=True)
class Size:
    transformer: dict[str, Any]
    text: dict[str, Any]
    vision: dict[str, Any]
    vae: dict[str, Any]
    image: tuple[int, int]
    """The input photo: its reference (and so the output) is about 1024² at real size."""


REAL = Size(
    # Qwen-Image-Edit-2511's transformer/config.json (diffusers' defaults, zero_cond_t on)
    transformer={"zero_cond_t": True},
    # Qwen2.5-VL-7B-Instruct, the text encoder of every Qwen-Image model
    text={
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
        "rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24]},
        "rope_theta": 1_000_000.0,
    },
    vision={
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "out_hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
    },
    vae={},  # diffusers' defaults are Qwen-Image's VAE
    image=(1024, 1024),
)
TINY = Size(
    transformer={
        "in_channels": 16,
        "out_channels": 4,
        "num_layers": 2,
        "attention_head_dim": 16,
        "num_attention_heads": 3,
        "joint_attention_dim": 16,
        "axes_dims_rope": (8, 4, 4),
    },
    text={
        "hidden_size": 16,
        "intermediate_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "rope_parameters": {"rope_type": "default", "mrope_section": [1, 1, 2]},
        "rope_theta": 1_000_000.0,
    },
    vision={
        "depth": 2,
        "hidden_size": 16,
        "intermediate_size": 16,
        "num_heads": 2,
        "out_hidden_size": 16,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [1],
    },
    vae={
        "base_dim": 24,
        "z_dim": 4,
        "dim_mult": [1, 2, 4],
        "num_res_blocks": 1,
        "temperal_downsample": [False, True],
        "latents_mean": [0.0] * 4,
        "latents_std": [1.0] * 4,
    },
    image=(64, 64),
)
STEPS_A, STEPS_B = 1, 3
REPEATS = 2
BUDGET_S = 300.0
"""Levers start only within this many seconds of the run; one started just before it (compile
pays for its compilation in its first render) runs on past it."""


@contextmanager
def built_on(device: str, dtype: torch.dtype) -> Iterator[None]:
    """Modules constructed here allocate (and initialise) their weights on `device` in `dtype`."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(default)


def build_transformer(size: Size, device: str, dtype: torch.dtype) -> Any:
    torch.manual_seed(0)
    with built_on(device, dtype):
        return DIFFUSERS.QwenImageTransformer2DModel(**size.transformer).eval()


def build_pipeline(size: Size, device: str, dtype: torch.dtype, scratch: Path) -> Any:
    """The edit pipeline of random weights, every component built on `device`."""
    tokenizer = byte_level_tokenizer(scratch / "tokenizer")
    ids: dict[str, Any] = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            **size.text,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config=size.vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    with built_on(device, dtype):
        text_encoder: Any = Qwen2_5_VLForConditionalGeneration(config)
        text_encoder.eval()
        vae = DIFFUSERS.AutoencoderKLQwenImage(**size.vae).eval()
    processor = ImageOnlyQwen2VLProcessor(
        image_processor=Qwen2VLImageProcessorPil(
            patch_size=14, merge_size=2, temporal_patch_size=2, min_pixels=56 * 56
        ),
        tokenizer=tokenizer,
    )
    return DIFFUSERS.QwenImageEditPlusPipeline(
        transformer=build_transformer(size, device, dtype),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        processor=processor,
        scheduler=DIFFUSERS.FlowMatchEulerDiscreteScheduler(),
    )


@dataclass(frozen=True)
class Timing:
    name: str
    steps: int
    seconds: float
    step_s: float
    fixed_s: float
    whole: bool
    peak_gib: float


class Device:
    def __init__(self, name: str) -> None:
        self.name = name
        self.cuda = name.startswith("cuda")

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated() / GIB
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # the process

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


def timed(render: Callable[[], Any], device: Device) -> float:
    device.reset_peak()
    began = time.perf_counter()
    render()  # the PIL image it returns is on the host: the device has finished
    return time.perf_counter() - began


def workflow(name: str, device: Device, **settings: Any) -> DiffusionWorkflow:
    """A runner's edit workflow with these settings (no warm-up unless asked for)."""
    return DiffusionWorkflow(
        name,
        "QwenImageEditPlusPipeline",
        PipelineSettings(**{"warmup_aspects": "", **settings}),
        models_dir=ROOT,  # unused: the pipeline is adopted, not loaded
        device=device.name,
        needs_image=True,
    )


def measure(
    name: str, subject: DiffusionWorkflow, photo: Image.Image, device: Device, whole_up_to: int
) -> Timing:
    """Seconds per image of `subject`: measured whole up to `whole_up_to` steps, else
    extrapolated from STEPS_A and STEPS_B steps (each the best of REPEATS)."""
    steps = subject.total_steps()

    def best(count: int) -> float:
        request = RenderRequest(prompt="make the sky purple", image=photo, seed=1)
        run = lambda: subject.render(request, lambda step, total: None, steps=count)  # noqa: E731
        return min(timed(run, device) for _ in range(REPEATS))

    best(STEPS_A)  # warm: kernels chosen, allocator grown, graphs compiled
    short, longer = best(STEPS_A), best(STEPS_B)
    step_s = (longer - short) / (STEPS_B - STEPS_A)
    whole = steps <= whole_up_to or step_s <= 0  # noise (a busy host) beats the difference
    seconds = best(steps) if whole else short + (steps - STEPS_A) * step_s
    timing = Timing(
        name, steps, seconds, step_s, short - STEPS_A * step_s, whole, device.peak_gib()
    )
    how = "measured whole" if whole else f"extrapolated from {STEPS_A} and {STEPS_B} steps"
    print(
        f"{name}: s_per_image={timing.seconds:.3f} ({how}) step_s={timing.step_s:.4f} "
        f"fixed_s={timing.fixed_s:.3f} peak_gib={timing.peak_gib:.2f}",
        flush=True,
    )
    return timing


BASE = {
    "40 steps, true CFG 4": {"steps": 40, "guidance": 4.0},
    "Lightning 8 steps": {"steps": 8, "guidance": 1.0, "scheduler_shift": 3.0},
    "Lightning 4 steps": {"steps": 4, "guidance": 1.0, "scheduler_shift": 3.0},
}
LEVERS: dict[str, dict[str, Any]] = {
    "attention _native_cudnn": {"attention_backend": "_native_cudnn"},
    "attention flash": {"attention_backend": "flash"},
    "attention _flash_3": {"attention_backend": "_flash_3"},
    "step cache 0.05": {"step_cache_threshold": 0.05},
    "fp8 (torchao)": {"fp8": True},
    "compile_repeated_blocks": {"compile_repeated_blocks": True},
}
CHANGES_WEIGHTS = {"fp8", "compile_repeated_blocks"}
"""Levers that change the transformer for good: measured on a freshly built one."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("real", "tiny"), default="real")
    parser.add_argument("--device", default="auto", help="auto: cuda when present, else cpu")
    parser.add_argument(
        "--levers",
        default="",
        help="comma-separated names from: " + ", ".join(LEVERS) + "; default: all at real size, "
        "the step cache at tiny size",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=BUDGET_S,
        help="start no lever after the run has taken this many seconds (the BENCH line still "
        f"comes last); default {BUDGET_S:.0f}, for a lent GPU's 8 minutes with installs",
    )
    parser.add_argument(
        "--whole-up-to",
        type=int,
        default=None,
        help="variants of at most this many steps are measured whole (default 8), others "
        f"extrapolated from {STEPS_A} and {STEPS_B} steps",
    )
    args = parser.parse_args()
    run_began = time.perf_counter()
    whole_up_to = args.whole_up_to or 8
    name = (
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    device = Device(name)
    size = REAL if args.size == "real" else TINY
    if args.size == "tiny":
        shrink_edit_image_sizes()
    dtype = torch.bfloat16 if device.cuda else torch.float32
    chosen = [lever.strip() for lever in args.levers.split(",") if lever.strip()] or (
        list(LEVERS) if args.size == "real" else ["step cache 0.05"]
    )
    model = torch.cuda.get_device_name() if device.cuda else "the host's CPU"
    print(f"torch {torch.__version__} on {name} ({model})")

    with tempfile.TemporaryDirectory() as scratch:
        began = time.perf_counter()
        pipeline = build_pipeline(size, name, dtype, Path(scratch))
        print(f"built {args.size} components on {name} in {time.perf_counter() - began:.1f} s")
    reference = edit_reference_size(size.image[0] / size.image[1])
    photo = Image.new("RGB", size.image, (90, 140, 200))
    print(f"input {size.image[0]}x{size.image[1]}, output {reference[0]}x{reference[1]}")

    timings: dict[str, Timing] = {}
    for variant, settings in BASE.items():
        subject = workflow(variant, device, **settings)
        subject.adopt(pipeline)
        timings[variant] = measure(variant, subject, photo, device, whole_up_to)

    first_over_steady = first_job(pipeline, photo, device)
    for lever in chosen:
        lever_settings = LEVERS[lever]
        for variant in ("Lightning 4 steps", "40 steps, true CFG 4"):
            if time.perf_counter() - run_began > args.budget_s:
                print(f"{variant} + {lever}: not measured: past the {args.budget_s:.0f} s budget")
                continue
            try:
                if CHANGES_WEIGHTS & set(lever_settings):
                    device.free()
                    pipeline.transformer = None
                    device.free()
                    pipeline.transformer = build_transformer(size, name, dtype)
                subject = workflow(variant, device, **BASE[variant], **lever_settings)
                subject.adopt(pipeline)
                measure(f"{variant} + {lever}", subject, photo, device, whole_up_to)
            except Exception as exc:  # a lever this machine lacks (kernels, torchao) is said
                print(f"{variant} + {lever}: not measured: {type(exc).__name__}: {exc}"[:400])
            finally:
                if "attention_backend" in lever_settings:
                    pipeline.transformer.set_attention_backend("native")
                if "step_cache_threshold" in lever_settings:
                    pipeline.transformer.disable_cache()

    peak = max(timing.peak_gib for timing in timings.values())
    print(f"run took {time.perf_counter() - run_began:.0f} s")
    print(
        f"BENCH s_per_image_40={timings['40 steps, true CFG 4'].seconds:.4f} "
        f"s_per_image_4={timings['Lightning 4 steps'].seconds:.4f} "
        f"peak_gib={peak:.2f} first_over_steady={first_over_steady:.3f}"
    )


def first_job(pipeline: Any, photo: Image.Image, device: Device) -> float:
    """The first Lightning-4 job after a warm-up at the job's shape (what the runner does before
    it says ready), over a steady one."""
    ratio = photo.width / photo.height
    subject = workflow(
        "first job",
        device,
        steps=4,
        guidance=1.0,
        scheduler_shift=3.0,
        warmup_aspects=f"{ratio}",
        warmup_steps=2,
    )
    subject.adopt(pipeline)
    request = RenderRequest(prompt="a first job", image=photo, seed=2)
    first = timed(lambda: subject.render(request, lambda step, total: None), device)
    steady = min(
        timed(lambda: subject.render(request, lambda step, total: None), device) for _ in range(2)
    )
    print(f"first job after warm-up: {first:.3f} s, steady {steady:.3f} s")
    return first / steady


if __name__ == "__main__":
    main()
