"""The outbound sender: delivers what handlers committed to `gateway_outbound`, within
Telegram's limits (every call passes `RateLimitedRequests`), and marks it sent.

A row is leased before it is sent and marked sent after Telegram answered (the marks of all
rows sent meanwhile in one statement); a sender that dies in between leaves the lease to expire
and the row is sent again (at least once, never zero).
Rows of one chat go out in order, by one worker of one replica: a chat with a live lease is
not claimed again until its rows are sent. Different chats go out concurrently, and claiming
goes on while they do, so a chat waiting for its slot (or a 429) holds up no other chat. Rows
are claimed by lane (job messages before broadcasts) and each is sent in its own lane of the
bot-wide budget (`limits.Lane`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiogram import Bot
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
)
from aiogram.types import BufferedInputFile, InlineKeyboardMarkup
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot_gateway.limits import Lane, sending_lane
from bot_gateway.metrics import TELEGRAM_SEND_LAG_SECONDS
from bot_gateway.repository import Users
from bot_gateway.settings import DeliverySettings
from object_store import ObjectStore

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 300.0
PACE_S = 0.02
"""Claims, and writes of marks, at most this often: under load each statement takes what
gathered in 20 ms instead of a row or two."""

# Due rows of chats holding no live lease, oldest first. The busy chats are one hashed set
# (NOT IN), not a lookup per candidate; the walk in id order covers unsent rows only (0010).
_CLAIM = text(
    """
    UPDATE gateway_outbound SET leased_until = now() + make_interval(secs => :lease),
                                attempts = attempts + 1
    WHERE id IN (
        SELECT o.id FROM gateway_outbound o
        WHERE o.sent_at IS NULL AND o.not_before <= now()
          AND (o.leased_until IS NULL OR o.leased_until < now())
          AND o.chat_id NOT IN (SELECT busy.chat_id FROM gateway_outbound busy
                                WHERE busy.sent_at IS NULL AND busy.leased_until >= now())
        ORDER BY o.lane, o.id LIMIT :limit FOR UPDATE OF o SKIP LOCKED)
    RETURNING id, chat_id, kind, payload, lane, version, attempts, message_id,
              CAST(EXTRACT(EPOCH FROM now() - not_before) AS double precision) AS overdue_s
    """
)
_SENT_OR_RELEASE = text(
    """
    WITH marks AS (
        SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:versions AS integer[]),
                             CAST(:message_ids AS bigint[]), CAST(:errors AS text[]))
                      AS m (id, version, message_id, error)
    ), sent AS (
        UPDATE gateway_outbound o SET sent_at = now(), leased_until = NULL,
                                      message_id = m.message_id, last_error = m.error
        FROM marks m WHERE o.id = m.id AND o.version = m.version RETURNING o.id)
    UPDATE gateway_outbound o SET leased_until = NULL FROM marks m
    WHERE o.id = m.id AND o.sent_at IS NULL AND o.id NOT IN (SELECT id FROM sent)
    """
)
_PURGE = text("DELETE FROM gateway_outbound WHERE sent_at < now() - make_interval(days => :days)")
_BACK_OFF = text(
    "UPDATE gateway_outbound SET leased_until = NULL, last_error = :error, "
    "not_before = now() + make_interval(secs => :delay) WHERE id = :id"
)


@dataclass(frozen=True)
class Outbound:
    id: int
    chat_id: int
    kind: str
    payload: dict[str, Any]
    lane: int
    version: int
    attempts: int
    message_id: int | None
    """The message this row last sent or edited: a status message the gateway had none of
    when it first showed it (a job it followed from JobRetried) is edited from then on."""
    overdue_s: float
    """How long it had been due when claimed (the database's clock)."""
    claimed_at: float
    """`time.monotonic()` at the claim: with `overdue_s`, how late it went out."""


PHOTO_MAX_BYTES = 10 * 1024 * 1024
"""Telegram's limit for a bot's sendPhoto; a larger result goes out with sendDocument (50 MB)."""


class PermanentFailure(Exception):
    """Telegram will never accept this call; retrying cannot help."""


class OutboundSender:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        bot: Bot,
        store: ObjectStore,
        settings: DeliverySettings,
    ) -> None:
        self._sessions = sessions
        self._bot = bot
        self._store = store
        self._settings = settings
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._chats: dict[int, deque[Outbound]] = {}
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._in_hand = 0
        self._marks: list[tuple[int, int, int | None, str | None]] = []
        self._marks_due = asyncio.Event()
        self._marker: asyncio.Task[None] | None = None
        self._max_in_hand = max(
            1, min(settings.concurrency, int(settings.global_rate_per_s * settings.lease_s / 2))
        )

    def notify(self) -> None:
        """Something was committed to the mailbox: look now instead of at the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="gateway.sender")
        self._marker = asyncio.create_task(self._mark_due(), name="gateway.sender.marks")

    async def stop(self) -> None:
        """Finish what is in hand, then stop; what is left waits in the table."""
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            await self._task
        self._marks_due.set()
        if self._marker is not None:
            await self._marker
        self._task = self._marker = None

    async def deliver_pending(self) -> int:
        """Claim what is due and send it, all of it before returning: the rows handled."""
        claimed = await self._claim(self._settings.batch_size)
        self._hand_out(claimed)
        await self._finish_in_hand()
        await self._write_marks()
        return len(claimed)

    async def purge_sent(self, older_than_days: int) -> None:
        """Forget delivered messages; a late duplicate event still finds its job finished."""
        async with self._sessions() as session, session.begin():
            await session.execute(_PURGE, {"days": older_than_days})

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_claim = -PACE_S
        while not self._stopping.is_set():
            await asyncio.sleep(max(0.0, last_claim + PACE_S - loop.time()))
            if self._stopping.is_set():  # stopped meanwhile: claim nothing more
                break
            last_claim = loop.time()
            self._wake.clear()
            room = min(self._settings.batch_size, self._max_in_hand - self._in_hand)
            claimed: list[Outbound] = []
            if room > 0:
                try:
                    claimed = await self._claim(room)
                except Exception:
                    log.exception("sender: claiming failed")
            self._hand_out(claimed)
            if claimed:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.poll_interval_s)
        await self._finish_in_hand()

    async def _claim(self, limit: int) -> list[Outbound]:
        async with self._sessions() as session:
            connection = await session.connection(
                execution_options={"isolation_level": "AUTOCOMMIT"}  # one statement, atomic
            )
            rows = (
                await connection.execute(_CLAIM, {"lease": self._settings.lease_s, "limit": limit})
            ).mappings()
            # New messages first, in order; edits (of messages already there) after them: a
            # result and its status message's final edit are due together, and the result is
            # what the user waits for (each takes one of the chat's slots).
            claimed_at = time.monotonic()
            return sorted(
                (Outbound(**row, claimed_at=claimed_at) for row in rows),
                key=lambda row: (row.kind == "edit", row.id),
            )

    def _hand_out(self, rows: Sequence[Outbound]) -> None:
        """Each row to its chat's worker, in order; a chat without one gets one."""
        for row in rows:
            self._chats.setdefault(row.chat_id, deque()).append(row)
            self._in_hand += 1
            if row.chat_id not in self._workers:
                self._workers[row.chat_id] = asyncio.create_task(
                    self._work_chat(row.chat_id), name=f"gateway.sender.chat{row.chat_id}"
                )

    async def _work_chat(self, chat_id: int) -> None:
        queue = self._chats[chat_id]
        try:
            while queue:
                row = queue.popleft()
                sending_lane.set(Lane(row.lane))
                try:
                    await self._deliver(row)
                except Exception:  # marking failed (database away): the lease will expire
                    log.exception("message %s to chat %s: could not record it", row.id, chat_id)
                finally:
                    self._in_hand -= 1
        finally:
            del self._chats[chat_id]
            del self._workers[chat_id]
            self._wake.set()  # the chat's next rows (held back while it was busy) are due

    async def _finish_in_hand(self) -> None:
        while self._workers:
            await asyncio.gather(*self._workers.values(), return_exceptions=True)

    async def _deliver(self, row: Outbound) -> None:
        try:
            message_id = await self._call(row)
        except TelegramForbiddenError as exc:
            log.info("chat %s blocked the bot: dropping message %s", row.chat_id, row.id)
            await self._mark_sent(row, None, f"forbidden: {exc.message}")
            async with self._sessions() as session, session.begin():
                await Users(session.execute).mark_blocked(row.chat_id)
        except PermanentFailure as exc:
            log.error("message %s to chat %s refused for good: %s", row.id, row.chat_id, exc)
            await self._mark_sent(row, None, str(exc)[:2000])
        except Exception as exc:
            delay = min(self._settings.retry_backoff_s * 2 ** (row.attempts - 1), MAX_BACKOFF_S)
            log.warning(
                "message %s to chat %s failed (attempt %d): %r; again in %.0fs",
                row.id,
                row.chat_id,
                row.attempts,
                exc,
                delay,
            )
            async with self._sessions() as session, session.begin():
                await session.execute(
                    _BACK_OFF, {"id": row.id, "error": repr(exc)[:2000], "delay": delay}
                )
        else:
            lag = row.overdue_s + time.monotonic() - row.claimed_at
            TELEGRAM_SEND_LAG_SECONDS.labels(row.kind).observe(lag)
            await self._mark_sent(row, message_id, None)

    async def _mark_sent(self, row: Outbound, message_id: int | None, error: str | None) -> None:
        """Sent, or (a newer text arrived meanwhile) released: written with the other marks
        due, in one statement (`_write_marks`). Until then the row keeps its lease."""
        self._marks.append((row.id, row.version, message_id, error))
        self._marks_due.set()

    async def _mark_due(self) -> None:
        while True:
            await self._marks_due.wait()
            self._marks_due.clear()
            await self._write_marks()
            if self._stopping.is_set() and self._task is not None and self._task.done():
                await self._write_marks()
                return
            if not self._stopping.is_set():
                await asyncio.sleep(PACE_S)

    async def _write_marks(self) -> None:
        """Everything sent since the last write, in one autocommitted statement. Should it fail
        (database away), the rows' leases expire and they go out again: at least once."""
        marks, self._marks = self._marks, []
        if not marks:
            return
        ids, versions, message_ids, errors = (list(column) for column in zip(*marks, strict=True))
        try:
            async with self._sessions() as session:
                connection = await session.connection(
                    execution_options={"isolation_level": "AUTOCOMMIT"}
                )
                await connection.execute(
                    _SENT_OR_RELEASE,
                    {
                        "ids": ids,
                        "versions": versions,
                        "message_ids": message_ids,
                        "errors": errors,
                    },
                )
        except Exception:
            log.exception("sender: could not record %d sent messages", len(marks))
            return
        self._wake.set()  # their chats' next rows (held back while these were leased) are due

    async def _call(self, row: Outbound) -> int | None:
        payload = row.payload
        markup = _markup(payload.get("markup"))
        try:
            shown = payload.get("message_id") or row.message_id
            if row.kind == "edit" and shown:
                return await self._edit(row.chat_id, int(shown), payload, markup)
            if row.kind == "photo":
                return await self._photo(row.chat_id, payload, markup)
            sent = await self._bot.send_message(row.chat_id, payload["text"], reply_markup=markup)
            return sent.message_id
        except TelegramBadRequest as exc:
            raise PermanentFailure(exc.message) from exc

    async def _edit(
        self,
        chat_id: int,
        message_id: int,
        payload: dict[str, Any],
        markup: InlineKeyboardMarkup | None,
    ) -> int | None:
        try:
            await self._bot.edit_message_text(
                text=payload["text"], chat_id=chat_id, message_id=message_id, reply_markup=markup
            )
        except TelegramBadRequest as exc:
            if "not modified" in exc.message:
                return message_id
            if "not found" not in exc.message and "can't be edited" not in exc.message:
                raise
            sent = await self._bot.send_message(chat_id, payload["text"], reply_markup=markup)
            return sent.message_id
        return message_id

    async def _photo(
        self, chat_id: int, payload: dict[str, Any], markup: InlineKeyboardMarkup | None
    ) -> int:
        # a result not (yet) in the store is retried: the runner wrote it before reporting
        key = payload["object_key"]
        data = await self._store.get(key)
        return await send_image(self._bot, chat_id, key, data, payload.get("caption"), markup)


