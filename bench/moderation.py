"""What moderation costs on the CPU: the image detector per image, the prompt check per prompt.

The image check runs where the bytes are (the gateway at upload, a runner after the render),
each on one core of its own (`MODERATION_DETECTOR_THREADS=1`, off the event loop). Images are a
Telegram-sized photo (1280x960, made here) and scikit-image's astronaut (512x512); CPU time
is the process's (every thread's), wall time the caller's wait.

    make bench-moderation      # or: python bench/moderation.py --images 50
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from importlib.metadata import distribution
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from PIL import Image, ImageDraw  # noqa: E402

from moderation import ModerationSettings, create_moderation  # noqa: E402

PROMPTS = (
    "a cat in a hat, watercolour",
    "сделай фон голубым и добавь снег",
    "portrait of a woman in a red dress, oil painting, dramatic light",
    "n.a.k.e.d",
)


def photo() -> Image.Image:
    """A busy 1280x960 picture: gradients, shapes and noise, so nothing is trivially empty."""
    image = Image.linear_gradient("L").resize((1280, 960)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for i in range(40):
        draw.ellipse((i * 30, i * 20, i * 30 + 200, i * 20 + 150), fill=(i * 6, 120, 255 - i * 6))
    return Image.blend(image, Image.effect_noise((1280, 960), 40).convert("RGB"), 0.3)


def astronaut() -> Image.Image:
    path = distribution("scikit-image").locate_file("skimage/data/astronaut.png")
    return Image.open(Path(str(path))).convert("RGB")


def measure(images: int, prompts: int) -> None:
    started = time.perf_counter()
    moderation = create_moderation(ModerationSettings(detector_threads=1))
    assert moderation.images is not None
    assert moderation.prompts is not None
    built = time.perf_counter() - started
    moderation.images.check(Image.new("RGB", (64, 64)))  # waits for the model to load
    print(f"detector built in {built:.2f} s, ready in {time.perf_counter() - started:.2f} s")
    figures: dict[str, float] = {}
    for name, image in (("photo", photo()), ("astronaut", astronaut())):
        moderation.images.check(image)  # the first run allocates
        cpu, wall = [], []
        for _ in range(images):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            moderation.images.check(image)
            cpu.append(time.process_time() - cpu0)
            wall.append(time.perf_counter() - wall0)
        figures[f"{name}_cpu_ms"] = statistics.median(cpu) * 1000
        figures[f"{name}_wall_ms"] = statistics.median(wall) * 1000
        print(
            f"{name} {image.width}x{image.height}: {images} checks, cpu_ms p50="
            f"{figures[f'{name}_cpu_ms']:.1f} max={max(cpu) * 1000:.1f}, wall_ms p50="
            f"{figures[f'{name}_wall_ms']:.1f}"
        )
    cpu0 = time.process_time()
    for i in range(prompts):
        moderation.check_prompt(PROMPTS[i % len(PROMPTS)])
    figures["prompt_us"] = (time.process_time() - cpu0) / prompts * 1e6
    print(f"{prompts} prompts: {figures['prompt_us']:.0f} µs of CPU each")
    print("BENCH " + " ".join(f"{key}={value:.1f}" for key, value in figures.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--prompts", type=int, default=2000)
    arguments = parser.parse_args()
    measure(arguments.images, arguments.prompts)


if __name__ == "__main__":
    main()
