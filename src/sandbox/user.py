"""A user in a private chat with the bot, played against the sandbox Bot API.

`expect` looks only at what the bot did since the user's last action (or `mark`). With a
`Transcript`, every action of the user and every message, edit and photo of the bot is printed
as the user would see it, with the time since the transcript began.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image, ImageDraw

from sandbox.telegram import Call, TelegramSandbox, TgUser


class Transcript:
    """Prints the chat as it happens; saves the photos the bot sends under `images_dir`."""

    def __init__(
        self,
        telegram: TelegramSandbox,
        chat_id: int,
        images_dir: Path | None = None,
        out: Callable[[str], None] = print,
    ) -> None:
        self._telegram = telegram
        self._chat_id = chat_id
        self._images_dir = images_dir
        self._out = out
        self._started = time.monotonic()
        self._seen = 0
        self._task: asyncio.Task[None] | None = None
        self.images: list[Path] = []

    def __enter__(self) -> Transcript:
        self._task = asyncio.create_task(self._follow(), name="sandbox.transcript")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        self.flush()

    def line(self, who: str, text: str) -> None:
        self.flush()
        stamp = f"{time.monotonic() - self._started:7.2f}s"
        lines = text.strip().splitlines() or [""]
        self._out(f"{stamp}  {who} {lines[0]}")
        for more in lines[1:]:
            self._out(f"{'':8}     {more}")

    def flush(self) -> None:
        calls = self._telegram.calls
        while self._seen < len(calls):
            call = calls[self._seen]
            self._seen += 1
            if call.refused:  # the user saw nothing of it
                continue
            if call.chat_id == self._chat_id or (
                call.method == "answerCallbackQuery" and call.params.get("text")
            ):
                self._show(call)

    async def _follow(self) -> None:
        while True:
            self.flush()
            await asyncio.sleep(0.05)

    def _show(self, call: Call) -> None:
        buttons = "  ".join(f"[{button['text']}]" for button in call.buttons)
        body = call.text + (f"\n{buttons}" if buttons else "")
        if call.method == "sendMessage":
            self.line("🤖", body)
        elif call.method == "editMessageText":
            self.line("🤖✎", body)
        elif call.method == "answerCallbackQuery":
            self.line("🤖💬", str(call.params.get("text")))
        elif call.method == "sendInvoice":
            stars = sum(int(price["amount"]) for price in call.params.get("prices") or [])
            self.line("🤖🧾", f"{body} — {stars} ⭐")
        elif call.method in ("sendPhoto", "sendDocument"):
            saved = self._save(call)
            self.line("🤖🖼", f"{body}\n({saved})" if saved else body)

    def _save(self, call: Call) -> str:
        if self._images_dir is None or call.photo is None:
            return ""
        self._images_dir.mkdir(parents=True, exist_ok=True)
        with Image.open(io.BytesIO(call.photo)) as image:
            suffix = (image.format or "png").lower().replace("jpeg", "jpg")
            size = f"{image.width}×{image.height}"
        path = self._images_dir / f"result-{len(self.images) + 1}.{suffix}"
        path.write_bytes(call.photo)
        self.images.append(path)
        return f"{size}, saved to {path}"


class SandboxUser:
    """One Telegram user talking to the bot."""

    def __init__(
        self, telegram: TelegramSandbox, user: TgUser, transcript: Transcript | None = None
    ) -> None:
        self.telegram = telegram
        self.user = user
        self.transcript = transcript
        self._calls = telegram.by_chat[user.id]
        self._cursor = len(self._calls)

    def mark(self) -> None:
        self._cursor = len(self._calls)

    def _did(self, text: str) -> None:
        self.mark()
        if self.transcript is not None:
            self.transcript.line("👤", text)

    def say(self, text: str) -> None:
        self._did(text)
        self.telegram.say(self.user, text)

    def photo(self, data: bytes, *, caption: str | None = None, **options: Any) -> None:
        self._did(f"[photo, {len(data) // 1024} KB]" + (f" {caption}" if caption else ""))
        self.telegram.send_photo(self.user, data, caption=caption, **options)

    def document(self, data: bytes, **options: Any) -> None:
        self._did(f"[file {options.get('file_name', '')}, {len(data) // 1024} KB]")
        self.telegram.send_document(self.user, data, **options)

    def press(self, call: Call, label: str) -> str:
        """Press the button whose text contains `label` under the message `call` showed."""
        assert call.message_id is not None
        button = call.button(label)
        self._did(f"taps [{button['text']}]")
        return self.telegram.press(self.user, call.message_id, button["callback_data"])

    def press_data(self, message_id: int, data: str) -> str:
        self.mark()
        return self.telegram.press(self.user, message_id, data)

    async def open_link(self, call: Call, label: str) -> str:
        """Follow a URL button (the payment page) and submit it, as the user's browser would."""
        url = call.button(label)["url"]
        self._did(f"opens [{call.button(label)['text']}] and pays")
        async with aiohttp.ClientSession() as http, http.post(url) as answer:
            answer.raise_for_status()
            return await answer.text()

    async def pay_invoice(self, call: Call) -> str:
        """Pay the Stars invoice `call` sent, as Telegram's payment form would: the bot's
        pre-checkout answer, then the successful payment. The charge id."""
        assert call.message_id is not None
        self._did(f"pays the invoice «{call.text}» in Telegram Stars")
        charge = await self.telegram.pay_invoice(self.user, call.message_id)
        if charge is None:
            raise AssertionError(f"the bot refused to take the Stars of {call.text!r}")
        return charge

    async def expect(
        self, contains: str, *, method: str | None = None, timeout_s: float = 30.0
    ) -> Call:
        """The first call into this chat since the last action whose text has `contains`."""
        deadline = time.monotonic() + timeout_s
        checked = self._cursor
        while True:
            for call in self._calls[checked:]:
                if (method is None or call.method == method) and contains in call.text:
                    return call
            checked = len(self._calls)
            left = deadline - time.monotonic()
            if left <= 0 or not await self.telegram.next_call(self.user.id, checked, left):
                seen = [(c.method, c.text[:90]) for c in self._calls[self._cursor :]]
                raise AssertionError(f"{self.user.id} never got {contains!r}; got {seen}")

    async def alert(self, query_id: str) -> str:
        answer = await self.telegram.answer_to(query_id)
        return str(answer.params.get("text") or "")

    def said(self, contains: str) -> list[Call]:
        return [call for call in self._calls[self._cursor :] if contains in call.text]


def picture(size: tuple[int, int] = (640, 480), kind: str = "JPEG") -> bytes:
    """A small landscape: sky, sun, hills; something a filter visibly changes."""
    width, height = size
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    for y in range(height):
        shade = int(120 + 110 * y / height)
        draw.line([(0, y), (width, y)], fill=(shade // 2, shade // 2 + 40, 255 - shade // 3))
    draw.ellipse([width * 0.65, height * 0.1, width * 0.85, height * 0.1 + width * 0.2],
                 fill=(255, 210, 80))  # fmt: skip
    draw.polygon([(0, height), (width * 0.35, height * 0.45), (width * 0.7, height)],
                 fill=(60, 130, 70))  # fmt: skip
    draw.polygon([(width * 0.4, height), (width * 0.75, height * 0.55), (width, height * 0.8),
                  (width, height)], fill=(40, 100, 60))  # fmt: skip
    buffer = io.BytesIO()
    image.save(buffer, format=kind, quality=90)
    return buffer.getvalue()
