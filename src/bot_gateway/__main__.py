"""`imagebot run bot_gateway` / `python -m bot_gateway`."""

from bot_gateway.app import create_app
from messaging.runtime import run


def main() -> None:
    run(create_app())


if __name__ == "__main__":
    main()
