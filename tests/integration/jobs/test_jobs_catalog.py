"""`imagebot presets import/export` on the real database and broker, and the gateway's reads."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contracts.events import PresetsChanged
from contracts.rpc import JobHistory, ListJobs, ListPresets, PresetCatalog
from contracts.topology import Topology
from jobs.catalog import PresetSpec, parse_catalog, read_catalog_file
from messaging.rpc import RpcClient
from support.database import ROOT
from support.jobs_harness import EventLog, JobsPlayer

CATALOG = ROOT / "catalog/presets.yaml"
IMAGEBOT = Path(sys.executable).with_name("imagebot")


async def imagebot(
    *args: str, database_url: str, amqp_url: str, topology: Topology
) -> tuple[int, str, str]:
    command = await asyncio.create_subprocess_exec(
        str(IMAGEBOT),
        *args,
        env={
            **os.environ,
            "DATABASE_URL": database_url,
            "AMQP_URL": amqp_url,
            "AMQP_NAMESPACE": topology.namespace,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(command.communicate(), timeout=60)
    return command.returncode or 0, out.decode(), err.decode()


def _key(spec: PresetSpec) -> tuple[str, str]:
    return spec.category, spec.name


@pytest.fixture
async def rpc(amqp_url: str, topology: Topology) -> AsyncIterator[RpcClient]:
    client = RpcClient(amqp_url, topology, timeout_s=5)
    yield client
    await client.close()


async def test_import_of_the_shipped_catalog_then_export_gives_the_same_data(
    jobs_database_url: str, amqp_url: str, topology: Topology, events: EventLog
) -> None:
    urls = {"database_url": jobs_database_url, "amqp_url": amqp_url, "topology": topology}
    code, out, err = await imagebot("presets", "import", str(CATALOG), **urls)
    assert code == 0, err
    assert "10 presets: 10 created, 0 updated, 0 unchanged" in out
    (changed,) = await events.wait_for(PresetsChanged)  # published by the command's relay pass

    code, exported, err = await imagebot("presets", "export", **urls)
    assert code == 0, err
    shipped = read_catalog_file(CATALOG)
    assert sorted(parse_catalog(exported), key=_key) == sorted(shipped, key=_key)

    code, out, err = await imagebot("presets", "import", str(CATALOG), **urls)
    assert code == 0, err
    assert "0 created, 0 updated, 10 unchanged" in out
    assert f"revision {changed.revision}" in out
    await asyncio.sleep(0.3)
    assert len(events.of(PresetsChanged)) == 1  # nothing changed, nothing announced


async def test_an_import_updates_by_category_and_name_and_announces_the_new_revision(
    jobs_database_url: str, amqp_url: str, topology: Topology, events: EventLog, tmp_path: Path
) -> None:
    urls = {"database_url": jobs_database_url, "amqp_url": amqp_url, "topology": topology}
    assert (await imagebot("presets", "import", str(CATALOG), **urls))[0] == 0
    edited = tmp_path / "edited.yaml"
    edited.write_text(
        "presets:\n"
        "  - {category: фото, name: Ретушь портрета, prompt: Retouch gently, price: 45}\n"
        "  - {category: фото, name: Сепия, prompt: Make it sepia, price: 10, "
        "workflow_type: pillow_filter}\n",
        encoding="utf-8",
    )
    code, out, err = await imagebot("presets", "import", str(edited), **urls)
    assert code == 0, err
    assert "1 created, 1 updated, 0 unchanged" in out
    await events.wait_for(PresetsChanged, count=2)
    code, exported, _ = await imagebot("presets", "export", **urls)
    specs = {(spec.category, spec.name): spec for spec in parse_catalog(exported)}
    assert len(specs) == 11
    assert (specs["фото", "Ретушь портрета"].price, specs["фото", "Сепия"].price) == (45, 10)


async def test_a_malformed_file_is_refused_with_the_line_and_reason(
    jobs_database_url: str, amqp_url: str, topology: Topology, tmp_path: Path
) -> None:
    urls = {"database_url": jobs_database_url, "amqp_url": amqp_url, "topology": topology}
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "presets:\n  - category: фото\n    name: Ретушь\n    prompt: Retouch\n    price: дорого\n",
        encoding="utf-8",
    )
    code, _, err = await imagebot("presets", "import", str(broken), **urls)
    assert code == 1
    assert f"refused: {broken}: line 5: price: Input should be a valid integer" in err
    code, exported, _ = await imagebot("presets", "export", **urls)
    assert exported.strip() == "presets: []"  # nothing of the file was written


async def test_the_gateway_reads_the_catalog_and_a_users_jobs_over_request_reply(
    jobs_database_url: str,
    amqp_url: str,
    topology: Topology,
    jobs: None,
    player: JobsPlayer,
    rpc: RpcClient,
) -> None:
    urls = {"database_url": jobs_database_url, "amqp_url": amqp_url, "topology": topology}
    assert (await imagebot("presets", "import", str(CATALOG), **urls))[0] == 0
    (changed,) = await player.events.wait_for(PresetsChanged)

    catalog = await rpc.call(ListPresets(), PresetCatalog)
    assert catalog.revision == changed.revision
    assert catalog.custom_prompt_price == 30
    assert len(catalog.presets) == 10
    assert [view.category for view in catalog.presets[:1]] == ["иллюстрация"]
    assert all(view.needs_image for view in catalog.presets)

    first = await player.submit(2, preset_id=catalog.presets[0].id)
    second = await player.submit(2, prompt="a lighthouse at dawn", image_key=None)
    history = await rpc.call(ListJobs(user_id=2), JobHistory)
    assert [(job.job_id, job.status, job.price) for job in history.jobs] == [
        (second.job_id, "awaiting_payment", 30),
        (first.job_id, "awaiting_payment", catalog.presets[0].price),
    ]
