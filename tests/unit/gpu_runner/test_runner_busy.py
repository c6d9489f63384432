"""The device busy meter: busy seconds and their share of the last window."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from gpu_runner.metrics import BusyMeter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_ratio_is_the_busy_share_of_the_last_window_and_counts_a_running_job() -> None:
    clock = Clock()
    meter = BusyMeter("unit-runner", window_s=10, clock=clock)
    assert meter.ratio() == 0.0
    clock.now += 2
    with meter.busy("pillow_filter"):
        clock.now += 3
        assert meter.ratio() == pytest.approx(3 / 5)  # window not full yet: share of 5 s
    clock.now += 5
    assert meter.ratio() == pytest.approx(3 / 10)
    with meter.busy("pillow_filter"):
        clock.now += 4
    # window 1004-1014: the first job's last second (1004-1005) and the second job's 4 s
    assert meter.ratio() == pytest.approx(5 / 10)
    clock.now += 20
    assert meter.ratio() == 0.0
    busy = REGISTRY.get_sample_value(
        "imagebot_gpu_busy_seconds_total", {"runner": "unit-runner", "workflow": "pillow_filter"}
    )
    assert busy == pytest.approx(7.0)


def test_the_gauge_reads_the_meter_when_scraped() -> None:
    clock = Clock()
    meter = BusyMeter("unit-runner-2", window_s=4, clock=clock)
    with meter.busy("qwen_image"):
        clock.now += 2
    clock.now += 2
    ratio = REGISTRY.get_sample_value("imagebot_gpu_busy_ratio", {"runner": "unit-runner-2"})
    assert ratio == pytest.approx(0.5)
