"""`imagebot demo`: the whole system on this machine, one scripted user, no credentials.

A fresh database (`<DATABASE_URL's server>/imagebot_demo`) and broker namespace
(`imagebot_demo`), the four services as processes, the sandbox Telegram Bot API and YooKassa,
a tiny random Qwen-Image for prompt-only generation; then the story of `sandbox.story`, printed
as the user sees it. Result images land in the output directory, screenshots of the operators'
panel in its `panel/` folder, logs and the object store in its `sandbox/` folder.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from sqlalchemy.engine import make_url

from contracts.topology import build_topology
from imagebot.database import drop_database
from messaging.broker import delete_topology
from sandbox.screenshots import panel_screenshots
from sandbox.stack import OPERATOR_LOGIN, OPERATOR_PASSWORD, SandboxStack, StackConfig, panel_url
from sandbox.story import new_user, play
from sandbox.user import SandboxUser, Transcript

log = logging.getLogger(__name__)

NAME = "imagebot_demo"


async def run_demo(database_url: str, amqp_url: str, output: Path, *, replicas: int = 1) -> int:
    """Play the story; the final balance. Raises (with the services' log tails) on failure."""
    url = make_url(database_url).set(database=NAME).render_as_string(hide_password=False)
    await drop_database(url)
    await delete_topology(amqp_url, build_topology(NAME))
    config = StackConfig(
        database_url=url,
        amqp_url=amqp_url,
        namespace=NAME,
        work_dir=output / "sandbox",
        replicas=replicas,
        # show the runner's progress on the status message: a few visible steps
        service_env={"gpu_runner": {"GPU_PILLOW_FILTER_STEPS": "4",
                                    "GPU_PILLOW_FILTER_STEP_DELAY_S": "0.5",
                                    "GPU_PROGRESS_INTERVAL_S": "0.4"},
                     "bot_gateway": {"DELIVERY_EDIT_INTERVAL_S": "1.0"}},
    )  # fmt: skip
    began = time.monotonic()
    print(f"starting the system: {replicas} replica(s) of each service, sandboxes, tiny model …")
    async with SandboxStack(config) as stack:
        ready = time.monotonic() - began
        print(f"ready in {ready:.1f} s; logs in {config.work_dir / 'logs'}")
        print(
            f"operators' panel: {panel_url(stack)} "
            f"(login {OPERATOR_LOGIN}, password {OPERATOR_PASSWORD}, an admin: one-time codes "
            f"from {stack.operator_totp_uri} in an authenticator app)\n"
        )
        user = new_user()
        with Transcript(stack.telegram, user.id, images_dir=output) as transcript:
            result = await play(
                stack,
                SandboxUser(stack.telegram, user, transcript),
                transcript,
                reprice_preset=True,
            )
        shots = await panel_screenshots(stack, output / "panel")
        print(f"panel screenshots: {', '.join(map(str, shots)) or 'none (see the log)'}")
    print("\nsteps: " + ", ".join(f"{name} {s:.2f} s" for name, s in result.steps.items()))
    print(f"balance {result.balance} credits; images: {', '.join(map(str, result.images))}")
    print(f"(database {NAME} and namespace {NAME} stay for a look; the next demo resets them)")
    return result.balance
