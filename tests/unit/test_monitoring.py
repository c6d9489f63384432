"""monitoring/: Prometheus' configuration and alert rules checked and unit-tested by promtool,
Alertmanager's by amtool (Debian's packages, brought by `make install`), the Grafana dashboard
and its provisioning. Which metric names they may use is checked against live services in
tests/e2e/test_monitoring_metrics.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from imagebot.processes import SERVICES
from support import compose
from support.promql import metric_names

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "imagebot.json"
REQUIRED_PANELS = (
    "Jobs by outcome",
    "Queue depth per workflow",
    "ETA told per workflow",
    "GPU busy share per runner",
    "Telegram 429s",
    "Telegram send lag",
    "Payments and refunds",
    "DLQ depth",
    "Outbox lag",
)
REQUIRED_ALERTS = {
    "DeadLetterQueueNotEmpty",
    "OutboxLagging",
    "RunnerNotReady",
    "NoRunnerReady",
    "JobsStalled",
    "WebhookErrors",
}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: `make install` brings it (Debian's prometheus and "
            "prometheus-alertmanager packages)",
            pytrace=False,
        )
    return path


def run(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=MONITORING, capture_output=True, text=True, timeout=120, env=env, check=False
    )


def passes(*command: str) -> str:
    done = run(tool(command[0]), *command[1:])
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def load(name: str) -> Any:
    return yaml.safe_load((MONITORING / name).read_text())


def test_promtool_accepts_the_prometheus_configuration() -> None:
    assert "SUCCESS" in passes("promtool", "check", "config", "prometheus.yml")


def test_promtool_accepts_the_alert_rules() -> None:
    assert "SUCCESS: 7 rules found" in passes("promtool", "check", "rules", "alerts.yml")


def test_every_alert_rule_passes_its_promtool_unit_tests() -> None:
    assert "SUCCESS" in passes("promtool", "test", "rules", "alerts.test.yml")


def test_every_alert_is_tested_firing_and_quiet() -> None:
    rules = [rule for group in load("alerts.yml")["groups"] for rule in group["rules"]]
    alerts = {rule["alert"] for rule in rules}
    assert alerts >= REQUIRED_ALERTS
    cases = [case for test in load("alerts.test.yml")["tests"] for case in test["alert_rule_test"]]
    fires = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert fires == alerts
    assert quiet == alerts
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["for"], rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


def test_amtool_accepts_the_alertmanager_configuration() -> None:
    assert "SUCCESS" in passes("amtool", "check-config", "alertmanager.yml")


def test_the_rendered_alertmanager_configuration_carries_the_token_and_chat(
    tmp_path: Path,
) -> None:
    rendered = tmp_path / "alertmanager.yml"
    env = {
        "PATH": os.environ["PATH"],
        "ALERTS_TELEGRAM_BOT_TOKEN": "123456:AAE-secret_token",
        "ALERTS_TELEGRAM_CHAT_ID": "-1001234567890",
    }
    done = run("sh", "alertmanager-render.sh", "alertmanager.yml", str(rendered), env=env)
    assert done.returncode == 0, done.stderr
    assert "SUCCESS" in passes("amtool", "check-config", str(rendered))
    config = yaml.safe_load(rendered.read_text())
    (telegram,) = config["receivers"][0]["telegram_configs"]
    assert telegram["bot_token"] == "123456:AAE-secret_token"
    assert telegram["chat_id"] == -1001234567890
    assert stat.S_IMODE(rendered.stat().st_mode) == 0o600
    committed = load("alertmanager.yml")["receivers"][0]["telegram_configs"][0]
    assert "placeholder" in committed["bot_token"]  # no token is ever committed


@pytest.mark.parametrize(
    ("token", "chat"),
    [(None, "-100"), ("123:abc", None), ("123:a|b", "-100"), ("abc:def", "-100"), ("1:a", "x")],
)
def test_rendering_refuses_a_missing_or_malformed_token_or_chat(
    tmp_path: Path, token: str | None, chat: str | None
) -> None:
    env = {"PATH": os.environ["PATH"]}
    env |= {"ALERTS_TELEGRAM_BOT_TOKEN": token} if token is not None else {}
    env |= {"ALERTS_TELEGRAM_CHAT_ID": chat} if chat is not None else {}
    rendered = tmp_path / "alertmanager.yml"
    done = run("sh", "alertmanager-render.sh", "alertmanager.yml", str(rendered), env=env)
    assert done.returncode != 0
    assert done.stderr
    assert not rendered.exists()


def test_prometheus_scrapes_every_replica_of_every_service_and_rabbitmq() -> None:
    jobs = {job["job_name"]: job for job in load("prometheus.yml")["scrape_configs"]}
    for service in SERVICES:  # the job is named as the service: alerts filter on it
        (discovery,) = jobs[service]["dns_sd_configs"]
        assert discovery == {**discovery, "names": [service], "type": "A", "port": 8080}
    assert "rabbitmq_prometheus" in (ROOT / "rabbitmq" / "enabled_plugins").read_text()
    assert jobs["rabbitmq"]["static_configs"] == [{"targets": ["rabbitmq:15692"]}]
    assert load("prometheus.yml")["rule_files"] == ["alerts.yml"]


def panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def test_the_dashboard_has_every_panel_asked_for_on_the_provisioned_datasource() -> None:
    datasources = yaml.safe_load(
        (MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    (datasource,) = datasources
    assert datasource["url"] == "http://prometheus:9090"
    titles = [panel["title"] for panel in panels()]
    assert set(REQUIRED_PANELS) <= set(titles)
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert metric_names(target["expr"]), (panel["title"], target["expr"])
    provider = yaml.safe_load(
        (MONITORING / "grafana/provisioning/dashboards/imagebot.yml").read_text()
    )["providers"][0]
    assert provider["options"]["path"] == "/etc/imagebot/dashboards"


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ("max by (dlq) (imagebot_dlq_messages) > 0", {("imagebot_dlq_messages", None)}),
        (
            '(up{job="gpu_runner"} == 0) or (imagebot_ready{job="gpu_runner"} == 0)',
            {("up", "gpu_runner"), ("imagebot_ready", "gpu_runner")},
        ),
        (
            "histogram_quantile(0.9, sum by (workflow, le) "
            "(rate(imagebot_jobs_eta_seconds_bucket[$__rate_interval])))",
            {("imagebot_jobs_eta_seconds_bucket", None)},
        ),
        (
            'a{x="}", job="j"} unless on (instance) group_left (b) c offset 5m',
            {("a", "j"), ("c", None)},
        ),
        ('{__name__="n"} * 1e3 and d:rate5m', {("n", None), ("d:rate5m", None)}),
        ('label_replace(up, "dst", "$1", "src", "(.*)")', {("up", None)}),
    ],
)
def test_metric_names_are_read_from_promql(expression: str, names: set[Any]) -> None:
    assert metric_names(expression) == names


def test_the_monitoring_profile_runs_what_make_test_checked_with_the_files_read_only() -> None:
    services = compose.resolve(ROOT / "compose.yaml", profiles=["monitoring"])["services"]
    assert not {"prometheus", "alertmanager", "grafana"} & set(
        compose.resolve(ROOT / "compose.yaml")["services"]
    )
    versions = {"prometheus": "promtool", "alertmanager": "amtool"}
    for name in ("prometheus", "alertmanager", "grafana"):
        service = services[name]
        assert service["profiles"] == ["monitoring"]
        tag = service["image"].rsplit(":", 1)[1]
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), service["image"]
        if name in versions:  # the same release as the tool that checked its files
            assert f"version {tag.removeprefix('v')}" in passes(versions[name], "--version")
        for volume in service["volumes"]:
            source, _, *mode = volume.split(":")
            if source.startswith("./"):
                assert mode == ["ro"], volume
                assert (ROOT / source).exists(), volume
    command = " ".join(services["prometheus"]["command"])
    assert "--config.file=/etc/imagebot/monitoring/prometheus.yml" in command
    assert "alertmanager-render.sh" in services["alertmanager"]["command"][0]
