"""A gpu_runner whose pillow workflow kills its own process on the prompt `crash`.

Stands for input that brings a runner down (a decoder segfault, the kernel's OOM killer):
run it in a subprocess against a test namespace; it dies holding the message unacknowledged.
"""

from __future__ import annotations

import os
import signal

from PIL import Image

from gpu_runner.app import Settings as RunnerApp
from gpu_runner.app import create_app
from gpu_runner.settings import PillowFilterSettings
from gpu_runner.workflows.base import RenderRequest, StepObserver
from gpu_runner.workflows.pillow_filter import PillowFilterWorkflow
from messaging.runtime import run
from messaging.settings import ServiceSettings


class CrashingFilter(PillowFilterWorkflow):
    def render(self, request: RenderRequest, on_step: StepObserver) -> Image.Image:
        if request.prompt == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        return super().render(request, on_step)


if __name__ == "__main__":
    service = ServiceSettings()
    run(
        create_app(
            RunnerApp(service=service),
            workflows={"pillow_filter": CrashingFilter(PillowFilterSettings())},
        ),
        service,
    )
