"""The rolling-upgrade drill's pieces: a release's source, its services and `imagebot` commands,
the sandbox stack upgraded one service at a time, and users who keep playing meanwhile.

The previous release is a commit of this repository's own history (`tests/e2e/previous_release`);
its `src/`, `migrations/` and `alembic.ini` are taken with `git archive`, and its processes run
on this checkout's interpreter and packages with `PYTHONPATH` at that `src/` (and `PYTHONSAFEPATH`,
so no working directory comes first): PYTHONPATH precedes the editable install's path entry.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from imagebot.processes import SERVICES, ServiceProcess
from sandbox.stack import SandboxStack, StackConfig, free_port
from sandbox.story import (
    PACKAGE,
    PACKAGE_CREDITS,
    PRESET,
    PRESET_PRICE,
    PROMPT_PRICE,
    WELCOME_CREDITS,
    new_user,
)
from sandbox.telegram import Call
from sandbox.user import SandboxUser, picture

BUSY = "Сервис сейчас занят"
"""The gateway's answer when a service it asked failed (nothing was charged; ask again)."""
ROOT = Path(__file__).resolve().parents[2]
PREVIOUS_RELEASE = ROOT / "tests" / "e2e" / "previous_release"
PACKAGES = ("imagebot", "billing", "jobs", "bot_gateway", "gpu_runner", "messaging", "contracts")


class ReleaseMissing(RuntimeError):
    """The previous release's commit is not in this clone's history."""


