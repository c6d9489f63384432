"""compose.yaml and the Dockerfile, checked offline: docker-compose 1.29 accepts the file, and
the structure the deployment relies on is there."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
APP_SERVICES = ("billing", "jobs", "bot_gateway")
LONG_RUNNING = ("postgres", "rabbitmq", *APP_SERVICES, "gpu_runner")


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(compose, dict)
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def test_docker_compose_accepts_the_file() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(
            "docker-compose is not on PATH; install it with `apt-get install -y docker-compose`"
        )
    result = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_service_is_defined(services: dict[str, dict[str, Any]]) -> None:
    assert {"migrate", *LONG_RUNNING} <= services.keys()


def test_services_start_in_order(services: dict[str, dict[str, Any]]) -> None:
    for name in APP_SERVICES:
        depends_on = services[name]["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully", name
        assert depends_on["rabbitmq"]["condition"] == "service_healthy", name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["gpu_runner"]["depends_on"]["rabbitmq"]["condition"] == "service_healthy"


def test_long_running_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name in LONG_RUNNING:
        healthcheck = services[name].get("healthcheck", {})
        assert healthcheck.get("test"), name
        assert not healthcheck.get("disable"), name


def test_app_services_can_scale(services: dict[str, dict[str, Any]]) -> None:
    for name in ("migrate", *APP_SERVICES, "gpu_runner"):
        assert "container_name" not in services[name], name


def test_gpu_runner_reserves_nvidia_gpus_and_lets_a_running_job_finish(
    services: dict[str, dict[str, Any]],
) -> None:
    runner = services["gpu_runner"]
    devices = runner["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert runner["build"]["args"]["EXTRAS"] == "gpu,cuda"
    assert float(runner["environment"]["SERVICE_GRACEFUL_TIMEOUT_S"]) < 120  # stop_grace_period


def test_rabbitmq_loads_the_topology(services: dict[str, dict[str, Any]]) -> None:
    sources = {volume.split(":")[0] for volume in services["rabbitmq"]["volumes"]}
    assert {
        "./rabbitmq/definitions.json",
        "./rabbitmq/rabbitmq.conf",
        "./rabbitmq/enabled_plugins",
    } <= sources
    # compose adds the user and its permissions from the environment (RabbitMQ creates no
    # default user when it imports definitions at boot); the topology must bring the vhost.
    definitions = json.loads((ROOT / "rabbitmq/definitions.json").read_text(encoding="utf-8"))
    assert "users" not in definitions
    assert "permissions" not in definitions
    assert any(vhost["name"] == "/" for vhost in definitions.get("vhosts", []))


def test_dockerfile_runs_imagebot_as_non_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    entrypoints = re.findall(r"^ENTRYPOINT\s+(.+)$", dockerfile, flags=re.MULTILINE)
    assert entrypoints, "Dockerfile has no ENTRYPOINT"
    assert json.loads(entrypoints[-1]) == ["imagebot"]
    users = re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert users, "Dockerfile has no USER"
    assert users[-1].split(":")[0] not in {"root", "0"}


IMAGEBOT_SERVICES = ("migrate", *APP_SERVICES, "gpu_runner")
NOT_SETTINGS = {"HF_HUB_OFFLINE"}  # read by huggingface_hub, not by us
GPU_OVERRIDE = ROOT / "compose.gpus.example.yaml"


def resolved(*files: Path, profile: str | None = None) -> dict[str, Any]:
    """The configuration as docker-compose itself resolves it (anchors, merges, variables)."""
    binary = shutil.which("docker-compose")
    assert binary is not None, "docker-compose is not on PATH (`apt-get install docker-compose`)"
    command = [binary, *(arg for f in files for arg in ("-f", str(f)))]
    if profile:
        command += ["--profile", profile]
    result = subprocess.run(
        [*command, "config"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def settings_variables() -> set[str]:
    """Every environment variable some settings class under src/ reads."""
    for package in ("messaging", "billing", "jobs", "bot_gateway", "gpu_runner", "imagebot"):
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, f"{package}."):
            if not info.name.endswith("__main__"):
                importlib.import_module(info.name)
    names: set[str] = set()
    pending = list(BaseSettings.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        prefix = str(cls.model_config.get("env_prefix", ""))
        names |= {f"{prefix}{field}".upper() for field in cls.model_fields}
    return names


def test_every_variable_given_to_our_services_is_one_a_settings_class_reads() -> None:
    known = settings_variables()
    for files in ((COMPOSE_FILE,), (COMPOSE_FILE, GPU_OVERRIDE)):
        services = resolved(*files, profile="s3")["services"]
        ours = [name for name in services if name in IMAGEBOT_SERVICES or "gpu_runner" in name]
        for name in ours:
            unknown = set(services[name].get("environment", {})) - known - NOT_SETTINGS
            assert not unknown, f"{name}: {sorted(unknown)} are read by no settings class"


def test_services_log_json_and_refuse_placeholder_secrets_by_default() -> None:
    services = resolved(COMPOSE_FILE)["services"]
    for name in (*APP_SERVICES, "gpu_runner"):
        assert services[name]["environment"]["SERVICE_LOG_FORMAT"] == "json", name
    assert services["billing"]["environment"]["YOOKASSA_ENVIRONMENT"] == "production"
    assert services["bot_gateway"]["environment"]["TELEGRAM_ENVIRONMENT"] == "production"


def test_readiness_not_liveness_gates_the_services(services: dict[str, dict[str, Any]]) -> None:
    for name in (*APP_SERVICES, "gpu_runner"):
        probe = " ".join(services[name]["healthcheck"]["test"])
        assert "/readyz" in probe, name


def test_scaled_services_publish_no_fixed_host_port() -> None:
    services = resolved(COMPOSE_FILE)["services"]
    for name in ("jobs", "bot_gateway", "gpu_runner"):
        assert "ports" not in services[name], name
    [webhook] = services["billing"]["ports"]  # "host_ip:published:target"
    *_, published, target = str(webhook).split(":")
    assert target.split("/")[0] == "8080"
    assert re.fullmatch(r"\d+-\d+", published), "billing replicas need a port range"
    low, high = map(int, published.split("-"))
    assert high > low


def test_the_s3_profile_brings_minio_and_its_bucket_wired_to_the_storage_settings() -> None:
    services = resolved(COMPOSE_FILE, profile="s3")["services"]
    assert services["minio"]["profiles"] == services["minio-bucket"]["profiles"] == ["s3"]
    bucket = services["minio-bucket"]
    assert bucket["depends_on"]["minio"]["condition"] == "service_healthy"
    for name in ("bot_gateway", "gpu_runner"):
        environment = services[name]["environment"]
        assert environment["STORAGE_S3_ENDPOINT_URL"] == "http://minio:9000", name
        assert environment["STORAGE_S3_BUCKET"] == bucket["environment"]["BUCKET"], name
        assert (
            environment["STORAGE_S3_ACCESS_KEY_ID"]
            == (services["minio"]["environment"]["MINIO_ROOT_USER"])
        )


def test_the_multi_gpu_override_gives_each_runner_its_own_device() -> None:
    services = resolved(COMPOSE_FILE, GPU_OVERRIDE)["services"]
    runners = {name: s for name, s in services.items() if name.startswith("gpu_runner")}
    assert len(runners) >= 2
    devices = []
    for name, runner in runners.items():
        [reservation] = runner["deploy"]["resources"]["reservations"]["devices"]
        assert "count" not in reservation, name
        devices.extend(reservation["device_ids"])
        assert "/readyz" in " ".join(runner["healthcheck"]["test"]), name
    assert len(devices) == len(set(devices)) == len(runners)
