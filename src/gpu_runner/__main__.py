"""`imagebot run gpu_runner`."""

from __future__ import annotations

import sys

from gpu_runner.app import Settings, create_app
from gpu_runner.failures import ModelDirectoryMissingError
from messaging.runtime import run


def main() -> None:
    settings = Settings()
    try:
        app = create_app(settings)
    except ModelDirectoryMissingError as exc:
        print(f"gpu_runner cannot start: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    run(app, settings.service)


if __name__ == "__main__":
    main()
