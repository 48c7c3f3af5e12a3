"""A local stand-in for the Telegram Bot API, for tests and the demo.

It speaks, over real HTTP, the subset of the Bot API this project uses, with responses shaped like
Telegram's so the real python-telegram-bot library parses them. A simulated patient talks to the bot
through control routes under ``/_sim/`` (wrapped by `LocalBotAPIClient`); everything the bot sends is
recorded and can be read back, photos included. Faults (429 with retry_after, 5xx, timeouts) can be
injected per method, and a patient's file can be made slow to download (`download_delay_s`).
Updates reach the bot by getUpdates (long polling) or, once the bot called setWebhook, by POSTs to its
webhook like Telegram's: oldest first, one at a time per chat, with the secret token header, retried until
the bot answers 2xx (getUpdates then answers 409 as Telegram does).

Routes:
  POST|GET /bot<token>/<method>          the Bot API (wrong token -> 401 like Telegram)
  GET      /file/bot<token>/<file_path>  file download (getFile's file_path)
  /_sim/...                              the simulated patient's side and the recorder (no token)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import io
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import aiohttp
import httpx
from aiohttp import web
from telegram.constants import InlineKeyboardButtonLimit, MessageLimit

log = logging.getLogger(__name__)

CAPTION_LIMIT = MessageLimit.CAPTION_LENGTH
TEXT_LIMIT = MessageLimit.MAX_TEXT_LENGTH
CALLBACK_DATA_LIMIT = InlineKeyboardButtonLimit.MAX_CALLBACK_DATA
WEBHOOK_ATTEMPTS = 5  # an update the webhook keeps refusing is dropped after this many tries
PHOTO_SIDES = (90, 320, 800, 1280)  # Telegram's s/m/x/y photo sizes
HTML_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre",
    "tg-spoiler", "span", "blockquote", "tg-emoji",
}  # fmt: skip
JSON_FIELDS = {
    "reply_markup",
    "commands",
    "allowed_updates",
    "entities",
    "caption_entities",
    "scope",
    "link_preview_options",
}
# Faults applied after the call took effect (the message is in the chat): only the answer is held back.
AFTER_FAULTS = {"timeout-after", "delay-after"}
INT_FIELDS = {"offset", "limit", "timeout", "message_id", "cache_time"}


class ApiError(Exception):
    """A Bot API error answer: HTTP status, Telegram's description and optional parameters."""

    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


@dataclass
class StoredFile:
    """A file the server holds: sent by the patient or uploaded by the bot."""

    file_id: str
    file_unique_id: str
    data: bytes
    file_path: str
    width: int = 0
    height: int = 0
    download_delay_s: float = 0.0  # the file's download waits this long first (a slow network for this patient)


@dataclass
class _Pending:
    update: dict[str, Any]
    forced: bool = False  # redelivered on purpose, below the confirmed offset
    delivered: bool = False
    webhook_failures: int = 0


