"""A sandbox Telegram Bot API server, for the real aiogram `Bot` to talk to without Telegram.

It serves what the gateway uses: getMe, getUpdates (honouring `offset`, waiting briefly when
there is nothing), sendMessage, editMessageText, sendPhoto and sendDocument (multipart upload),
answerCallbackQuery, getFile and file downloads, setWebhook/deleteWebhook, and Telegram Stars:
sendInvoice (XTR, empty provider token), answerPreCheckoutQuery, refundStarPayment. Whoever runs
it (the demo, tests, benchmarks) plays users by queueing updates (`say`, `send_photo`,
`send_document`, `press`, `pay_invoice`, `pre_checkout`, and `send`, `member_status` for any
other shape) and reads what the bot did from `calls` and `shown`; `expired_queries` answers a
late answerCallbackQuery as Telegram does, and so is refused a second answer to one query;
`stars_charges` are the Stars payments made.

Updates go out the way the bot asked for them: through getUpdates, or pushed to the URL given
to setWebhook with its secret token, in order within a chat and up to `webhook_connections`
chats at a time. `push_to` replaces that URL by several (round robin per chat): the load
balancer in front of several gateway replicas.

With `enforce_limits` it answers 429 + `retry_after` like Telegram when a bot exceeds 30
messages in any second overall or 1 per second in one private chat (20 per minute in a group),
and counts those answers in `http_429`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import math
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from sandbox.server import listen

BOT_ID = 424242
TOKEN = f"{BOT_ID}:TEST-token-for-the-fake-bot-api"
CHAT_METHODS = frozenset(
    {"sendMessage", "sendPhoto", "sendDocument", "editMessageText", "sendInvoice"}
)


@dataclass(frozen=True)
class TgUser:
    id: int
    first_name: str = "Tester"
    language_code: str | None = "ru"
    username: str | None = None

    def as_dict(self) -> dict[str, Any]:
        user: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        if self.language_code:
            user["language_code"] = self.language_code
        if self.username:
            user["username"] = self.username
        return user


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float
    message_id: int | None = None
    photo: bytes | None = None
    refused: bool = False
    """Telegram answered it with an error (a late or second answer, a bad invoice): the user
    saw nothing of it."""

    @property
    def chat_id(self) -> int | None:
        raw = self.params.get("chat_id")
        return int(raw) if raw is not None else None

    @property
    def text(self) -> str:
        params = self.params
        return str(params.get("text") or params.get("caption") or params.get("title") or "")

    @property
    def buttons(self) -> list[dict[str, Any]]:
        markup = self.params.get("reply_markup")
        if not markup:
            return []
        rows = json.loads(markup)["inline_keyboard"] if isinstance(markup, str) else markup
        return [button for row in rows for button in row]

    def button(self, text_part: str) -> dict[str, Any]:
        for button in self.buttons:
            if text_part in button["text"]:
                return button
        raise AssertionError(f"no button with {text_part!r} in {self.buttons}")


@dataclass
class ShownMessage:
    """A message as the user sees it now (edits applied)."""

    chat_id: int
    message_id: int
    text: str
    markup: Any = None
    photo: bool = False
    edits: int = 0

    @property
    def buttons(self) -> list[dict[str, Any]]:
        if not self.markup:
            return []
        rows = json.loads(self.markup) if isinstance(self.markup, str) else self.markup
        return [button for row in rows["inline_keyboard"] for button in row]


@dataclass
class TelegramSandbox:
    enforce_limits: bool = False
    global_per_s: int = 30
    """Sends and edits in any one second, bot-wide (answerCallbackQuery is not counted)."""
    chat_burst: int = 5
    chat_interval_s: float = 1.0
    """Per private chat: a burst of `chat_burst`, refilled at one per `chat_interval_s`."""
    group_per_minute: int = 20
    jitter_s: float = 0.05
    """Tolerance on the per-chat refill, as network timing is never exact."""
    port: int = 0
    calls: list[Call] = field(default_factory=list)
    by_chat: defaultdict[int, list[Call]] = field(default_factory=lambda: defaultdict(list))
    """The same calls, per chat they went into."""
    http_429: int = 0
    blocked_by: set[int] = field(default_factory=set)
    """Private chats whose user blocked the bot: sends into them are refused (403)."""
    shown: dict[tuple[int, int], ShownMessage] = field(default_factory=dict)
    files: dict[str, tuple[str, bytes, int]] = field(default_factory=dict)
    webhook: dict[str, Any] = field(default_factory=dict)
    push_to: list[str] = field(default_factory=list)
    """Webhook URLs updates are spread over (per chat) instead of setWebhook's one URL."""
    webhook_connections: int = 40
    webhook_failures: int = 0
    """Pushes answered with an error (or not at all); each is retried, as Telegram does."""
    expired_queries: set[str] = field(default_factory=set)
    """Callback queries answered too late: answerCallbackQuery is refused as Telegram does."""
    _answered_queries: set[str] = field(default_factory=set)
    invoices: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    """Invoices sent, by (chat, message): what sendInvoice asked for."""
    stars_charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Stars payments by telegram_payment_charge_id: user_id, amount, payload, refunded."""
    _updates: list[dict[str, Any]] = field(default_factory=list)
    _update_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _message_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))
    _new_update: asyncio.Event = field(default_factory=asyncio.Event)
    _recent: deque[float] = field(default_factory=deque)
    _chat_full_at: dict[int, float] = field(default_factory=dict)
    """Per private chat: when its bucket is full again (GCRA's theoretical arrival time)."""
    _group_recent: defaultdict[int, deque[float]] = field(
        default_factory=lambda: defaultdict(deque)
    )
    _runner: web.AppRunner | None = None
    _watchers: defaultdict[int, list[asyncio.Future[None]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    _lanes: list[asyncio.Queue[dict[str, Any]]] = field(default_factory=list)
    _pushers: list[asyncio.Task[None]] = field(default_factory=list)
    _http: aiohttp.ClientSession | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        self._runner, self.port = await listen(app)

    async def stop(self) -> None:
        for pusher in self._pushers:
            pusher.cancel()
        await asyncio.gather(*self._pushers, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- webhook delivery -----------------------------------------------------------------

    @property
    def pushing(self) -> bool:
        return bool(self.push_to or self.webhook.get("url"))

    def _deliver(self, update: dict[str, Any]) -> None:
        if not self._lanes:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
            self._lanes = [asyncio.Queue() for _ in range(self.webhook_connections)]
            self._pushers = [
                asyncio.create_task(self._push_lane(lane), name=f"sandbox.telegram.push{n}")
                for n, lane in enumerate(self._lanes)
            ]
        self._lanes[_chat_of(update) % len(self._lanes)].put_nowait(update)

    async def _push_lane(self, lane: asyncio.Queue[dict[str, Any]]) -> None:
        assert self._http is not None
        while True:
            update = await lane.get()
            attempt = 0
            while not await self._post(update, attempt):
                self.webhook_failures += 1
                attempt += 1
                await asyncio.sleep(0.5)

    async def _post(self, update: dict[str, Any], attempt: int) -> bool:
        """One try; a failed one goes to the next URL, as a load balancer fails over."""
        assert self._http is not None
        urls = self.push_to or [self.webhook["url"]]
        url = urls[(_chat_of(update) + attempt) % len(urls)]
        headers = {}
        if secret := self.webhook.get("secret_token"):
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        try:
            async with self._http.post(url, json=update, headers=headers) as answer:
                return answer.status < 300
        except (aiohttp.ClientError, TimeoutError):
            return False

    # --- playing users --------------------------------------------------------------------

    def _push(self, update: dict[str, Any]) -> None:
        update["update_id"] = next(self._update_ids)
        if self.pushing:
            self._deliver(update)
            return
        self._updates.append(update)
        self._new_update.set()

    def _message(
        self, user: TgUser, chat: dict[str, Any] | None = None, **content: Any
    ) -> dict[str, Any]:
        return {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat or {"id": user.id, "type": "private", "first_name": user.first_name},
            "from": user.as_dict(),
            **content,
        }

    def send(self, user: TgUser, *, chat: dict[str, Any] | None = None, **content: Any) -> None:
        """Any message as Telegram shapes it (`forward_origin`, a group's `chat`, ...)."""
        self._push({"message": self._message(user, chat, **content)})

    def member_status(
        self, user: TgUser, old: str, new: str, *, chat: dict[str, Any] | None = None
    ) -> None:
        """`my_chat_member`: the bot's membership in `chat` (the user's private chat unless
        given) went from `old` to `new` ("member", "kicked", "left"...), `user` did it."""
        bot = {"id": BOT_ID, "is_bot": True, "first_name": "Bot", "username": "fake_bot"}
        private = {"id": user.id, "type": "private", "first_name": user.first_name}
        member = {"kicked": {"until_date": 0}}  # what each status carries beyond the user
        self._push(
            {
                "my_chat_member": {
                    "chat": chat or private,
                    "from": user.as_dict(),
                    "date": int(time.time()),
                    "old_chat_member": {"status": old, "user": bot, **member.get(old, {})},
                    "new_chat_member": {"status": new, "user": bot, **member.get(new, {})},
                }
            }
        )

    def say(self, user: TgUser, text: str) -> None:
        entities = []
        if text.startswith("/"):
            entities = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        content: dict[str, Any] = {"text": text}
        if entities:
            content["entities"] = entities
        self._push({"message": self._message(user, **content)})

    def add_file(self, data: bytes, *, size: int | None = None, suffix: str = "jpg") -> str:
        file_id = uuid.uuid4().hex
        self.files[file_id] = (f"photos/{file_id}.{suffix}", data, size or len(data))
        return file_id

    def send_photo(
        self,
        user: TgUser,
        data: bytes,
        *,
        caption: str | None = None,
        size: int | None = None,
        **extra: Any,
    ) -> None:
        file_id = self.add_file(data, size=size)
        photo = [
            {
                "file_id": file_id,
                "file_unique_id": file_id[:16],
                "width": 64,
                "height": 64,
                "file_size": size or len(data),
            }
        ]
        content: dict[str, Any] = {"photo": photo, **extra}
        if caption is not None:
            content["caption"] = caption
        self._push({"message": self._message(user, **content)})

    def send_document(
        self,
        user: TgUser,
        data: bytes,
        *,
        mime_type: str,
        file_name: str = "image.bin",
        size: int | None = None,
        caption: str | None = None,
    ) -> None:
        file_id = self.add_file(data, size=size, suffix=file_name.rsplit(".", 1)[-1])
        document = {
            "file_id": file_id,
            "file_unique_id": file_id[:16],
            "file_name": file_name,
            "mime_type": mime_type,
            "file_size": size or len(data),
        }
        content: dict[str, Any] = {"document": document}
        if caption is not None:
            content["caption"] = caption
        self._push({"message": self._message(user, **content)})

    def send_sticker(self, user: TgUser) -> None:
        sticker = {
            "file_id": uuid.uuid4().hex,
            "file_unique_id": "s1",
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
        }
        self._push({"message": self._message(user, sticker=sticker)})

    def press(
        self,
        user: TgUser,
        message_id: int,
        data: str,
        *,
        chat: dict[str, Any] | None = None,
        too_late: bool = False,
    ) -> str:
        """The user presses a button carrying `data` under message `message_id` (in their
        private chat unless `chat` says which); `too_late`: its answer will be refused."""
        query_id = uuid.uuid4().hex
        if too_late:
            self.expired_queries.add(query_id)
        chat = chat or {"id": user.id, "type": "private", "first_name": user.first_name}
        shown = self.shown.get((chat["id"], message_id))
        message = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": chat,
            "from": {"id": BOT_ID, "is_bot": True, "first_name": "Bot"},
            "text": shown.text if shown else "",
        }
        self._push(
            {
                "callback_query": {
                    "id": query_id,
                    "from": user.as_dict(),
                    "chat_instance": str(user.id),
                    "message": message,
                    "data": data,
                }
            }
        )
        return query_id

    def pre_checkout(self, user: TgUser, payload: str, total_amount: int) -> str:
        """Telegram asks the bot whether `user` may pay (a pre_checkout_query): its id."""
        query_id = uuid.uuid4().hex
        self._push(
            {
                "pre_checkout_query": {
                    "id": query_id,
                    "from": user.as_dict(),
                    "currency": "XTR",
                    "total_amount": total_amount,
                    "invoice_payload": payload,
                }
            }
        )
        return query_id

    async def pre_checkout_answer(self, query_id: str, timeout_s: float = 10.0) -> Call:
        """The bot's answerPreCheckoutQuery (Telegram waits 10 s for it, then fails the
        payment)."""
        return await self._answer(
            "answerPreCheckoutQuery", "pre_checkout_query_id", query_id, timeout_s
        )

    async def pay_invoice(self, user: TgUser, message_id: int) -> str | None:
        """`user` pays the invoice shown as `message_id` in their chat: the pre-checkout query,
        its answer awaited, then (when the bot said ok) the successful payment. The charge id,
        or None when the bot refused."""
        invoice = self.invoices[(user.id, message_id)]
        amount = sum(int(price["amount"]) for price in invoice["prices"])
        query_id = self.pre_checkout(user, invoice["payload"], amount)
        answer = await self.pre_checkout_answer(query_id)
        if str(answer.params.get("ok")).lower() != "true":
            return None
        charge_id = f"stxSANDBOX{uuid.uuid4().hex}"
        self.stars_charges[charge_id] = {
            "user_id": user.id,
            "amount": amount,
            "payload": invoice["payload"],
            "refunded": False,
        }
        self.successful_payment(user, charge_id)
        return charge_id

    def successful_payment(self, user: TgUser, charge_id: str) -> None:
        """The service message of a Stars payment made (again: Telegram may deliver twice)."""
        charge = self.stars_charges[charge_id]
        payment = {
            "currency": "XTR",
            "total_amount": charge["amount"],
            "invoice_payload": charge["payload"],
            "telegram_payment_charge_id": charge_id,
            "provider_payment_charge_id": "",
        }
        self._push({"message": self._message(user, successful_payment=payment)})

    # --- reading what the bot did ---------------------------------------------------------

    async def next_call(self, chat_id: int, seen: int, timeout_s: float) -> bool:
        """Wait until `chat_id` got more than `seen` calls; False when `timeout_s` passed."""
        if len(self.by_chat[chat_id]) > seen:
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._watchers[chat_id].append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            return False
        finally:
            with contextlib.suppress(ValueError):
                self._watchers[chat_id].remove(waiter)
        return True

    def _record(self, call: Call) -> None:
        self.calls.append(call)
        chat_id = call.chat_id
        if chat_id is None:
            return
        self.by_chat[chat_id].append(call)
        for waiter in self._watchers.pop(chat_id, ()):
            if not waiter.done():
                waiter.set_result(None)

    def sent_to(self, chat_id: int, method: str | None = None) -> list[Call]:
        return [call for call in self.by_chat[chat_id] if method is None or call.method == method]

    async def wait_for(
        self, chat_id: int, contains: str, *, method: str | None = None, timeout_s: float = 15.0
    ) -> Call:
        """The first call into `chat_id` whose text contains `contains`."""
        deadline = time.monotonic() + timeout_s
        while True:
            for call in self.sent_to(chat_id, method):
                if contains in call.text:
                    return call
            if time.monotonic() > deadline:
                seen = [(c.method, c.text[:80]) for c in self.sent_to(chat_id)]
                raise AssertionError(f"nothing with {contains!r} sent to {chat_id}; saw {seen}")
            await asyncio.sleep(0.02)

    async def answer_to(self, query_id: str, timeout_s: float = 15.0) -> Call:
        return await self._answer("answerCallbackQuery", "callback_query_id", query_id, timeout_s)

    async def _answer(self, method: str, key: str, query_id: str, timeout_s: float) -> Call:
        deadline = time.monotonic() + timeout_s
        while True:
            for call in self.calls:
                if call.method == method and call.params.get(key) == query_id:
                    return call
            if time.monotonic() > deadline:
                raise AssertionError(f"{method}: {query_id} never answered")
            await asyncio.sleep(0.02)

    async def shown_eventually(
        self, chat_id: int, message_id: int, contains: str, timeout_s: float = 15.0
    ) -> ShownMessage:
        deadline = time.monotonic() + timeout_s
        while True:
            shown = self.shown.get((chat_id, message_id))
            if shown is not None and contains in shown.text:
                return shown
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"message {message_id} never showed {contains!r}: {shown and shown.text!r}"
                )
            await asyncio.sleep(0.02)

    # --- the API --------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> tuple[dict[str, Any], bytes | None]:
        params: dict[str, Any] = {}
        upload: bytes | None = None
        if request.content_type == "application/json":
            params = await request.json()
        elif request.can_read_body:
            form = await request.post()
            for name, value in form.items():
                if isinstance(value, web.FileField):
                    upload = value.file.read()
                else:
                    params[name] = value
        params.update(request.query)
        return params, upload

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params, upload = await self._params(request)
        if method == "getUpdates":
            return _ok(await self._get_updates(params))
        if method == "getMe":
            return _ok({"id": BOT_ID, "is_bot": True, "first_name": "Bot", "username": "fake_bot"})
        if method in CHAT_METHODS and (retry := self._over_limit(int(params["chat_id"]))):
            self.http_429 += 1
            return web.json_response(
                {
                    "ok": False,
                    "error_code": 429,
                    "description": f"Too Many Requests: retry after {retry}",
                    "parameters": {"retry_after": retry},
                },
                status=429,
            )
        if method in CHAT_METHODS and int(params["chat_id"]) in self.blocked_by:
            return _error(403, "Forbidden: bot was blocked by the user")
        call = Call(method, params, time.monotonic(), photo=upload)
        self._record(call)
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return _ok(True)
        response: web.Response = handler(call)
        call.refused = response.status >= 400
        return response

    def _over_limit(self, chat_id: int) -> int:
        if not self.enforce_limits:
            return 0
        now = time.monotonic()
        while self._recent and self._recent[0] <= now - 1.0:
            self._recent.popleft()
        if len(self._recent) >= self.global_per_s:
            return 1
        if chat_id < 0:
            window = self._group_recent[chat_id]
            while window and window[0] <= now - 60.0:
                window.popleft()
            if len(window) >= self.group_per_minute:
                return 3
            window.append(now)
        else:
            full_at = self._chat_full_at.get(chat_id, now)
            slack = (self.chat_burst - 1) * self.chat_interval_s + self.jitter_s
            if full_at - now > slack:
                return max(1, math.ceil(full_at - now - slack))
            self._chat_full_at[chat_id] = max(full_at, now) + self.chat_interval_s
        self._recent.append(now)
        return 0

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        self._updates = [u for u in self._updates if u["update_id"] >= offset]
        if not self._updates:
            self._new_update.clear()
            try:
                await asyncio.wait_for(self._new_update.wait(), timeout=0.5)
            except TimeoutError:
                return []
        return list(self._updates[:100])

    def _sent(self, call: Call, **content: Any) -> web.Response:
        chat_id = int(call.params["chat_id"])
        message_id = next(self._message_ids)
        call.message_id = message_id
        markup = call.params.get("reply_markup")
        self.shown[(chat_id, message_id)] = ShownMessage(
            chat_id, message_id, call.text, markup, photo=call.method == "sendPhoto"
        )
        return _ok(
            {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
                "from": {"id": BOT_ID, "is_bot": True, "first_name": "Bot"},
                **content,
            }
        )

    def _m_sendMessage(self, call: Call) -> web.Response:
        return self._sent(call, text=call.text)

    def _m_sendPhoto(self, call: Call) -> web.Response:
        if call.photo is not None and not _fits_a_photo(call.photo):
            return _error(400, "Bad Request: PHOTO_INVALID_DIMENSIONS")
        photo = [{"file_id": uuid.uuid4().hex, "file_unique_id": "r", "width": 8, "height": 8}]
        if call.params.get("caption"):
            return self._sent(call, photo=photo, caption=call.params["caption"])
        return self._sent(call, photo=photo)

    def _m_sendDocument(self, call: Call) -> web.Response:
        document = {"file_id": uuid.uuid4().hex, "file_unique_id": "d"}
        return self._sent(call, document=document)

    def _m_editMessageText(self, call: Call) -> web.Response:
        key = (int(call.params["chat_id"]), int(call.params["message_id"]))
        call.message_id = key[1]
        shown = self.shown.get(key)
        if shown is None:
            # a message the user sent or one we never saw: treat it as the bot's own
            shown = self.shown[key] = ShownMessage(key[0], key[1], "")
        if shown.text == call.text and shown.markup == call.params.get("reply_markup"):
            return _error(400, "Bad Request: message is not modified")
        shown.text, shown.markup = call.text, call.params.get("reply_markup")
        shown.edits += 1
        return _ok(
            {
                "message_id": key[1],
                "date": int(time.time()),
                "chat": {"id": key[0], "type": "private"},
                "text": call.text,
            }
        )

    def _m_answerCallbackQuery(self, call: Call) -> web.Response:
        """Once per query: Telegram refuses a second answer with a late answer's words."""
        query_id = str(call.params.get("callback_query_id"))
        if query_id in self.expired_queries or query_id in self._answered_queries:
            return _error(
                400,
                "Bad Request: query is too old and response timeout expired or query ID is invalid",
            )
        self._answered_queries.add(query_id)
        return _ok(True)

    def _m_sendInvoice(self, call: Call) -> web.Response:
        params = call.params
        if params.get("currency") != "XTR" or params.get("provider_token"):
            return _error(400, "Bad Request: only XTR invoices, with an empty provider token")
        prices = params.get("prices")
        prices = json.loads(prices) if isinstance(prices, str) else prices
        if not prices or len(prices) != 1 or int(prices[0]["amount"]) <= 0:
            return _error(400, "Bad Request: STARS_INVOICE_INVALID")
        params["prices"] = prices
        response = self._sent(
            call,
            invoice={
                "title": params.get("title", ""),
                "description": params.get("description", ""),
                "start_parameter": "",
                "currency": "XTR",
                "total_amount": int(prices[0]["amount"]),
            },
        )
        assert call.message_id is not None
        self.invoices[(int(params["chat_id"]), call.message_id)] = params
        return response

    def _m_answerPreCheckoutQuery(self, call: Call) -> web.Response:
        ok = str(call.params.get("ok")).lower() == "true"
        if not ok and not call.params.get("error_message"):
            return _error(400, "Bad Request: error_message is required when ok is false")
        return _ok(True)

    def _m_refundStarPayment(self, call: Call) -> web.Response:
        """Telegram refunds a charge whole and once: a second refund of it is answered `400 Bad
        Request: CHARGE_ALREADY_REFUNDED` (as reported from the real Bot API, tdlib/td#3209),
        an unknown charge or another user's `CHARGE_NOT_FOUND` (the sandbox's wording)."""
        charge = self.stars_charges.get(str(call.params.get("telegram_payment_charge_id")))
        if charge is None or charge["user_id"] != int(call.params.get("user_id") or 0):
            return _error(400, "Bad Request: CHARGE_NOT_FOUND")
        if charge["refunded"]:
            return _error(400, "Bad Request: CHARGE_ALREADY_REFUNDED")
        charge["refunded"] = True
        return _ok(True)

    def _m_getFile(self, call: Call) -> web.Response:
        file_id = call.params["file_id"]
        if file_id not in self.files:
            return _error(400, "Bad Request: invalid file_id")
        path, _data, size = self.files[file_id]
        if size > 20 * 1024 * 1024:
            return _error(400, "Bad Request: file is too big")
        return _ok(
            {
                "file_id": file_id,
                "file_unique_id": file_id[:16],
                "file_size": size,
                "file_path": path,
            }
        )

    def _m_setWebhook(self, call: Call) -> web.Response:
        self.webhook = dict(call.params)
        return _ok(True)

    def _m_deleteWebhook(self, call: Call) -> web.Response:
        self.webhook = {}
        return _ok(True)

    async def _download(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        for stored_path, data, _size in self.files.values():
            if stored_path == path:
                return web.Response(body=data)
        return web.Response(status=404)


def _chat_of(update: dict[str, Any]) -> int:
    if "callback_query" in update:
        return int(update["callback_query"]["from"]["id"])
    if "my_chat_member" in update:
        return int(update["my_chat_member"]["chat"]["id"])
    if "pre_checkout_query" in update:  # in the payer's lane, before their successful_payment
        return int(update["pre_checkout_query"]["from"]["id"])
    return int(update["message"]["chat"]["id"])


def _ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def _error(code: int, description: str) -> web.Response:
    return web.json_response(
        {"ok": False, "error_code": code, "description": description}, status=code
    )


def _fits_a_photo(data: bytes) -> bool:
    """Telegram's sendPhoto limits: 10 MB, width + height <= 10000, side ratio <= 20."""
    from PIL import Image

    if len(data) > 10 * 1024 * 1024:
        return False
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
    return width + height <= 10_000 and max(width, height) <= 20 * min(width, height)
