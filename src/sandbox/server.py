"""Serving a sandbox's aiohttp app on a free local port."""

from __future__ import annotations

from aiohttp import web


async def listen(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve `app` on 127.0.0.1 at a port the system picks: the runner (to clean up) and port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, int(runner.addresses[0][1])
