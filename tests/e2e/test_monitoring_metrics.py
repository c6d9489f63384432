"""Every metric the dashboard and the alert rules read is one the running services export.

The whole system is started as in production (one process per service, `imagebot run`, the
sandboxes for Telegram and YooKassa) and each service's live /metrics is read; a name no
service lists (a typo, a renamed metric, one never registered in that process) fails here.
A rule that names its job (`job="gpu_runner"`) must find the name on that service's page.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from contracts.topology import build_topology
from imagebot.processes import SERVICES
from messaging.broker import delete_topology
from sandbox.stack import SandboxStack, StackConfig
from support.database import RUN_ID, DatabaseFactory
from support.promql import PROMETHEUS_MADE, exported_names, metric_names

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"


@pytest.fixture(scope="module")
async def exported(
    databases: DatabaseFactory, amqp_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, set[str]]]:
    """Each service's /metrics names, read from the running processes."""
    namespace = f"test-{RUN_ID}-monitoring"
    config = StackConfig(
        database_url=await databases.create("monitoring"),
        amqp_url=amqp_url,
        namespace=namespace,
        work_dir=tmp_path_factory.mktemp("monitoring"),
    )
    try:
        async with SandboxStack(config) as stack, aiohttp.ClientSession() as http:
            pages: dict[str, set[str]] = {}
            for service, (process, *_) in stack.processes.items():
                async with http.get(f"{process.url}/metrics") as answer:
                    assert answer.status == 200
                    pages[service] = exported_names(await answer.text())
            yield pages
    finally:
        await delete_topology(amqp_url, build_topology(namespace))


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana" / "dashboards" / "imagebot.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def rule_expressions() -> list[str]:
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def unknown(expressions: list[str], exported: dict[str, set[str]]) -> list[str]:
    anywhere = set().union(*exported.values()) | PROMETHEUS_MADE
    missing = []
    for expression in expressions:
        for name, job in metric_names(expression):
            known = anywhere if job is None else exported[job] | PROMETHEUS_MADE
            if name not in known:
                missing.append(f"{name}{{job={job!r}}} in {expression!r}")
    return missing


def test_every_service_exports_the_delivery_metrics(exported: dict[str, set[str]]) -> None:
    assert set(exported) == set(SERVICES)  # every service, backend_api too
    for service, names in exported.items():
        assert {"imagebot_ready", "imagebot_messages_consumed_total"} <= names, service


def test_every_dashboard_query_reads_exported_metrics(exported: dict[str, set[str]]) -> None:
    expressions = dashboard_expressions()
    assert len(expressions) >= 9
    assert unknown(expressions, exported) == []


def test_every_alert_rule_reads_exported_metrics(exported: dict[str, set[str]]) -> None:
    assert unknown(rule_expressions(), exported) == []


def test_a_name_no_service_exports_is_caught(exported: dict[str, set[str]]) -> None:
    assert unknown(["rate(imagebot_jobs_done_total[5m])"], exported)
    assert unknown(['imagebot_gpu_busy_ratio{job="billing"}'], exported)
