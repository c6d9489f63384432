"""How soon the next screen shows after a tap, against a fake Bot API enforcing Telegram's limits.

The sandbox Bot API answers 429 with `retry_after` past: 30 messages (sends and edits) in any
second bot-wide, per private chat a burst of 5 refilled at one a second, per group 20 a minute
(answerCallbackQuery is not counted). The gateway runs as `imagebot run bot_gateway` runs it
(its `create_app`, configured from the environment, polling the sandbox, on a throwaway
database and broker namespace), with Telegram's budget in force (not raised for the bench).
A tap is a press of a main-menu button («Меню», «Помощь»: answered by the gateway alone); the
next screen is the first message the bot sends into that chat afterwards, timed at the fake
API from the moment the update was handed to the bot.

1. A quick user: 6 taps, each 0.3 s after the previous answer (`--quick-users` such users, one
   after another). First as a baseline with no burst per chat (DELIVERY_CHAT_BURST=1: one
   message a second, the gateway before lanes and bursts), then as configured.
2. A crowd while a broadcast runs: an operator broadcasts to `--chats` chats, and `--crowd`
   users tap, each pausing `--pause-s` (uniformly, 10–20 s) between an answer and the next tap
   (≈ 13 taps/s for 200 users, under half the bot-wide budget), for `--seconds`. The broadcast
   should take the budget the replies leave.

Last line: `BENCH quick_p50_ms=… quick_p99_ms=… crowd_p99_ms=… http_429=…` (targets: quick
p50 ≤ 100 ms, p99 ≤ 300 ms; crowd p99 ≤ 300 ms; zero 429).

    make bench-chat             # or: python bench/chat.py --chats 10000 --crowd 200 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from bench.common import percentile  # noqa: E402
from bench.gateway import ADMIN, FIRST_CHAT, TEXT, running_gateway  # noqa: E402
from bot_gateway.keyboards import MenuAction  # noqa: E402
from sandbox.telegram import TelegramSandbox, TgUser  # noqa: E402

TAPS = ("menu", "help")
ANSWER_TIMEOUT_S = 30.0


async def tap(telegram: TelegramSandbox, user: TgUser, action: str) -> float:
    """Press a menu button; milliseconds until the bot's next message (not the broadcast)
    arrived in that chat."""
    calls = telegram.by_chat[user.id]
    seen = len(calls)
    pressed = time.monotonic()
    telegram.press(user, 1, MenuAction(action=action).pack())
    deadline = pressed + ANSWER_TIMEOUT_S
    while True:
        for call in calls[seen:]:
            if call.method == "sendMessage" and call.text != TEXT:
                return (call.at - pressed) * 1000
        checked = len(calls)
        if not await telegram.next_call(user.id, checked, deadline - time.monotonic()):
            raise SystemExit(f"tap {action!r} in chat {user.id}: no answer in {ANSWER_TIMEOUT_S}s")


async def quick_user(telegram: TelegramSandbox, user: TgUser, taps: int) -> list[float]:
    latencies = []
    for n in range(taps):
        latencies.append(await tap(telegram, user, TAPS[n % 2]))
        await asyncio.sleep(0.3)
    return latencies


async def quick(users: int, taps: int, burst: int) -> tuple[list[float], int]:
    async with running_gateway("chat", users, DELIVERY_CHAT_BURST=str(burst)) as run:
        telegram = run.telegram
        latencies = []
        for n in range(users):
            latencies += await quick_user(telegram, TgUser(FIRST_CHAT + n), taps)
        return latencies, telegram.http_429


async def crowd(
    chats: int, users: int, seconds: float, pause: tuple[float, float]
) -> tuple[list[float], str, int]:
    # the environment outlives a run (configure sets os.environ): the burst as configured
    async with running_gateway("chat", chats, DELIVERY_CHAT_BURST="5") as run:
        telegram = run.telegram
        telegram.say(ADMIN, f"/broadcast {TEXT}")
        await telegram.wait_for(ADMIN.id, "Broadcast queued", method="sendMessage", timeout_s=60)
        audience = set(range(FIRST_CHAT, FIRST_CHAT + chats))
        started = time.monotonic()
        until = started + seconds
        latencies: list[float] = []
        rng = random.Random(7)

        async def user(n: int) -> None:
            await asyncio.sleep(rng.uniform(0, pause[1]))  # users arrive spread out
            while time.monotonic() < until:
                latencies.append(await tap(telegram, TgUser(FIRST_CHAT + n), TAPS[n % 2]))
                await asyncio.sleep(rng.uniform(*pause))

        await asyncio.gather(*(user(n) for n in range(users)))
        window = time.monotonic() - started
        sent = [c for c in telegram.calls if c.chat_id in audience and started <= c.at]
        broadcast = sum(1 for c in sent if c.text == TEXT)
        detail = (
            f"{len(latencies)} taps in {window:.1f} s ({len(latencies) / window:.1f}/s); "
            f"the broadcast meanwhile sent {broadcast} ({broadcast / window:.1f}/s), "
            f"replies {len(sent) - broadcast} ({(len(sent) - broadcast) / window:.1f}/s); "
            f"bot-wide budget 29/s"
        )
        if broadcast == 0:
            raise SystemExit(f"{detail}\nthe broadcast sent nothing while the crowd tapped")
        return latencies, detail, telegram.http_429


def summary(latencies: list[float]) -> str:
    return (
        f"next screen p50={percentile(latencies, 0.5):.0f} ms "
        f"p99={percentile(latencies, 0.99):.0f} ms max={max(latencies):.0f} ms"
    )


async def main(arguments: argparse.Namespace) -> None:
    taps = arguments.taps
    baseline, baseline_429 = await quick(arguments.quick_users, taps, burst=1)
    print(
        f"baseline quick user (no burst: one message a second per chat), {arguments.quick_users}"
        f" × {taps} taps 0.3 s after each answer: {summary(baseline)} http_429={baseline_429}",
        flush=True,
    )
    fast, quick_429 = await quick(arguments.quick_users, taps, burst=5)
    print(
        f"quick user (burst 5), {arguments.quick_users} × {taps} taps 0.3 s after each answer: "
        f"{summary(fast)} http_429={quick_429}",
        flush=True,
    )
    pause = (arguments.pause_s[0], arguments.pause_s[1])
    crowded, detail, crowd_429 = await crowd(
        arguments.chats, arguments.crowd, arguments.seconds, pause
    )
    print(
        f"crowd of {arguments.crowd} (pauses {pause[0]:g}–{pause[1]:g} s) during a "
        f"{arguments.chats}-chat broadcast: {summary(crowded)}; {detail}",
        flush=True,
    )
    print(
        f"BENCH quick_p50_ms={percentile(fast, 0.5):.0f} quick_p99_ms={percentile(fast, 0.99):.0f} "
        f"crowd_p99_ms={percentile(crowded, 0.99):.0f} http_429={quick_429 + crowd_429}",
        flush=True,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick-users", type=int, default=5, help="quick users, one by one")
    parser.add_argument("--taps", type=int, default=6, help="taps of each quick user")
    parser.add_argument("--chats", type=int, default=10_000, help="chats the broadcast reaches")
    parser.add_argument("--crowd", type=int, default=200, help="users tapping meanwhile")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the crowd taps")
    parser.add_argument(
        "--pause-s", type=float, nargs=2, default=(10.0, 20.0), help="pause between taps"
    )
    logging.basicConfig(level=logging.WARNING)
    logging.disable(logging.INFO)  # FastStream logs a line per message
    asyncio.run(main(parser.parse_args()))
