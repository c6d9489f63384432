"""The demo's story, played by one Russian-speaking user against a running `SandboxStack`:

/start → a preset on a photo → its result → prompt-only generation → top-up → payment page
and YooKassa's webhook → /balance → a top-up in Telegram Stars (invoice, pre-checkout, successful
payment) → an operator's refunds to the buyer, half the YooKassa top-up and the Stars top-up
whole (`imagebot billing refund`, both at once), each told in the chat, and /balance → the
weekly bonus (the operator runs this week's round) → /history → (the demo's single user only)
an operator reprices the preset through the backend API and the user's next confirmation asks
the new price. Each step waits for what the user would see and fails loudly if it never comes.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from sandbox.stack import SandboxStack
from sandbox.telegram import TgUser
from sandbox.user import SandboxUser, Transcript, picture

WELCOME_CREDITS = 60
PRESET, PRESET_PRICE = "Карандашный контур", 20
PROMPT_PRICE = 30  # JOBS_CUSTOM_PROMPT_PRICE
PACKAGE, PACKAGE_CREDITS = "100 кредитов за 100 ₽", 100
STARS_PACKAGE, STARS_CREDITS = "100 кредитов за 50 ⭐", 100  # BILLING_STARS_PACKAGES' first
STARS_PRICE = 50
BONUS_CREDITS = 30  # BONUS_CREDITS
REFUND_RUBLES, REFUND_CREDITS = "50.00", 50  # half the package: half its credits back out
REPRICED = 25
"""What the operator reprices PRESET to (the demo's last step)."""

_user_ids = itertools.count(random.randrange(10**6, 2 * 10**6) * 10**4 + 2**33)


def new_user(language: str = "ru", name: str = "Аня") -> TgUser:
    """A Telegram user above 32 bits (Telegram's ids are), unique within this process."""
    return TgUser(id=next(_user_ids), first_name=name, language_code=language)


class BonusRound:
    """The operator runs this week's bonus round once all `players` reached that step."""

    def __init__(self, stack: SandboxStack, players: int = 1) -> None:
        self._stack = stack
        self._arrived = asyncio.Barrier(players)
        self._granted = asyncio.Barrier(players)

    async def run(self) -> None:
        if await self._arrived.wait() == 0:
            await self._stack.imagebot("billing", "bonus")
        await self._granted.wait()


@dataclass
class StoryResult:
    balance: int
    steps: dict[str, float] = field(default_factory=dict)
    """Seconds each step took, from the user's first action to the last thing awaited."""
    images: list[Path] = field(default_factory=list)


async def reprice(stack: SandboxStack, name: str, price: int, reason: str) -> str:
    """An operator reprices the preset `name` through the backend API (as a script would:
    signed in, a new idempotency key, a reason); what the API answered, in a line."""
    token = await stack.operator_token()
    async with aiohttp.ClientSession(
        base_url=stack.processes["backend_api"][0].url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=aiohttp.ClientTimeout(total=30),
    ) as http:
        async with http.get("/api/v1/presets", params={"limit": 200}) as answer:
            assert answer.status == 200, await answer.text()
            (preset,) = [p for p in (await answer.json())["items"] if p["name"] == name]
        change = {"price": price, "reason": reason}
        key = {"Idempotency-Key": str(uuid.uuid4())}
        path = f"/api/v1/presets/{preset['id']}"
        async with http.patch(path, json=change, headers=key) as answer:
            assert answer.status == 200, await answer.text()
            applied = await answer.json()
    assert applied["status"] == "applied", applied
    return f"PATCH {path} price {preset['price']} → {price}: {applied['status']}"


async def play(
    stack: SandboxStack,
    user: SandboxUser,
    transcript: Transcript | None = None,
    bonus: BonusRound | None = None,
    *,
    reprice_preset: bool = False,
) -> StoryResult:
    """Play the story (several users at once share one `bonus` round); what it came to.
    `reprice_preset`: end with an operator repricing the preset (for one player alone: the
    others' confirmations would change under them)."""
    result = StoryResult(balance=WELCOME_CREDITS)
    bonus = bonus or BonusRound(stack)

    @asynccontextmanager
    async def step(name: str) -> AsyncIterator[None]:
        if transcript is not None:
            transcript.line("──", name)
        began = time.monotonic()
        yield
        result.steps[name] = time.monotonic() - began

    async with step("/start"):
        user.say("/start")
        await user.expect(f"Ваш баланс: {WELCOME_CREDITS}")

    async with step("a preset on a photo"):
        user.photo(picture())
        categories = await user.expect("Фото получено")
        user.press(categories, "фильтры")
        presets = await user.expect("выберите пресет")
        user.press(presets, PRESET)
        confirm = await user.expect(f"Стоимость: {PRESET_PRICE} кредитов")
        user.press(confirm, "Запустить")
        await user.expect("", method="sendPhoto", timeout_s=120)
        result.balance -= PRESET_PRICE

    async with step("prompt-only generation"):
        user.say("/start")
        menu = await user.expect("Ваш баланс")
        user.press(menu, "Свой запрос")
        await user.expect("Опишите, что сделать")
        user.say("Маяк на скале на закате, акварель")
        offer = await user.expect("Пришлите фото для редактирования")
        user.press(offer, "Нарисовать по тексту")
        confirm = await user.expect(f"Стоимость: {PROMPT_PRICE} кредитов")
        user.press(confirm, "Запустить")
        await user.expect("", method="sendPhoto", timeout_s=300)
        result.balance -= PROMPT_PRICE

    async with step("top-up"):
        user.say("/topup")
        packages = await user.expect("Выберите пакет")
        user.press(packages, PACKAGE)
        link = await user.expect("Оплатите")
        paid = link.button("₽")["url"].rsplit("/", 1)[-1]  # the sandbox checkout's payment
        await user.open_link(link, "₽")
        result.balance += PACKAGE_CREDITS
        await user.expect(f"Платёж получен: +{PACKAGE_CREDITS} кредитов. Баланс: {result.balance}")

    async with step("/balance"):
        user.say("/balance")
        await user.expect(f"Ваш баланс: {result.balance}")

    async with step("top-up with Telegram Stars"):
        user.say("/topup")
        packages = await user.expect("Выберите пакет")
        user.press(packages, STARS_PACKAGE)
        invoice = await user.expect(f"{STARS_CREDITS} кредитов", method="sendInvoice")
        charge = await user.pay_invoice(invoice)
        result.balance += STARS_CREDITS
        await user.expect(f"Платёж получен: +{STARS_CREDITS} кредитов. Баланс: {result.balance}")

    async with step("operator refunds"):
        payment_id = stack.yookassa.payments[paid]["metadata"]["payment_id"]
        rubles = ("billing", "refund", "--payment-id", payment_id, "--key", f"demo-{paid}",
                  "--amount", REFUND_RUBLES, "--reason", "demo: half back")  # fmt: skip
        stars = ("billing", "refund", "--charge", charge, "--key", f"demo-{charge}",
                 "--reason", "demo: Stars back")  # fmt: skip
        user.mark()
        outputs = await asyncio.gather(stack.imagebot(*rubles), stack.imagebot(*stars))
        if transcript is not None:
            for command, output in zip((rubles, stars), outputs, strict=True):
                transcript.line("⚙️", "operator: imagebot " + " ".join(command))
                transcript.line("⚙️", output.strip().splitlines()[-1])
        await user.expect(f"Пополнение возвращено: {REFUND_RUBLES.replace('.00', '')} ₽")
        await user.expect(f"Пополнение возвращено: {STARS_PRICE} ⭐")
        result.balance -= REFUND_CREDITS + STARS_CREDITS
        user.say("/balance")
        await user.expect(f"Ваш баланс: {result.balance}")

    async with step("weekly bonus"):
        if transcript is not None:
            transcript.line("⚙️", "operator: imagebot billing bonus")
        user.mark()
        await bonus.run()
        result.balance += BONUS_CREDITS
        await user.expect(
            f"Еженедельный бонус: +{BONUS_CREDITS} кредитов. Баланс: {result.balance}"
        )

    async with step("/history"):
        user.say("/history")
        await user.expect("Последние изображения")

    if reprice_preset:
        async with step("an operator reprices the preset"):
            said = await reprice(stack, PRESET, REPRICED, "demo: the filter costs more now")
            if transcript is not None:
                transcript.line("⚙️", "operator, through the backend API: " + said)
            user.photo(picture())  # the bot shows the new price at once
            user.press(await user.expect("Фото получено"), "фильтры")
            user.press(await user.expect("выберите пресет"), f"{PRESET} · {REPRICED}")
            await user.expect(f"Стоимость: {REPRICED} кредитов")

    if transcript is not None:
        transcript.flush()
        result.images = list(transcript.images)
    return result
