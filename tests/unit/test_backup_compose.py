"""compose.yaml's `backup` service runs the scripts the restore drill
(tests/integration/test_backup_restore.py) runs, against the compose database, with the
server's pg_dump; its healthcheck turns unhealthy when the newest dump is too old."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from support import compose

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose.resolve(ROOT / "compose.yaml")["services"]
    return found


def test_backup_dumps_the_compose_database_with_the_servers_own_pg_dump(
    services: dict[str, dict[str, Any]],
) -> None:
    backup, postgres = services["backup"], services["postgres"]
    assert backup["image"] == postgres["image"]  # pg_dump of the server's major version
    assert backup["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert backup["restart"] == "unless-stopped"
    server = postgres["environment"]
    assert backup["environment"]["PGHOST"] == "postgres"
    assert backup["environment"]["PGUSER"] == server["POSTGRES_USER"]
    assert backup["environment"]["PGPASSWORD"] == server["POSTGRES_PASSWORD"]
    assert backup["environment"]["PGDATABASE"] == server["POSTGRES_DB"]


def test_backup_runs_the_drilled_scripts_into_its_own_directory(
    services: dict[str, dict[str, Any]],
) -> None:
    backup = services["backup"]
    mounts = dict(volume.split(":")[:2] for volume in backup["volumes"])
    assert mounts["./postgres"] == "/imagebot"
    assert mounts["./backups"] == backup["environment"]["BACKUP_DIR"]
    assert "sh /imagebot/backup.sh" in backup["entrypoint"][-1]
    assert (ROOT / "postgres" / "backup.sh").is_file()
    assert (ROOT / "postgres" / "restore.sh").is_file()


def healthy(services: dict[str, dict[str, Any]], directory: Path) -> bool:
    kind, probe = services["backup"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    environment = services["backup"]["environment"] | {"BACKUP_DIR": str(directory)}
    answer = subprocess.run(["sh", "-c", probe], env=os.environ | environment, check=False)
    return answer.returncode == 0


def test_backup_is_unhealthy_without_a_dump_younger_than_two_intervals(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    interval = int(services["backup"]["environment"]["BACKUP_INTERVAL_S"])
    assert not healthy(services, tmp_path)
    (tmp_path / ".imagebot-20261204T030000.000Z.dump.partial").touch()  # one being written
    (tmp_path / "other-20261204T030000.000Z.dump").touch()  # another database's
    assert not healthy(services, tmp_path)
    dump = tmp_path / "imagebot-20261204T030000.000Z.dump"
    dump.touch()
    assert healthy(services, tmp_path)
    two_intervals_ago = time.time() - 2 * interval - 90
    os.utime(dump, (two_intervals_ago, two_intervals_ago))
    assert not healthy(services, tmp_path)
