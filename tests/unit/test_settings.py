import importlib
import pkgutil
from pathlib import Path

from pydantic_settings import BaseSettings

from messaging.settings import BrokerSettings, DatabaseSettings

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "contracts",
    "messaging",
    "billing",
    "jobs",
    "bot_gateway",
    "gpu_runner",
    "imagebot",
    "object_store",
    "moderation",
    "backend_api",
)


def _settings_classes() -> set[type[BaseSettings]]:
    for package in PACKAGES:
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, f"{package}."):
            if not info.name.endswith("__main__"):
                importlib.import_module(info.name)
    found: set[type[BaseSettings]] = set()
    pending = list(BaseSettings.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.split(".")[0] in PACKAGES:
            found.add(cls)
    return found


def test_env_example_documents_every_setting_with_its_default() -> None:
    documented = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    classes = _settings_classes()
    assert {DatabaseSettings, BrokerSettings} <= classes
    expected = {}
    for cls in classes:
        prefix = str(cls.model_config.get("env_prefix", ""))
        defaults = cls.model_construct()
        for name in cls.model_fields:
            value = getattr(defaults, name)
            value = value.get_secret_value() if hasattr(value, "get_secret_value") else value
            text = str(value).lower() if isinstance(value, bool) else str(value)
            expected[f"{prefix}{name}".upper()] = text
    assert documented == expected


def test_plain_postgres_urls_are_run_through_asyncpg() -> None:
    settings = DatabaseSettings(url="postgresql://u@h:5432/db")  # type: ignore[arg-type]
    assert settings.url.get_secret_value() == "postgresql+asyncpg://u@h:5432/db"
    assert "u@h" not in repr(settings)