async def send_image(
    bot: Bot,
    chat_id: int,
    key: str,
    data: bytes,
    caption: str | None,
    markup: InlineKeyboardMarkup | None = None,
    *,
    as_file: bool = False,
) -> int:
    """A result as a photo (Telegram shows it recompressed) or, `as_file` or when it cannot be
    a photo, as a file in its original quality: the message id."""
    name = key.rsplit("/", 1)[-1]
    if not as_file and len(data) <= PHOTO_MAX_BYTES:
        try:
            sent = await bot.send_photo(
                chat_id,
                BufferedInputFile(data, filename=name),
                caption=caption,
                reply_markup=markup,
            )
            return sent.message_id
        except (TelegramBadRequest, TelegramEntityTooLarge) as exc:
            # Too big or too oblong for a photo (sendPhoto: 10 MB, width + height <= 10000,
            # side ratio <= 20): the paid result still goes out, as a file.
            log.info("result for chat %s is no photo (%s); sending it as a file", chat_id, exc)
    sent = await bot.send_document(
        chat_id, BufferedInputFile(data, filename=name), caption=caption, reply_markup=markup
    )
    return sent.message_id


def _markup(raw: dict[str, Any] | None) -> InlineKeyboardMarkup | None:
    return InlineKeyboardMarkup.model_validate(raw) if raw else None


def markup_payload(markup: InlineKeyboardMarkup | None) -> dict[str, Any] | None:
    return markup.model_dump(mode="json", exclude_none=True) if markup else None
