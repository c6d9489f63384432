"""`imagebot run gpu_runner`."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Mapping
from types import FrameType

from gpu_runner.app import Settings, create_app
from gpu_runner.failures import CannotStartError
from gpu_runner.workflows import Workflow
from messaging.runtime import run

DEVICE_LOST_EXIT = 69
"""EX_UNAVAILABLE: the device cannot run jobs any more; a fresh process (CUDA context) may."""

log = logging.getLogger(__name__)


class StopOnDeviceLoss:
    """A lost device shuts the process down as SIGTERM does (staged jobs handed back, in-flight
    outcomes published), then exits with DEVICE_LOST_EXIT instead of dying by the signal."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def device_lost(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            log.critical("device unusable (%s): stopping, exit %d", reason, DEVICE_LOST_EXIT)
            os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's handler: graceful shutdown

    def after_shutdown(self, signum: int, frame: FrameType | None) -> None:
        """uvicorn re-raises the signal it shut down on once it is done: this is where it lands."""
        if self.reason is not None:
            raise SystemExit(DEVICE_LOST_EXIT)
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)


def serve(settings: Settings, *, workflows: Mapping[str, Workflow] | None = None) -> None:
    stop = StopOnDeviceLoss()
    try:
        app = create_app(settings, workflows=workflows, on_device_lost=stop.device_lost)
    except CannotStartError as exc:
        print(f"gpu_runner cannot start: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    signal.signal(signal.SIGTERM, stop.after_shutdown)
    run(app, settings.service)


def main() -> None:
    serve(Settings())


if __name__ == "__main__":
    main()