@dataclass(frozen=True)
class Release:
    """Where a release's `alembic.ini`, `migrations/` and `src/` are, and what its processes
    need in their environment to import that `src/`."""

    name: str
    root: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def head(self) -> str:
        """The newest revision of its migrations."""
        config = Config(str(self.root / "alembic.ini"))
        head = ScriptDirectory.from_config(config).get_current_head()
        assert head is not None
        return head

    def imported_from(self) -> dict[str, str]:
        """Where a process started as this release's services are imports each package from."""
        probe = (
            "import importlib, json, sys; "
            "print(json.dumps({n: importlib.import_module(n).__file__ for n in sys.argv[1:]}))"
        )
        output = subprocess.run(
            [sys.executable, "-c", probe, *PACKAGES],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return dict(json.loads(output))

    def compiled(self, service: str) -> bool:
        """Whether some process compiled (imported) this release's `<service>/app.py`."""
        cached = importlib.util.cache_from_source(str(self.root / "src" / service / "app.py"))
        return Path(cached).is_file()


CURRENT = Release("current", ROOT)


def previous_release_commit() -> str:
    """The commit `tests/e2e/previous_release` names (comment lines start with #)."""
    lines = PREVIOUS_RELEASE.read_text().splitlines()
    return next(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def materialise(commit: str, into: Path) -> Release:
    """The release at `commit`, its source extracted from the repository's history."""
    found = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        raise ReleaseMissing(
            f"the previous release {commit} (tests/e2e/previous_release) is not in this "
            f"clone's history: the drill needs a full clone (git fetch --unshallow), or the "
            f"pointer names a commit that is not on main"
        )
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.Popen(
        ["git", "archive", commit, "src", "migrations", "alembic.ini"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    assert archive.stdout is not None
    subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, check=True)
    archive.stdout.close()
    if archive.wait() != 0:
        raise RuntimeError(f"git archive {commit} failed with {archive.returncode}")
    env = {
        "PYTHONPATH": str(into / "src"),
        "PYTHONSAFEPATH": "1",
        # empty is unset: the drill checks the old services' compiled files under `into`
        "PYTHONDONTWRITEBYTECODE": "",
        "PYTHONPYCACHEPREFIX": "",
    }
    return Release("previous", into, env)


@dataclass
class Replacement:
    """One service replaced: the old process's name and exit code, the new one's name."""

    service: str
    old: str
    new: str
    old_exit: int | None

    @property
    def graceful(self) -> bool:
        # uvicorn re-raises SIGTERM once it has drained; a kill after the timeout reads -9
        return self.old_exit == -signal.SIGTERM


class UpgradeStack(SandboxStack):
    """The sandbox stack started from `previous`, one process per service, that `replace`
    upgrades service by service. Gateways take Telegram's updates by webhook, so old and new
    share them as replicas behind a load balancer would; billing's replicas share YooKassa's
    notifications. `operator` is the release whose `imagebot` command the operator runs."""

    def __init__(self, config: StackConfig, previous: Release) -> None:
        super().__init__(config)
        self.operator = previous
        self.previous = previous
        self.replacements: list[Replacement] = []

    async def start(self, ready_timeout_s: float = 180.0) -> None:
        self.config.work_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.gather(self.telegram.start(), self.yookassa.start(), self._build_model())
        await self.imagebot("migrate")
        await self.imagebot("topology", "declare")
        catalog = self.previous.root / "src" / "sandbox" / "catalog.yaml"
        await self.imagebot("presets", "import", str(catalog))
        started = [  # a service new in this release (backend_api) is not in the one before
            self.spawn(service, self.previous)
            for service in SERVICES
            if (self.previous.root / "src" / service).is_dir()
        ]
        for process in started:
            self.processes[process.service] = [process]
        self._route()
        await asyncio.gather(*(process.start() for process in started))
        await asyncio.gather(*(process.ready(ready_timeout_s) for process in started))

    def spawn(self, service: str, release: Release) -> ServiceProcess:
        name = f"{service}-{release.name}"
        port = free_port()
        return ServiceProcess(
            service,
            name,
            port,
            {**self.environment(service, name, port), **release.env},
            log_path=self.config.work_dir / "logs" / f"{name}.log",
        )

    async def replace(
        self, service: str, release: Release, *, beside: Callable[[], Awaitable[None]]
    ) -> Replacement:
        """Start `release`'s instance beside the running one; once it is ready and `beside` has
        run with both serving, route no outside traffic to the old one and stop it (SIGTERM)."""
        (old,) = self.processes[service]
        new = self.spawn(service, release)
        self.processes[service] = [old, new]
        await new.start()
        await new.ready(180)
        self._route()
        await beside()
        self.processes[service] = [new]
        self._route()
        replacement = Replacement(service, old.name, new.name, await old.stop(timeout_s=90))
        self.replacements.append(replacement)
        return replacement

    def _route(self) -> None:
        """The load balancers in front of the gateways and billing: every instance listed."""
        self.telegram.push_to = [
            f"{p.url}/telegram/webhook" for p in self.processes.get("bot_gateway", [])
        ]
        self.yookassa.notify_urls = [
            f"{p.url}/webhooks/yookassa" for p in self.processes.get("billing", [])
        ]

    async def imagebot(
        self, *args: str, env: dict[str, str] | None = None, release: Release | None = None
    ) -> str:
        """`imagebot ...` of `release` (default: the operator's) run from that release's root."""
        release = release or self.operator
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "imagebot",
            *args,
            cwd=release.root,
            env={
                **os.environ,
                **self.environment("cli", "cli", 0),
                **release.env,
                **(env or {}),
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        text = output.decode(errors="replace")
        if process.returncode != 0:
            raise RuntimeError(
                f"{release.name} imagebot {' '.join(args)} exited with "
                f"{process.returncode}:\n{text}"
            )
        return text


@dataclass
class Player:
    """One user playing the story's paid steps round after round, keeping the books as they go:
    a preset on a photo, prompt-only generation, a top-up paid on YooKassa's page, /balance."""

    user: SandboxUser
    balance: int = WELCOME_CREDITS
    jobs: int = 0
    topups: int = 0
    steps: int = 0
    begun: int = 0
    rounds: int = 0
    last_round: int | None = None
    """The round to end with; None: keep playing."""
    busy: int = 0
    """How often the bot answered that it was busy (nothing charged) and the user asked again."""

    async def ask(self, text: str, contains: str, timeout_s: float = 60.0) -> Call:
        """Say `text` and wait for `contains`; told the service is busy, ask again, as the
        answer says (a schema change under a previous release's cached statements fails one
        query per connection: docs/deployment.md)."""
        for _ in range(5):
            self.user.say(text)
            try:
                return await self.user.expect(contains, timeout_s=timeout_s)
            except AssertionError:
                if not self.user.said(BUSY):
                    raise
                self.busy += 1
                await asyncio.sleep(0.5)
        raise AssertionError(f"{self.user.user.id}: the bot stayed busy answering {text!r}")

    async def play(self) -> None:
        await self.ask("/start", f"Ваш баланс: {WELCOME_CREDITS}")
        while self.last_round is None or self.begun < self.last_round:
            self.begun += 1
            await self.preset_on_a_photo()
            await self.prompt_only()
            await self.top_up()
            await self.ask("/balance", f"Ваш баланс: {self.balance}")
            self.steps += 1
            self.rounds += 1

    async def preset_on_a_photo(self) -> None:
        user = self.user
        user.photo(picture())
        categories = await user.expect("Фото получено", timeout_s=60)
        user.press(categories, "фильтры")
        presets = await user.expect("выберите пресет", timeout_s=60)
        user.press(presets, PRESET)
        confirm = await user.expect(f"Стоимость: {PRESET_PRICE} кредитов", timeout_s=60)
        user.press(confirm, "Запустить")
        self.jobs += 1
        self.balance -= PRESET_PRICE
        await user.expect("", method="sendPhoto", timeout_s=120)
        self.steps += 1

    async def prompt_only(self) -> None:
        user = self.user
        menu = await self.ask("/start", "Ваш баланс")
        user.press(menu, "Свой запрос")
        await user.expect("Опишите, что сделать", timeout_s=60)
        user.say("Маяк на скале на закате, акварель")
        offer = await user.expect("Пришлите фото для редактирования", timeout_s=60)
        user.press(offer, "Нарисовать по тексту")
        confirm = await user.expect(f"Стоимость: {PROMPT_PRICE} кредитов", timeout_s=60)
        user.press(confirm, "Запустить")
        self.jobs += 1
        self.balance -= PROMPT_PRICE
        await user.expect("", method="sendPhoto", timeout_s=120)
        self.steps += 1

    async def top_up(self) -> None:
        user = self.user
        packages = await self.ask("/topup", "Выберите пакет")
        user.press(packages, PACKAGE)
        link = await user.expect("Оплатите", timeout_s=60)
        await user.open_link(link, "₽")
        self.topups += 1
        self.balance += PACKAGE_CREDITS
        paid = f"Платёж получен: +{PACKAGE_CREDITS} кредитов. Баланс: {self.balance}"
        await user.expect(paid, timeout_s=60)
        self.steps += 1


class Players:
    """`count` users playing against `stack` until `finish`; the drill waits on their steps."""

    def __init__(self, stack: SandboxStack, count: int) -> None:
        self.players = [Player(SandboxUser(stack.telegram, new_user())) for _ in range(count)]
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(player.play(), name=f"user {player.user.user.id}")
            for player in self.players
        ]

    async def each_step(self, timeout_s: float = 180.0) -> None:
        """Until every user has finished one step more; a user's failure is raised at once."""
        began = [player.steps for player in self.players]
        await self._until(
            lambda: all(p.steps > n for p, n in zip(self.players, began, strict=True)),
            "a step more of every user",
            timeout_s,
        )

    async def finish(self, timeout_s: float = 180.0) -> None:
        """Let every user play one whole round more, begun from now on, and stop there."""
        for player in self.players:
            player.last_round = player.begun + 1
        await self._until(
            lambda: all(task.done() for task in self._tasks), "a last whole round", timeout_s
        )
        for task in self._tasks:
            task.result()

    async def _until(self, done: Callable[[], bool], what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            for task in self._tasks:
                if task.done() and task.exception() is not None:
                    task.result()  # raises the user's failure
            if time.monotonic() > deadline:
                raise AssertionError(f"users did not make {what} within {timeout_s:.0f} s")
            await asyncio.sleep(0.2)
