"""`imagebot run jobs` / `python -m jobs`."""

from jobs.app import create_app
from messaging.runtime import run


def main() -> None:
    run(create_app())


if __name__ == "__main__":
    main()
