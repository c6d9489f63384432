"""`imagebot run gpu_runner`."""

from __future__ import annotations

import sys

from gpu_runner.app import create_app
from gpu_runner.failures import ModelDirectoryMissingError
from messaging.runtime import run
from messaging.settings import ServiceSettings


def main() -> None:
    service = ServiceSettings()
    try:
        app = create_app(service=service)
    except ModelDirectoryMissingError as exc:
        print(f"gpu_runner cannot start: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    run(app, service)


if __name__ == "__main__":
    main()
