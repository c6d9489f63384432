"""`imagebot run all`'s supervisor on a real service process: a killed child comes back, and
stopping stops every child gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

from contracts.topology import Topology
from imagebot.processes import ServiceProcess, supervise
from sandbox.stack import free_port


async def test_a_killed_service_is_restarted_and_stop_stops_it(
    database_url: str, amqp_url: str, topology: Topology, tmp_path: Path
) -> None:
    jobs = ServiceProcess(
        "jobs",
        "jobs-1",
        free_port(),
        {
            "DATABASE_URL": database_url,
            "DATABASE_POOL_SIZE": "2",
            "AMQP_URL": amqp_url,
            "AMQP_NAMESPACE": topology.namespace,
            "SERVICE_HTTP_HOST": "127.0.0.1",
        },
        log_path=tmp_path / "jobs.log",
    )
    stopping = asyncio.Event()
    supervisor = asyncio.create_task(supervise([jobs], restart_delay_s=0.1, stopping=stopping))
    try:
        for _ in range(100):
            if jobs.starts:
                break
            await asyncio.sleep(0.05)
        await jobs.ready(60)
        first = jobs.process
        assert first is not None
        first.kill()
        for _ in range(300):
            if jobs.starts == 2:
                break
            await asyncio.sleep(0.1)
        assert jobs.starts == 2
        await jobs.ready(60)
        assert jobs.process is not first
    finally:
        stopping.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(supervisor, 60)
    assert not jobs.running
    assert jobs.process is not None
    # SIGTERM: drained and shut down (uvicorn re-raises the signal once it is done)
    assert jobs.process.returncode == -signal.SIGTERM
    log = (tmp_path / "jobs.log").read_text()
    assert log.count("Application startup complete.") == 2
    assert log.count("Application shutdown complete.") == 1  # the killed one never got there
