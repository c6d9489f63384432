import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from contracts import CATALOG
from imagebot.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_topology_export_prints_the_committed_definitions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AMQP_NAMESPACE", raising=False)
    result = runner.invoke(app, ["topology", "export"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == json.loads((ROOT / "rabbitmq/definitions.json").read_text())


def test_contracts_export_writes_the_committed_schemas(tmp_path: Path) -> None:
    result = runner.invoke(app, ["contracts", "export", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = sorted(path.name for path in tmp_path.iterdir())
    assert len(written) == len(CATALOG)
    for name in written:
        committed = (ROOT / "docs/events" / name).read_text()
        assert (tmp_path / name).read_text() == committed, name


def test_run_refuses_an_unknown_service() -> None:
    result = runner.invoke(app, ["run", "printer"])
    assert result.exit_code != 0
    assert "unknown service 'printer'" in result.output
