"""Services as child processes: start, wait until ready, stop, kill, restart, supervise.

`imagebot run all` supervises one process per service on this machine; the demo, the end-to-end
tests, the benchmark and the fault suite start several replicas of each against the sandboxes
and kill them at will. Each child is `python -m imagebot run SERVICE` with its own environment
and HTTP port, its output appended to a log file (or inherited).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp

log = logging.getLogger(__name__)

SERVICES = ("billing", "jobs", "bot_gateway", "gpu_runner", "backend_api")
HEALTHY_RUN_S = 60.0
"""A process that ran this long before it exited is restarted after the shortest delay again."""


class NotReady(RuntimeError):
    """A service did not answer /readyz in time (or exited first)."""


@dataclass
class ServiceProcess:
    """One service replica: `name` (e.g. `jobs-2`) serving /readyz on `port`."""

    service: str
    name: str
    port: int
    env: Mapping[str, str]
    log_path: Path | None = None
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        if self.running:
            return
        env = {**os.environ, **self.env, "SERVICE_HTTP_PORT": str(self.port)}
        output: IO[bytes] | None = None
        self._finish()  # a child that exited by itself left its log open
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = output = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "imagebot",
            "run",
            self.service,
            env=env,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT if output is not None else None,
            start_new_session=True,  # a terminal's Ctrl-C reaches the supervisor only
        )
        self.starts += 1

    async def ready(self, timeout_s: float = 60.0) -> None:
        """Wait until /readyz answers 200: connected, consuming, database reachable."""
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while True:
                if not self.running:
                    raise NotReady(f"{self.name} exited with {self._returncode()}{self._tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{self.url}/readyz") as answer:
                        if answer.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise NotReady(f"{self.name} not ready after {timeout_s:.0f} s{self._tail()}")
                await asyncio.sleep(0.2)

    async def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (graceful: drain, flush the outbox), SIGKILL if it takes over `timeout_s`."""
        if self.process is None:
            return None
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout_s)
            except TimeoutError:
                log.warning("%s did not stop within %.0f s; killing it", self.name, timeout_s)
                await self.kill()
        return self._finish()

    async def kill(self) -> int | None:
        """SIGKILL: no drain, no flush; what was in hand must survive elsewhere."""
        if self.process is None:
            return None
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
        return self._finish()

    async def restart(self, *, kill: bool = False, ready_timeout_s: float = 60.0) -> None:
        await (self.kill() if kill else self.stop())
        await self.start()
        await self.ready(ready_timeout_s)

    async def wait(self) -> int:
        assert self.process is not None
        return await self.process.wait()

    def _finish(self) -> int | None:
        if self._log is not None:
            self._log.close()
            self._log = None
        return self._returncode()

    def _returncode(self) -> int | None:
        return self.process.returncode if self.process is not None else None

    def _tail(self, lines: int = 15) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n  " + "\n  ".join(tail) if tail else ""


async def supervise(
    processes: list[ServiceProcess],
    *,
    restart_delay_s: float = 1.0,
    stopping: asyncio.Event | None = None,
) -> None:
    """Run `processes` until `stopping` is set (default: SIGINT/SIGTERM), restarting any that
    exits (1 s, then doubling up to 30 s while it keeps dying); then stop them all."""
    stop = stopping or asyncio.Event()
    if stopping is None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
    for process in processes:
        await process.start()
        log.info("%s started (port %d)", process.name, process.port)

    async def keep_running(process: ServiceProcess) -> None:
        delay = restart_delay_s
        while not stop.is_set():
            began = time.monotonic()
            code = await process.wait()
            if stop.is_set():
                return
            if time.monotonic() - began > HEALTHY_RUN_S:
                delay = restart_delay_s
            log.error("%s exited with %s; restarting in %.0f s", process.name, code, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
            await process.start()
            delay = min(delay * 2, 30.0)

    watchers = [asyncio.create_task(keep_running(process)) for process in processes]
    await stop.wait()
    log.info("stopping %d services", len(processes))
    await asyncio.gather(*(process.stop() for process in processes))
    for watcher in watchers:
        watcher.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)
