"""`imagebot run backend_api` / `python -m backend_api`."""

from backend_api.app import create_app
from messaging.runtime import run


def main() -> None:
    run(create_app())


if __name__ == "__main__":
    main()
