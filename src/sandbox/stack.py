"""The whole system on this machine, with sandboxes for the outside world.

Every service runs as its own process (`replicas` of each) exactly as in production, from the
same `imagebot run SERVICE` entry point; only the outside world is replaced: the Telegram Bot
API and YooKassa by the sandbox servers here (in this process, so a script can play users and
pay), and model weights by a tiny random Qwen-Image built offline. The runners serve the CPU
`pillow_filter` workflow (the sandbox catalog) and `qwen_image` (prompt-only generation).

The database and the broker namespace are the caller's: the stack migrates the database,
declares the topology and imports the sandbox catalog through the `imagebot` command itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pyotp

from imagebot.processes import SERVICES, ServiceProcess
from sandbox.telegram import TOKEN, TelegramSandbox
from sandbox.yookassa import YooKassaSandbox

log = logging.getLogger(__name__)

CATALOG = Path(__file__).with_name("catalog.yaml")
WEBHOOK_SECRET = "sandbox-webhook-secret"


@dataclass
class StackConfig:
    database_url: str
    amqp_url: str
    namespace: str
    work_dir: Path
    """Logs, the object store and the tiny model live here."""
    replicas: int = 1
    base_port: int = 0
    """The first replica's HTTP port, the next ones following; 0: free ports the system picks."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra settings for every service (they win over the stack's own)."""
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    """Extra settings per service, e.g. {"gpu_runner": {"GPU_PILLOW_FILTER_STEPS": "4"}}."""


OPERATOR_LOGIN, OPERATOR_PASSWORD = "operator", "sandbox-operator"
"""The sandbox's operator of the backend API's panel, an admin (the demo prints it), made with
`imagebot admin create-user`; their one-time codes: `SandboxStack.operator_code()`."""
SESSION_SECRET = "sandbox-panel-session-secret-not-for-production"


def panel_url(stack: SandboxStack) -> str:
    """Where the sandbox's operators' panel answers (its first replica)."""
    return f"{stack.processes['backend_api'][0].url}/panel"


def free_port() -> int:
    """A TCP port nothing listens on now (two stacks on one machine must not share one)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SandboxStack:
    """`async with SandboxStack(config) as stack:` the system is up and ready."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.telegram = TelegramSandbox()
        self.yookassa = YooKassaSandbox()
        self.processes: dict[str, list[ServiceProcess]] = {}
        self.operator_totp_uri = ""
        """The operator's second factor, as `imagebot admin create-user` printed it."""
        self._operator_token: str | None = None
        self._operator_step = 0

    async def __aenter__(self) -> SandboxStack:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def models_dir(self) -> Path:
        return self.config.work_dir / "models"

    @property
    def all_processes(self) -> list[ServiceProcess]:
        return [process for replicas in self.processes.values() for process in replicas]

    async def start(self, ready_timeout_s: float = 180.0) -> None:
        self.config.work_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.gather(self.telegram.start(), self.yookassa.start(), self._build_model())
        await self.imagebot("migrate")
        await self.imagebot("topology", "declare")
        await self.imagebot("presets", "import", str(CATALOG))
        enrolled = await self.imagebot(
            "admin", "create-user", OPERATOR_LOGIN, "--role", "admin", stdin=OPERATOR_PASSWORD
        )
        uri = re.search(r"otpauth://\S+", enrolled)
        assert uri is not None, enrolled
        self.operator_totp_uri = uri[0]
        port = self.config.base_port
        for service in SERVICES:
            replicas = self.processes[service] = []
            for n in range(1, self.config.replicas + 1):
                name = f"{service}-{n}"
                if not self.config.base_port:
                    port = free_port()
                replicas.append(
                    ServiceProcess(
                        service,
                        name,
                        port,
                        self.environment(service, name, port),
                        log_path=self.config.work_dir / "logs" / f"{name}.log",
                    )
                )
                port += 1
        self.yookassa.notify_urls = [
            f"{p.url}/webhooks/yookassa" for p in self.processes["billing"]
        ]
        if self.config.replicas > 1:  # webhooks spread over the gateways, as a load balancer would
            self.telegram.push_to = [
                f"{p.url}/telegram/webhook" for p in self.processes["bot_gateway"]
            ]
        await asyncio.gather(*(process.start() for process in self.all_processes))
        await asyncio.gather(*(process.ready(ready_timeout_s) for process in self.all_processes))

    async def stop(self) -> None:
        await asyncio.gather(*(process.stop() for process in self.all_processes))
        await asyncio.gather(self.telegram.stop(), self.yookassa.stop())

    def environment(self, service: str, name: str, port: int) -> dict[str, str]:
        """What one replica is configured with: the sandboxes' addresses, quick test knobs."""
        config = self.config
        gateway_mode = "webhook" if config.replicas > 1 else "polling"
        env = {
            "DATABASE_URL": config.database_url,
            "AMQP_URL": config.amqp_url,
            "AMQP_NAMESPACE": config.namespace,
            "SERVICE_HTTP_HOST": "127.0.0.1",
            "SERVICE_LOG_FORMAT": "json",
            "STORAGE_BACKEND": "local",
            "STORAGE_LOCAL_ROOT": str(config.work_dir / "objects"),
            # billing
            "YOOKASSA_API_URL": self.yookassa.api_url,
            "YOOKASSA_SHOP_ID": "100500",
            "YOOKASSA_SECRET_KEY": "sandbox-secret-key",
            "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
            # bot_gateway
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_API_URL": self.telegram.base_url,
            "TELEGRAM_MODE": gateway_mode,
            "TELEGRAM_WEBHOOK_URL": f"http://127.0.0.1:{port}",
            "TELEGRAM_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "TELEGRAM_POLLING_TIMEOUT_S": "1",
            # gpu_runner
            "GPU_RUNNER_ID": name,
            "GPU_WORKFLOWS": "pillow_filter,qwen_image",
            "GPU_MODELS_DIR": str(self.models_dir),
            "GPU_QWEN_IMAGE_RESOLUTION": "256",
            "GPU_QWEN_IMAGE_STEPS": "8",
            "GPU_QWEN_IMAGE_GUIDANCE": "1.0",
            # backend_api (its operator is in the database: see `start`)
            "BACKEND_API_SESSION_SECRET": SESSION_SECRET,
        }
        env.update(config.env)
        env.update(config.service_env.get(service, {}))
        return env

    def operator_code(self) -> str:
        """A one-time code of the sandbox operator (what their authenticator app shows), never
        one it gave before: this step's, or the next one's (the server takes one step either
        side of now, each code once), so the demo's sign-ins (its API session, the panel's
        screenshots) do not replay each other. At most two within 30 s."""
        secret = re.search(r"secret=([A-Z2-7]+)", self.operator_totp_uri)
        assert secret is not None, self.operator_totp_uri
        totp = pyotp.TOTP(secret[1])
        now = totp.timecode(time.time())
        step = max(now, self._operator_step + 1)
        if step > now + 1:
            raise RuntimeError("the sandbox operator signed in twice in 30 s already; wait")
        self._operator_step = step
        return totp.generate_otp(step)

    async def operator_token(self) -> str:
        """A session token of the sandbox operator (signed in once, through the first
        backend API replica, with a one-time code): `Authorization: Bearer <token>`."""
        if self._operator_token is None:
            sign_in = {
                "login": OPERATOR_LOGIN,
                "password": OPERATOR_PASSWORD,
                "code": self.operator_code(),
            }
            url = f"{self.processes['backend_api'][0].url}/api/v1/sessions"
            async with aiohttp.ClientSession() as http, http.post(url, json=sign_in) as answer:
                assert answer.status == 201, await answer.text()
                self._operator_token = str((await answer.json())["token"])
        return self._operator_token

    async def imagebot(
        self, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
    ) -> str:
        """Run an `imagebot` command against the stack's database and broker (`stdin`, a line
        on its standard input); its output."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "imagebot",
            *args,
            env={**os.environ, **self.environment("cli", "cli", 0), **(env or {})},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate(f"{stdin}\n".encode() if stdin is not None else b"")
        text = output.decode(errors="replace")
        if process.returncode != 0:
            raise RuntimeError(
                f"imagebot {' '.join(args)} exited with {process.returncode}:\n{text}"
            )
        return text

    async def _build_model(self) -> None:
        """The tiny random Qwen-Image the runners load like real weights (built once)."""
        target = self.models_dir / "Qwen-Image"
        if (target / "model_index.json").exists():
            return
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sandbox.models",
            "text-to-image",
            str(target),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"building the sandbox model failed:\n{output.decode()}")
