"""compose.yaml and the Dockerfile, checked offline: both compose files follow the Compose
Specification's JSON Schema (no docker or docker-compose binary needed), and the structure the
deployment relies on is there."""

from __future__ import annotations

import copy
import importlib
import json
import pkgutil
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic_settings import BaseSettings

from support import compose

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
GPU_OVERRIDE = ROOT / "compose.gpus.example.yaml"
APP_SERVICES = ("billing", "jobs", "bot_gateway", "backend_api")
LONG_RUNNING = ("postgres", "rabbitmq", *APP_SERVICES, "gpu_runner")


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    found: dict[str, dict[str, Any]] = document["services"]
    return found


@pytest.mark.parametrize(
    "files",
    [(COMPOSE_FILE,), (COMPOSE_FILE, GPU_OVERRIDE)],
    ids=lambda files: "+".join(path.name for path in files),
)
@pytest.mark.parametrize("profile", [None, "s3"])
def test_the_files_follow_the_compose_specification(
    files: tuple[Path, ...], profile: str | None
) -> None:
    # Each file on its own, then the configuration they make together, are validated.
    config = resolved(*files, profile=profile)
    assert ("minio" in config["services"]) == (profile == "s3")


def _set(*path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        *parents, last = path
        for key in parents:
            document = document[key]
        document[last] = value

    return mutate


BROKEN = {
    "unknown top-level key": _set("service", value={}),
    "unknown service key": _set("services", "jobs", "restart_policy", value="always"),
    "ports not a list": _set("services", "billing", "ports", value="8080:8080"),
    "unknown depends_on condition": _set(
        "services", "migrate", "depends_on", "postgres", "condition", value="service_ready"
    ),
    "command a mapping": _set("services", "jobs", "command", value={"run": "jobs"}),
    "devices not a list": _set(
        "services",
        "gpu_runner",
        "deploy",
        "resources",
        "reservations",
        "devices",
        value={"driver": "nvidia"},
    ),
}


@pytest.mark.parametrize("mutate", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_file_fails_the_schema(
    mutate: Callable[[dict[str, Any]], None], tmp_path: Path
) -> None:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    copied = tmp_path / "compose.yaml"
    copied.write_text(yaml.safe_dump(document), encoding="utf-8")
    compose.resolve(copied)  # the copy as such is valid: only the change below breaks it
    mutate(document)
    copied.write_text(yaml.safe_dump(document), encoding="utf-8")
    with pytest.raises(jsonschema.ValidationError):
        compose.resolve(copied)


def test_references_to_undefined_services_and_volumes_are_refused(tmp_path: Path) -> None:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    for mutate, error in (
        (
            _set(
                "services", "jobs", "depends_on", value={"redis": {"condition": "service_started"}}
            ),
            "undefined service redis",
        ),
        (_set("volumes", value={}), r"uses volume \S+, which is not declared"),
    ):
        broken = copy.deepcopy(document)
        mutate(broken)
        path = tmp_path / "compose.yaml"
        path.write_text(yaml.safe_dump(broken), encoding="utf-8")
        with pytest.raises(compose.ComposeError, match=error):
            compose.resolve(path)


def test_variables_are_interpolated_as_compose_does() -> None:
    environment = {"SET": "value", "EMPTY": ""}
    cases = {
        "$SET ${SET}": "value value",
        "${UNSET:-default} ${EMPTY:-default} ${EMPTY-default} ${UNSET-default}": (
            "default default  default"
        ),
        "${SET:+alt}${EMPTY:+alt}${EMPTY+alt}": "altalt",
        "$$SET $${SET}": "$SET ${SET}",
    }
    for text, expected in cases.items():
        assert compose.interpolate(text, environment) == expected, text
    with pytest.raises(compose.ComposeError, match="UNSET"):
        compose.interpolate("${UNSET:?set it}", environment)
    with pytest.raises(compose.ComposeError, match="invalid interpolation"):
        compose.interpolate("${}", environment)


def test_the_files_keep_to_what_docker_compose_1_29_accepts() -> None:
    # compose.yaml promises Debian's docker-compose 1.29: it rejects these newer keys.
    for path in (COMPOSE_FILE, GPU_OVERRIDE):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert "name" not in document, path.name
        for name, service in document["services"].items():
            assert "start_interval" not in service.get("healthcheck", {}), name
            depends_on = service.get("depends_on", {})
            if isinstance(depends_on, dict):
                for dependency in depends_on.values():
                    assert "restart" not in dependency, name


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
    assert runner["build"]["args"]["EXTRAS"] == "gpu,cuda,moderation"
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


def resolved(*files: Path, profile: str | None = None) -> dict[str, Any]:
    """The configuration as Compose resolves it (anchors, merges, variables at their defaults),
    every file and the result validated against the Compose Specification."""
    return compose.resolve(*files, profiles=[profile] if profile else [])


def settings_variables() -> set[str]:
    """Every environment variable some settings class under src/ reads."""
    for package in (
        "messaging",
        "billing",
        "jobs",
        "bot_gateway",
        "gpu_runner",
        "imagebot",
        "backend_api",
    ):
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