@dataclass
class _State:
    token: str
    bot_user: dict[str, Any]
    next_update_id: int = 100_000
    pending: list[_Pending] = field(default_factory=list)
    chats: dict[int, dict[str, Any]] = field(default_factory=dict)
    message_counters: dict[int, itertools.count] = field(default_factory=dict)
    messages: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    files: dict[str, StoredFile] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    sent: list[dict[str, Any]] = field(default_factory=list)
    seq: itertools.count = field(default_factory=lambda: itertools.count(1))
    file_counter: itertools.count = field(default_factory=lambda: itertools.count(1))
    query_counter: itertools.count = field(default_factory=lambda: itertools.count(1))
    faults: dict[str, list[str]] = field(default_factory=dict)
    callback_queries: dict[str, dict[str, Any]] = field(default_factory=dict)
    commands: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    blocked: set[int] = field(default_factory=set)
    updates: dict[int, dict[str, Any]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    last_poll_at: float = 0.0
    confirmed_offset: int = 0
    webhook: dict[str, Any] | None = None  # setWebhook's url, secret_token and max_connections
    webhook_errors: int = 0


class _HTMLChecker(HTMLParser):
    """Checks Telegram's HTML subset and collects the plain text the patient sees."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in HTML_TAGS:
            raise ApiError(400, f'Bad Request: can\'t parse entities: Unsupported start tag "{tag}"')
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            raise ApiError(400, f'Bad Request: can\'t parse entities: Unexpected end tag "{tag}"')
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def plain_text(text: str, parse_mode: str | None) -> str:
    """The text a Telegram client shows for `text` under `parse_mode` (HTML is checked like Telegram does)."""
    if not parse_mode or parse_mode.upper() != "HTML":
        return text
    checker = _HTMLChecker()
    checker.feed(text)
    checker.close()
    if checker.stack:
        raise ApiError(
            400,
            f"Bad Request: can't parse entities: Can't find end tag corresponding to start tag \"{checker.stack[-1]}\"",
        )
    return "".join(checker.parts)


def _update_chat(update: dict[str, Any]) -> Any:
    """The chat an update belongs to (its updates are delivered in order), or its own id when it has none."""
    for key in ("message", "edited_message", "channel_post", "edited_channel_post"):
        if isinstance(update.get(key), dict):
            return update[key].get("chat", {}).get("id")
    query = update.get("callback_query")
    if isinstance(query, dict):
        return ((query.get("message") or {}).get("chat") or {}).get("id") or (query.get("from") or {}).get("id")
    return ("update", update.get("update_id"))


def _image_size(data: bytes) -> tuple[int, int] | None:
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:  # noqa: BLE001 - anything PIL cannot read is "not an image" here
        return None


def _telegram_photo_versions(data: bytes) -> list[tuple[bytes, int, int]]:
    """Re-encode a photo the way Telegram does for compressed photos: JPEG, longest side <= 1280, thumbnails."""
    try:
        from PIL import Image, ImageOps

        with Image.open(io.BytesIO(data)) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
            longest = max(img.size)
            versions = []
            for side in PHOTO_SIDES:
                # Every size smaller than the photo, then the photo itself capped at the largest size.
                scale = min(1.0, side / longest)
                size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
                out = io.BytesIO()
                img.resize(size, Image.Resampling.LANCZOS).save(out, format="JPEG", quality=87)
                versions.append((out.getvalue(), size[0], size[1]))
                if side >= longest:
                    break
            return versions
    except Exception:  # noqa: BLE001 - a file PIL cannot read goes through unchanged
        return [(data, 0, 0)]


class LocalBotAPIServer:
    """The aiohttp application and its state; run it with `LocalBotAPI` or inside your own loop."""

    def __init__(self, token: str, *, timeout_fault_s: float = 6.0, bot_username: str = "skintriage_local_bot") -> None:
        bot_id = int(token.split(":", 1)[0]) if token.split(":", 1)[0].isdigit() else 123456
        self.state = _State(
            token=token,
            bot_user={
                "id": bot_id,
                "is_bot": True,
                "first_name": "Skin Triage (local)",
                "username": bot_username,
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
                "can_connect_to_business": False,
                "has_main_web_app": False,
            },
        )
        self.timeout_fault_s = timeout_fault_s
        self._new_update: asyncio.Condition | None = None
        self._webhook_kick: asyncio.Event | None = None
        self._webhook_task: asyncio.Task | None = None
        self.app = web.Application(client_max_size=60 * 1024 * 1024)
        self.app.router.add_route("*", "/bot{token}/{method}", self._api)
        self.app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        self.app.router.add_post("/_sim/message", self._sim_message)
        self.app.router.add_post("/_sim/callback", self._sim_callback)
        self.app.router.add_post("/_sim/inject", self._sim_inject)
        self.app.router.add_post("/_sim/redeliver", self._sim_redeliver)
        self.app.router.add_get("/_sim/sent", self._sim_sent)
        self.app.router.add_get("/_sim/file/{file_id}", self._sim_file)
        self.app.router.add_post("/_sim/faults", self._sim_faults)
        self.app.router.add_post("/_sim/block", self._sim_block)
        self.app.router.add_get("/_sim/status", self._sim_status)

    @property
    def _cond(self) -> asyncio.Condition:
        if self._new_update is None:
            self._new_update = asyncio.Condition()
        return self._new_update

    # --- plumbing ---------------------------------------------------------------------------

    @staticmethod
    def _ok(result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    def _error(exc: ApiError) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": exc.code, "description": exc.description}
        if exc.parameters:
            body["parameters"] = exc.parameters
        return web.json_response(body, status=exc.code)

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                params.update(await request.json())
            else:
                form = await request.post()
                for key, value in form.items():
                    params[key] = value.file.read() if isinstance(value, web.FileField) else value
        for key in JSON_FIELDS & params.keys():
            if isinstance(params[key], str):
                try:
                    params[key] = json.loads(params[key])
                except json.JSONDecodeError as exc:
                    raise ApiError(400, f"Bad Request: can't parse {key} JSON object") from exc
        for key in INT_FIELDS & params.keys():
            try:
                params[key] = int(params[key])
            except (TypeError, ValueError) as exc:
                raise ApiError(400, f'Bad Request: field "{key}" must be an integer') from exc
        return params

    def _next_fault(self, method: str) -> str | None:
        queue = self.state.faults.get(method.lower())
        if queue:
            return queue.pop(0)
        return None

    async def _apply_fault(self, fault: str) -> None:
        kind, _, arg = fault.partition(":")
        if kind == "delay":  # a slow call that still succeeds: lets a test act while it is on its way
            await asyncio.sleep(float(arg) if arg else self.timeout_fault_s)
            return
        if kind == "429":
            retry = int(arg or 1)
            raise ApiError(429, f"Too Many Requests: retry after {retry}", {"retry_after": retry})
        if kind == "timeout":
            await asyncio.sleep(float(arg) if arg else self.timeout_fault_s)
            raise ApiError(504, "Gateway Timeout")
        if kind.isdigit():
            code = int(kind)
            descriptions = {
                400: "Bad Request: injected fault",
                403: "Forbidden: bot was blocked by the user",
                500: "Internal Server Error",
                502: "Bad Gateway",
                503: "Service Unavailable",
            }
            raise ApiError(code, arg or descriptions.get(code, f"Error {code}"))
        raise ApiError(500, f"unknown injected fault {fault!r}")

    async def _api(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.state.token:
            return self._error(ApiError(401, "Unauthorized"))
        method = request.match_info["method"]
        handler = getattr(self, f"_m_{method.lower()}", None)
        if handler is None:
            return self._error(ApiError(404, "Not Found: method not found"))
        self.state.calls[method] = self.state.calls.get(method, 0) + 1
        fault = self._next_fault(method)
        try:
            params = await self._params(request)
            after = fault is not None and fault.partition(":")[0] in AFTER_FAULTS
            if fault and not after:
                await self._apply_fault(fault)
            result = await handler(params)
            if fault and after:
                kind, _, arg = fault.partition(":")
                await asyncio.sleep(float(arg) if arg else self.timeout_fault_s)
                if kind == "timeout-after":
                    # The call took effect but the answer never arrives: a retry would repeat it.
                    raise ApiError(504, "Gateway Timeout")
                # delay-after: the call took effect and its answer comes late (a test acts in between).
        except ApiError as exc:
            return self._error(exc)
        return self._ok(result)

    async def _download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.state.token:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        file_id = self.state.paths.get(request.match_info["path"])
        if file_id is None:
            return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)
        stored = self.state.files[file_id]
        if stored.download_delay_s:
            await asyncio.sleep(stored.download_delay_s)
        return web.Response(body=stored.data, content_type="application/octet-stream")

    # --- state helpers ----------------------------------------------------------------------

    def _chat(self, chat_id: Any) -> dict[str, Any]:
        try:
            key = int(chat_id)
        except (TypeError, ValueError) as exc:
            raise ApiError(400, "Bad Request: chat not found") from exc
        chat = self.state.chats.get(key)
        if chat is None:
            raise ApiError(400, "Bad Request: chat not found")
        if chat["type"] == "private" and key in self.state.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        return chat

    def _next_message_id(self, chat_id: int) -> int:
        counter = self.state.message_counters.setdefault(chat_id, itertools.count(1))
        return next(counter)

    def _store_file(
        self, data: bytes, ext: str, folder: str, width: int = 0, height: int = 0, download_delay_s: float = 0.0
    ) -> StoredFile:
        unique = "AQAD" + hashlib.sha256(data).hexdigest()[:16]
        number = next(self.state.file_counter)
        file_id = f"AgAC{unique}{number:06d}"
        path = f"{folder}/file_{number}.{ext}"
        stored = StoredFile(file_id, unique, data, path, width, height, download_delay_s)
        self.state.files[file_id] = stored
        self.state.paths[path] = file_id
        return stored

    def _photo_sizes_for_upload(self, data: bytes) -> list[dict[str, Any]]:
        """The bot's uploaded photo is kept byte for byte as the largest size (so tests can compare it)."""
        size = _image_size(data) or (0, 0)
        sizes = []
        if size[0] and max(size) > PHOTO_SIDES[0]:
            thumb = _telegram_photo_versions(data)[0]
            stored = self._store_file(thumb[0], "jpg", "photos", thumb[1], thumb[2])
            sizes.append(self._photo_size(stored))
        sizes.append(self._photo_size(self._store_file(data, "jpg", "photos", size[0], size[1])))
        return sizes

    @staticmethod
    def _photo_size(stored: StoredFile) -> dict[str, Any]:
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "width": stored.width,
            "height": stored.height,
            "file_size": len(stored.data),
        }

    def _record(self, method: str, chat_id: int | None, **fields: Any) -> dict[str, Any]:
        event = {"seq": next(self.state.seq), "method": method, "chat_id": chat_id, "at": time.time(), **fields}
        self.state.sent.append(event)
        return event

    @staticmethod
    def _check_markup(markup: Any) -> dict[str, Any] | None:
        if markup is None or markup == "":
            return None
        if not isinstance(markup, dict):
            raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
        for row in markup.get("inline_keyboard", []):
            for button in row:
                data = button.get("callback_data")
                if data is not None and not 1 <= len(data.encode()) <= CALLBACK_DATA_LIMIT:
                    raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
                if not button.get("text"):
                    raise ApiError(400, "Bad Request: text buttons are unallowed in the inline keyboard")
        return markup

    def _bot_message(self, chat: dict[str, Any], params: dict[str, Any], **content: Any) -> dict[str, Any]:
        markup = self._check_markup(params.get("reply_markup"))
        message_id = self._next_message_id(chat["id"])
        message = {
            "message_id": message_id,
            "from": self.state.bot_user,
            "chat": chat,
            "date": int(time.time()),
            **content,
        }
        if markup:
            message["reply_markup"] = markup
        self.state.messages[(chat["id"], message_id)] = message
        return message

    def _text_param(
        self, params: dict[str, Any], key: str, limit: int, *, required: bool
    ) -> tuple[str | None, str | None]:
        raw = params.get(key)
        if raw is None or raw == "":
            if required:
                raise ApiError(400, "Bad Request: message text is empty")
            return None, None
        shown = plain_text(str(raw), params.get("parse_mode"))
        if not shown.strip() and required:
            raise ApiError(400, "Bad Request: message text is empty")
        if len(shown) > limit:
            what = "message caption is too long" if key == "caption" else "message is too long"
            raise ApiError(400, f"Bad Request: {what}")
        return str(raw), shown

    def _find_message(self, params: dict[str, Any], *, what: str) -> dict[str, Any]:
        chat = self._chat(params.get("chat_id"))
        message = self.state.messages.get((chat["id"], int(params.get("message_id", 0))))
        if message is None or message.get("deleted"):
            raise ApiError(400, f"Bad Request: message to {what} not found")
        return message

    # --- Bot API methods --------------------------------------------------------------------

    async def _m_getme(self, params: dict[str, Any]) -> Any:
        return self.state.bot_user

    async def _m_logout(self, params: dict[str, Any]) -> Any:
        return True

    async def _m_close(self, params: dict[str, Any]) -> Any:
        return True

    async def _m_deletewebhook(self, params: dict[str, Any]) -> Any:
        if str(params.get("drop_pending_updates", "")).lower() == "true":
            self.state.pending.clear()
        await self._stop_webhook()
        return True

    async def _m_getwebhookinfo(self, params: dict[str, Any]) -> Any:
        webhook = self.state.webhook or {}
        info = {"url": webhook.get("url", ""), "has_custom_certificate": False}
        info["pending_update_count"] = len(self.state.pending)
        if webhook:
            info["max_connections"] = webhook["max_connections"]
        return info

    async def _m_setwebhook(self, params: dict[str, Any]) -> Any:
        url = str(params.get("url") or "")
        if not url:
            await self._stop_webhook()
            return True
        if not url.startswith(("http://", "https://")):
            raise ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.get("secret_token") or None
        if secret is not None and not (1 <= len(secret) <= 256 and all(c.isalnum() or c in "_-" for c in secret)):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        if str(params.get("drop_pending_updates", "")).lower() == "true":
            self.state.pending.clear()
        await self._stop_webhook()
        max_connections = max(1, min(100, int(params.get("max_connections") or 40)))
        self.state.webhook = {"url": url, "secret_token": secret, "max_connections": max_connections}
        self._webhook_kick = asyncio.Event()
        self._webhook_task = asyncio.get_running_loop().create_task(
            self._deliver_webhook(self.state.webhook, self._webhook_kick)
        )
        return True

    async def _stop_webhook(self) -> None:
        self.state.webhook = None
        task, self._webhook_task = self._webhook_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _deliver_webhook(self, webhook: dict[str, Any], kick: asyncio.Event) -> None:
        """POST each pending update to the webhook, like Telegram: oldest first, up to max_connections at once,
        one at a time per chat (so a chat's updates arrive in order); an update is confirmed by a 2xx answer,
        anything else is retried a second later, WEBHOOK_ATTEMPTS times in all."""
        headers = {"X-Telegram-Bot-Api-Secret-Token": webhook["secret_token"]} if webhook["secret_token"] else {}
        slots = asyncio.Semaphore(webhook["max_connections"])
        sending: set[int] = set()  # ids of the updates on their way
        busy_chats: set[Any] = set()

        async def send(session: aiohttp.ClientSession, pending: _Pending, chat: Any) -> None:
            update_id = pending.update["update_id"]
            delivered = False
            try:
                async with slots, session.post(webhook["url"], json=pending.update, headers=headers) as response:
                    delivered = 200 <= response.status < 300
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("webhook delivery of update %d failed: %s", update_id, type(exc).__name__)
            if delivered:
                pending.delivered = True
                with contextlib.suppress(ValueError):
                    self.state.pending.remove(pending)
            else:
                self.state.webhook_errors += 1
                pending.webhook_failures += 1
                if pending.webhook_failures >= WEBHOOK_ATTEMPTS:  # Telegram too gives up after a few attempts
                    with contextlib.suppress(ValueError):
                        self.state.pending.remove(pending)
                else:
                    await asyncio.sleep(1.0)
            sending.discard(id(pending))
            busy_chats.discard(chat)
            kick.set()

        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            tasks: set[asyncio.Task] = set()
            try:
                while True:
                    kick.clear()
                    for pending in sorted(self.state.pending, key=lambda p: p.update["update_id"]):
                        chat = _update_chat(pending.update)
                        if id(pending) in sending or chat in busy_chats:
                            continue
                        sending.add(id(pending))
                        busy_chats.add(chat)
                        task = asyncio.get_running_loop().create_task(send(session, pending, chat))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    await kick.wait()
            finally:
                for task in list(tasks):
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _m_getupdates(self, params: dict[str, Any]) -> Any:
        if self.state.webhook is not None:
            raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook "
                           "to delete the webhook first")  # fmt: skip
        offset = int(params.get("offset", 0) or 0)
        limit = max(1, min(100, int(params.get("limit", 100) or 100)))
        timeout = max(0, int(params.get("timeout", 0) or 0))
        self.state.last_poll_at = time.time()
        if offset:
            self.state.confirmed_offset = max(self.state.confirmed_offset, offset)
            self.state.pending = [
                p for p in self.state.pending if p.update["update_id"] >= offset or (p.forced and not p.delivered)
            ]

        def ready() -> list[_Pending]:
            return sorted(
                (p for p in self.state.pending if p.update["update_id"] >= offset or p.forced and not p.delivered),
                key=lambda p: p.update["update_id"],
            )[:limit]

        batch = ready()
        if not batch and timeout:
            async with self._cond:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cond.wait_for(lambda: bool(ready())), timeout)
            batch = ready()
        for p in batch:
            p.delivered = True
        self.state.last_poll_at = time.time()
        return [p.update for p in batch]

    async def _m_sendmessage(self, params: dict[str, Any]) -> Any:
        chat = self._chat(params.get("chat_id"))
        raw, shown = self._text_param(params, "text", TEXT_LIMIT, required=True)
        message = self._bot_message(chat, params, text=shown)
        self._record(
            "sendMessage",
            chat["id"],
            message_id=message["message_id"],
            text=shown,
            raw_text=raw,
            parse_mode=params.get("parse_mode"),
            reply_markup=message.get("reply_markup"),
        )
        return message

    async def _resolve_upload(self, params: dict[str, Any], key: str) -> StoredFile | bytes:
        value = params.get(key)
        if isinstance(value, bytes | bytearray):
            if not value:
                raise ApiError(400, "Bad Request: file must be non-empty")
            return bytes(value)
        if isinstance(value, str) and value.startswith("attach://"):
            attached = params.get(value.removeprefix("attach://"))
            if isinstance(attached, bytes | bytearray):
                return bytes(attached)
        if isinstance(value, str) and value in self.state.files:
            return self.state.files[value]
        if isinstance(value, str) and value:
            raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
        raise ApiError(400, f"Bad Request: there is no {key} in the request")

    async def _m_sendphoto(self, params: dict[str, Any]) -> Any:
        chat = self._chat(params.get("chat_id"))
        raw, shown = self._text_param(params, "caption", CAPTION_LIMIT, required=False)
        upload = await self._resolve_upload(params, "photo")
        if isinstance(upload, StoredFile):
            data = upload.data
            sizes = [self._photo_size(upload)]
        else:
            if _image_size(upload) is None:
                raise ApiError(400, "Bad Request: IMAGE_PROCESS_FAILED")
            data = upload
            sizes = self._photo_sizes_for_upload(upload)
        content: dict[str, Any] = {"photo": sizes}
        if shown is not None:
            content["caption"] = shown
        message = self._bot_message(chat, params, **content)
        self._record(
            "sendPhoto",
            chat["id"],
            message_id=message["message_id"],
            caption=shown,
            raw_caption=raw,
            parse_mode=params.get("parse_mode"),
            photo=sizes[-1]["file_id"],
            photo_size=len(data),
            reply_markup=message.get("reply_markup"),
        )
        return message

    async def _m_senddocument(self, params: dict[str, Any]) -> Any:
        chat = self._chat(params.get("chat_id"))
        raw, shown = self._text_param(params, "caption", CAPTION_LIMIT, required=False)
        upload = await self._resolve_upload(params, "document")
        stored = upload if isinstance(upload, StoredFile) else self._store_file(upload, "bin", "documents")
        document = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_name": params.get("filename") or "document",
            "mime_type": "application/octet-stream",
            "file_size": len(stored.data),
        }
        content: dict[str, Any] = {"document": document}
        if shown is not None:
            content["caption"] = shown
        message = self._bot_message(chat, params, **content)
        self._record(
            "sendDocument", chat["id"], message_id=message["message_id"], caption=shown, raw_caption=raw,
            document=stored.file_id, reply_markup=message.get("reply_markup"),
        )  # fmt: skip
        return message

    async def _m_sendchataction(self, params: dict[str, Any]) -> Any:
        chat = self._chat(params.get("chat_id"))
        action = params.get("action")
        if action not in {
            "typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice",
            "upload_document", "choose_sticker", "find_location", "record_video_note", "upload_video_note",
        }:  # fmt: skip
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        self._record("sendChatAction", chat["id"], action=action)
        return True

    async def _m_getfile(self, params: dict[str, Any]) -> Any:
        stored = self.state.files.get(str(params.get("file_id")))
        if stored is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        if len(stored.data) > 20 * 1024 * 1024:
            raise ApiError(400, "Bad Request: file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.data),
            "file_path": stored.file_path,
        }

    async def _m_answercallbackquery(self, params: dict[str, Any]) -> Any:
        query = self.state.callback_queries.get(str(params.get("callback_query_id")))
        if query is None or query["answered"]:
            raise ApiError(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
        query["answered"] = True
        self._record(
            "answerCallbackQuery",
            query["chat_id"],
            callback_query_id=query["id"],
            text=params.get("text"),
            show_alert=str(params.get("show_alert", "false")).lower() == "true",
        )
        return True

    async def _m_editmessagetext(self, params: dict[str, Any]) -> Any:
        message = self._find_message(params, what="edit")
        if "text" not in message:
            raise ApiError(400, "Bad Request: there is no text in the message to edit")
        raw, shown = self._text_param(params, "text", TEXT_LIMIT, required=True)
        markup = self._check_markup(params.get("reply_markup"))
        if shown == message["text"] and markup == message.get("reply_markup"):
            raise ApiError(
                400,
                "Bad Request: message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message",
            )
        message["text"] = shown
        message["edit_date"] = int(time.time())
        if markup:
            message["reply_markup"] = markup
        else:
            message.pop("reply_markup", None)
        self._record(
            "editMessageText", message["chat"]["id"], message_id=message["message_id"], text=shown, raw_text=raw,
            parse_mode=params.get("parse_mode"), reply_markup=markup,
        )  # fmt: skip
        return message

    async def _m_editmessagecaption(self, params: dict[str, Any]) -> Any:
        message = self._find_message(params, what="edit")
        raw, shown = self._text_param(params, "caption", CAPTION_LIMIT, required=False)
        markup = self._check_markup(params.get("reply_markup"))
        message["caption"] = shown
        message["edit_date"] = int(time.time())
        if markup:
            message["reply_markup"] = markup
        else:
            message.pop("reply_markup", None)
        self._record(
            "editMessageCaption", message["chat"]["id"], message_id=message["message_id"], caption=shown,
            raw_caption=raw, reply_markup=markup,
        )  # fmt: skip
        return message

    async def _m_editmessagereplymarkup(self, params: dict[str, Any]) -> Any:
        message = self._find_message(params, what="edit")
        markup = self._check_markup(params.get("reply_markup"))
        if markup == message.get("reply_markup"):
            raise ApiError(
                400,
                "Bad Request: message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message",
            )
        if markup:
            message["reply_markup"] = markup
        else:
            message.pop("reply_markup", None)
        message["edit_date"] = int(time.time())
        self._record(
            "editMessageReplyMarkup", message["chat"]["id"], message_id=message["message_id"], reply_markup=markup
        )
        return message

    async def _m_deletemessage(self, params: dict[str, Any]) -> Any:
        message = self._find_message(params, what="delete")
        message["deleted"] = True
        self._record("deleteMessage", message["chat"]["id"], message_id=message["message_id"])
        return True

    async def _m_setmycommands(self, params: dict[str, Any]) -> Any:
        commands = params.get("commands") or []
        scope = json.dumps(params.get("scope") or {"type": "default"}, sort_keys=True)
        key = f"{scope}|{params.get('language_code') or ''}"
        for command in commands:
            if not command.get("command") or not command.get("description"):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
        self.state.commands[key] = [{"command": c["command"], "description": c["description"]} for c in commands]
        self._record(
            "setMyCommands", None, commands=self.state.commands[key], language_code=params.get("language_code")
        )
        return True

    async def _m_getmycommands(self, params: dict[str, Any]) -> Any:
        scope = json.dumps(params.get("scope") or {"type": "default"}, sort_keys=True)
        return self.state.commands.get(f"{scope}|{params.get('language_code') or ''}", [])

    async def _m_deletemycommands(self, params: dict[str, Any]) -> Any:
        scope = json.dumps(params.get("scope") or {"type": "default"}, sort_keys=True)
        self.state.commands.pop(f"{scope}|{params.get('language_code') or ''}", None)
        return True

    # --- the simulated patient --------------------------------------------------------------

    async def _add_update(self, update: dict[str, Any], *, forced: bool = False) -> int:
        if "update_id" not in update:
            update["update_id"] = self.state.next_update_id
            self.state.next_update_id += 1
        else:
            self.state.next_update_id = max(self.state.next_update_id, int(update["update_id"]) + 1)
        self.state.updates[int(update["update_id"])] = update
        self.state.pending.append(_Pending(update, forced=forced))
        async with self._cond:
            self._cond.notify_all()
        if self._webhook_kick is not None:
            self._webhook_kick.set()
        return int(update["update_id"])

    def _patient_chat(self, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        user_id = int(body["user_id"])
        user = {
            "id": user_id,
            "is_bot": False,
            "first_name": body.get("first_name", "Patient"),
            "language_code": body.get("language_code", "en"),
        }
        chat_type = body.get("chat_type", "private")
        if chat_type == "private":
            chat = {"id": user_id, "type": "private", "first_name": user["first_name"]}
        else:
            chat_id = int(body.get("chat_id") or -(1_000_000_000_000 + user_id))
            chat = {"id": chat_id, "type": chat_type, "title": body.get("chat_title", "Family group")}
        self.state.chats[chat["id"]] = chat
        return user, chat

    async def _sim_message(self, request: web.Request) -> web.Response:
        body = await request.json()
        user, chat = self._patient_chat(body)
        content: dict[str, Any] = {}
        delay = float(body.get("download_delay_s") or 0)
        if body.get("text") is not None:
            content["text"] = body["text"]
            if body["text"].startswith("/"):
                word = body["text"].split()[0]
                content["entities"] = [{"type": "bot_command", "offset": 0, "length": len(word)}]
        if body.get("photo_b64") is not None:
            data = base64.b64decode(body["photo_b64"])
            versions = (
                # Off the event loop: Telegram makes these on its own servers, and resizing here would
                # hold up every other Bot API call (the bot's acknowledgements too) under a burst.
                await asyncio.to_thread(_telegram_photo_versions, data)
                if body.get("compress", True)
                else [(data, *(_image_size(data) or (0, 0)))]
            )
            content["photo"] = [
                self._photo_size(self._store_file(d, "jpg", "photos", w, h, delay)) for d, w, h in versions
            ]
        if body.get("document_b64") is not None:
            data = base64.b64decode(body["document_b64"])
            ext = (body.get("file_name") or "file.bin").rsplit(".", 1)[-1][:8] or "bin"
            stored = self._store_file(data, ext, "documents", download_delay_s=delay)
            content["document"] = {
                "file_id": stored.file_id,
                "file_unique_id": stored.file_unique_id,
                "file_name": body.get("file_name") or "file",
                "mime_type": body.get("mime_type") or "application/octet-stream",
                "file_size": len(stored.data),
            }
        if body.get("caption") is not None:
            content["caption"] = body["caption"]
        reply_to = body.get("reply_to")
        if reply_to is not None:  # the patient's reply to a message of this chat (Telegram's reply_to_message)
            replied = self.state.messages.get((chat["id"], int(reply_to)))
            if replied is None:
                return web.json_response({"error": f"no message {reply_to} in chat {chat['id']}"}, status=404)
            content["reply_to_message"] = replied
        content.update(body.get("extra") or {})
        edit_of = body.get("edit_of")
        if edit_of is not None:
            original = self.state.messages.get((chat["id"], int(edit_of)))
            if original is None:
                return web.json_response({"error": f"no message {edit_of} in chat {chat['id']}"}, status=404)
            message = {**original, **content, "edit_date": int(time.time())}
            self.state.messages[(chat["id"], int(edit_of))] = message
            key = "edited_message"
        else:
            message_id = self._next_message_id(chat["id"])
            message = {"message_id": message_id, "from": user, "chat": chat, "date": int(time.time()), **content}
            self.state.messages[(chat["id"], message_id)] = message
            key = "message"
        update_id = await self._add_update({key: message})
        # queued_at: when the bot could first have the update (Telegram's own upload and resizing are done).
        return web.json_response(
            {"update_id": update_id, "message_id": message["message_id"], "message": message, "queued_at": time.time()}
        )

    async def _sim_callback(self, request: web.Request) -> web.Response:
        body = await request.json()
        user, chat = self._patient_chat(body)
        message = self.state.messages.get((chat["id"], int(body["message_id"])))
        if message is None:
            return web.json_response({"error": f"no message {body['message_id']} in chat {chat['id']}"}, status=404)
        query_id = str(8_000_000_000 + next(self.state.query_counter))
        self.state.callback_queries[query_id] = {"id": query_id, "chat_id": chat["id"], "answered": False}
        query = {
            "id": query_id,
            "from": user,
            "message": message,
            "chat_instance": str(abs(chat["id"]) * 7 + 1),
            "data": body["data"],
        }
        update_id = await self._add_update({"callback_query": query})
        return web.json_response({"update_id": update_id, "callback_query_id": query_id})

    async def _sim_inject(self, request: web.Request) -> web.Response:
        update = await request.json()
        forced = "update_id" in update
        for key in ("message", "edited_message"):
            chat = (update.get(key) or {}).get("chat")
            if chat:
                self.state.chats.setdefault(int(chat["id"]), chat)
        update_id = await self._add_update(update, forced=forced)
        return web.json_response({"update_id": update_id})

    async def _sim_redeliver(self, request: web.Request) -> web.Response:
        body = await request.json()
        update_id = int(body["update_id"])
        update = self.state.updates.get(update_id)
        if update is None:
            return web.json_response({"error": f"no update {update_id} was ever queued"}, status=404)
        await self._add_update(dict(update), forced=True)
        return web.json_response({"update_id": update_id})

    async def _sim_sent(self, request: web.Request) -> web.Response:
        chat_id = request.query.get("chat_id")
        since = int(request.query.get("since", 0))
        events = [e for e in self.state.sent if e["seq"] > since and (chat_id is None or str(e["chat_id"]) == chat_id)]
        return web.json_response(events)

    async def _sim_file(self, request: web.Request) -> web.Response:
        stored = self.state.files.get(request.match_info["file_id"])
        if stored is None:
            return web.Response(status=404, text="no such file")
        return web.Response(body=stored.data, content_type="application/octet-stream")

    async def _sim_faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        faults = list(body.get("faults") or [])
        for fault in faults:
            kind = fault.partition(":")[0]
            if not (kind.isdigit() or kind in {"timeout", "delay", *AFTER_FAULTS}):
                return web.json_response(
                    {"error": f"unknown fault {fault!r}; use '429:SECONDS', an HTTP status like '500', "
                     "'timeout[:SECONDS]', 'timeout-after[:SECONDS]', 'delay[:SECONDS]' or 'delay-after[:SECONDS]'"},
                    status=400,
                )  # fmt: skip
        self.state.faults[str(body["method"]).lower()] = faults
        return web.json_response({"ok": True})

    async def _sim_block(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("blocked", True):
            self.state.blocked.add(int(body["user_id"]))
        else:
            self.state.blocked.discard(int(body["user_id"]))
        return web.json_response({"ok": True})

    async def _sim_status(self, request: web.Request) -> web.Response:
        undelivered = [p for p in self.state.pending if not p.delivered]
        return web.json_response(
            {
                "pending_updates": len(undelivered),
                "unconfirmed_updates": len(self.state.pending),
                "confirmed_offset": self.state.confirmed_offset,
                "last_poll_at": self.state.last_poll_at,
                "webhook_url": (self.state.webhook or {}).get("url"),
                "webhook_errors": self.state.webhook_errors,
                "calls": self.state.calls,
                "commands": self.state.commands,
            }
        )


class LocalBotAPI:
    """The local Bot API server on a port, run in a background thread (`start`) or the current loop (`start_async`)."""

    def __init__(self, token: str, host: str = "127.0.0.1", port: int = 0, *, timeout_fault_s: float = 6.0) -> None:
        self.token = token
        self.host = host
        self.port = port
        self.server = LocalBotAPIServer(token, timeout_fault_s=timeout_fault_s)
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """Root URL of the server (what `LocalBotAPIClient` takes)."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_base_url(self) -> str:
        """Value for TELEGRAM_API_BASE_URL (python-telegram-bot appends the token)."""
        return f"{self.base_url}/bot"

    @property
    def file_base_url(self) -> str:
        """Value for TELEGRAM_FILE_BASE_URL."""
        return f"{self.base_url}/file/bot"

    def client(self) -> LocalBotAPIClient:
        """A client for the simulated patient's side."""
        return LocalBotAPIClient(self.base_url)

    async def start_async(self) -> None:
        """Start serving in the running event loop."""
        self._runner = web.AppRunner(self.server.app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []  # aiohttp has no public accessor
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("local Bot API server listening on %s", self.base_url)

    async def stop_async(self) -> None:
        """Stop serving (long polls end, webhook delivery stops)."""
        await self.server._stop_webhook()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start(self) -> LocalBotAPI:
        """Start serving on a daemon thread with its own event loop; returns once the port is open."""
        started = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                errors.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self.stop_async())
            # Handlers still sleeping in an injected timeout: end them so the loop closes cleanly.
            leftover = asyncio.all_tasks(loop)
            for task in leftover:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name="local-bot-api", daemon=True)
        self._thread.start()
        started.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        """Stop the background server and wait for its thread."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None
            self._thread = None

    def __enter__(self) -> LocalBotAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LocalBotAPIClient:
    """The simulated patient and the recorder, over HTTP (works against a server in another process)."""

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self.http.close()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(path, json=body)
        if response.status_code != 200:
            raise ValueError(f"local Bot API refused {path}: {response.text}")
        return response.json()

    def send_message(
        self,
        user_id: int,
        *,
        language_code: str = "en",
        chat_type: str = "private",
        chat_id: int | None = None,
        **content: Any,
    ) -> dict[str, Any]:
        """Send any message from the patient; returns {"update_id", "message_id", "message"}.

        reply_to=MESSAGE_ID (a keyword) sends it as a reply to that message of the chat (reply_to_message)."""
        body = {"user_id": user_id, "language_code": language_code, "chat_type": chat_type, "chat_id": chat_id}
        body.update(content)
        return self._post("/_sim/message", body)

    def send_text(self, user_id: int, text: str, **kwargs: Any) -> int:
        """Send a text message (a leading /command gets its bot_command entity); returns the update id."""
        return self.send_message(user_id, text=text, **kwargs)["update_id"]

    def send_command(self, user_id: int, command: str, **kwargs: Any) -> int:
        """Send a command such as "/start"; returns the update id."""
        if not command.startswith("/"):
            raise ValueError(f"commands start with '/', got {command!r}")
        return self.send_text(user_id, command, **kwargs)

    def send_photo(
        self,
        user_id: int,
        data: bytes,
        *,
        caption: str | None = None,
        language_code: str = "en",
        compress: bool = True,
        **kwargs: Any,
    ) -> int:
        """Send a photo as Telegram's photo message (re-encoded, several sizes); returns the update id.

        download_delay_s=N (a keyword) makes the bot's download of it wait N seconds (a slow network)."""
        return self.send_message(
            user_id,
            photo_b64=base64.b64encode(data).decode(),
            caption=caption,
            language_code=language_code,
            compress=compress,
            **kwargs,
        )["update_id"]

    def send_document(
        self, user_id: int, data: bytes, filename: str, mime_type: str, *, caption: str | None = None, **kwargs: Any
    ) -> int:
        """Send a file (sent "as file", bytes unchanged); returns the update id."""
        return self.send_message(
            user_id,
            document_b64=base64.b64encode(data).decode(),
            file_name=filename,
            mime_type=mime_type,
            caption=caption,
            **kwargs,
        )["update_id"]

    def send_sticker(self, user_id: int, **kwargs: Any) -> int:
        """Send a sticker; returns the update id."""
        sticker = {
            "file_id": "CAACAgIAAxkBAAEBsticker",
            "file_unique_id": "AgADsticker",
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": "\U0001f44d",
        }
        return self.send_message(user_id, extra={"sticker": sticker}, **kwargs)["update_id"]

    def edit_message(self, user_id: int, message_id: int, text: str, **kwargs: Any) -> int:
        """The patient edits one of their messages (an edited_message update); returns the update id."""
        return self.send_message(user_id, text=text, edit_of=message_id, **kwargs)["update_id"]

    def press_button(self, user_id: int, message_id: int, callback_data: str, **kwargs: Any) -> int:
        """Press an inline button under a bot message (any data may be sent, as a forged client could)."""
        body = {"user_id": user_id, "message_id": message_id, "data": callback_data}
        body.update(kwargs)
        return self._post("/_sim/callback", body)["update_id"]

    def inject_update(self, raw: dict[str, Any]) -> int:
        """Queue a raw update; one with an explicit update_id is delivered even if that id was confirmed."""
        return self._post("/_sim/inject", raw)["update_id"]

    def redeliver(self, update_id: int) -> None:
        """Deliver an update again with the same update_id, as Telegram does when a poll's offset was lost."""
        self._post("/_sim/redeliver", {"update_id": update_id})

    def set_faults(self, method: str, faults: list[str]) -> None:
        """Make the next calls of `method` fail in order: "429:3", "500", "timeout[:s]", "timeout-after[:s]",
        or succeed slowly: "delay[:s]" (held before it takes effect), "delay-after[:s]" (took effect, answer late)."""
        self._post("/_sim/faults", {"method": method, "faults": faults})

    def block(self, user_id: int, blocked: bool = True) -> None:
        """Simulate the patient blocking the bot (sends then answer 403)."""
        self._post("/_sim/block", {"user_id": user_id, "blocked": blocked})

    def sent(self, chat_id: int | None = None, *, since: int = 0) -> list[dict[str, Any]]:
        """Everything the bot did in a chat (or all chats), oldest first; each has seq, method and the fields."""
        params: dict[str, Any] = {"since": since}
        if chat_id is not None:
            params["chat_id"] = chat_id
        response = self.http.get("/_sim/sent", params=params)
        response.raise_for_status()
        return response.json()

    def messages(self, chat_id: int, *, since: int = 0) -> list[dict[str, Any]]:
        """Only the messages and photos the bot sent to a chat."""
        return [
            e for e in self.sent(chat_id, since=since) if e["method"] in {"sendMessage", "sendPhoto", "sendDocument"}
        ]

    def file_bytes(self, file_id: str) -> bytes:
        """The bytes of a file on the server (e.g. the photo in a sendPhoto event)."""
        response = self.http.get(f"/_sim/file/{file_id}")
        response.raise_for_status()
        return response.content

    def status(self) -> dict[str, Any]:
        """Queue state: pending and unconfirmed updates, calls per method."""
        response = self.http.get("/_sim/status")
        response.raise_for_status()
        return response.json()

    def wait_for(
        self,
        chat_id: int | None,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 15.0,
        *,
        since: int = 0,
    ) -> dict[str, Any]:
        """The first event after `since` that satisfies `predicate`, polling until `timeout` (then TimeoutError)."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.sent(chat_id, since=since):
                if predicate(event):
                    return event
            if time.monotonic() > deadline:
                seen = [(e["method"], e.get("text") or e.get("caption") or e.get("action")) for e in self.sent(chat_id)]
                raise TimeoutError(f"nothing matching within {timeout} s in chat {chat_id}; the bot did: {seen}")
            time.sleep(0.05)

    def wait_consumed(self, timeout: float = 15.0) -> None:
        """Wait until the bot has fetched every queued update and confirmed it with a later poll."""
        deadline = time.monotonic() + timeout
        while self.status()["unconfirmed_updates"]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bot did not consume its updates within {timeout} s: {self.status()}")
            time.sleep(0.05)

    def last_seq(self) -> int:
        """The sequence number of the latest recorded event (pass as `since` to look only at what follows)."""
        events = self.sent()
        return events[-1]["seq"] if events else 0


def buttons(event: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The (text, callback_data) of each inline button in a recorded message."""
    markup = event.get("reply_markup") or {}
    return [(b["text"], b.get("callback_data")) for row in markup.get("inline_keyboard", []) for b in row]


# --- `skintriage local-bot-api` ---------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `skintriage local-bot-api`."""
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8081, help="port (default 8081; 0 picks a free one)")
    parser.add_argument("--token", default=None, help="bot token to accept (default: TELEGRAM_BOT_TOKEN)")


def main(args: argparse.Namespace) -> int:
    """Serve the local Bot API until interrupted and print the URLs to configure."""
    from skintriage.logconfig import configure_logging
    from skintriage.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, json_lines=settings.log_json)
    token = args.token or settings.telegram_bot_token.get_secret_value()
    api = LocalBotAPI(token, host=args.host, port=args.port)

    async def serve() -> None:
        await api.start_async()
        print(f"TELEGRAM_API_BASE_URL={api.api_base_url}", flush=True)
        print(f"TELEGRAM_FILE_BASE_URL={api.file_base_url}", flush=True)
        print(f"simulated patient: LocalBotAPIClient({api.base_url!r})", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await api.stop_async()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0
