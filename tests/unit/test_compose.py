"""compose.yaml and the Dockerfile, checked offline: docker-compose 1.29 accepts the file, and
the structure the deployment relies on is there."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

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
