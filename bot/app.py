"""The python-telegram-bot Application, built from Settings.

Updates of different chats run concurrently (one patient's slow download or a dead broker never
holds up another patient), while each chat's updates run one at a time in order, so a patient's
repeated or rapid photos are deduplicated and rate-limited reliably.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from telegram import BotCommand, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, TelegramError
from telegram.ext import Application, ApplicationBuilder, BaseUpdateProcessor, ExtBot
from telegram.request import HTTPXRequest

from bot import booking, handlers, intake, reminders, spots
from bot.delivery import make_request
from bot.i18n import LANGUAGES, load_texts
from skintriage.db import session_factory
from skintriage.settings import Settings, get_settings
from skintriage.storage import ImageStore, make_store

log = logging.getLogger(__name__)


class PerChatUpdateProcessor(BaseUpdateProcessor):
    """Concurrent across chats, sequential within a chat; a busy chat holds one of the shared slots, not more.

    python-telegram-bot takes one of `max_concurrent_updates` slots for each update before calling
    `do_process_update`. Waiting there for the chat's previous update (a lock) would let one chat with a
    slow download and a few more messages fill every slot and hold up every other patient. Instead the
    update that finds its chat busy joins the chat's backlog and gives its slot back at once; the update
    that holds the chat runs the backlog in order before it lets go.
    """

    def __init__(self, max_concurrent_updates: int = 32) -> None:
        super().__init__(max_concurrent_updates)
        self._backlogs: dict[int, collections.deque[Awaitable[Any]]] = {}

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        """Run the update now if its chat is idle, else leave it to the chat's running update."""
        chat = update.effective_chat if isinstance(update, Update) else None
        if chat is None:
            await coroutine
            return
        backlog = self._backlogs.get(chat.id)
        if backlog is not None:
            backlog.append(coroutine)
            return
        backlog = self._backlogs[chat.id] = collections.deque([coroutine])
        try:
            while backlog:
                with contextlib.suppress(Exception):
                    # Application.process_update has already handed the error to the error handler.
                    await backlog[0]
                backlog.popleft()
        finally:
            del self._backlogs[chat.id]
            for pending in backlog:  # only when cancelled (shutdown): never started, so close them
                if inspect.iscoroutine(pending):
                    pending.close()

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to tear down."""


class TolerantBot(ExtBot):
    """An ExtBot whose polling survives an update it cannot parse.

    python-telegram-bot parses a getUpdates batch as a whole: one malformed update (a message without
    a chat, say) makes every poll fail without advancing the offset, so the bot would stall for every
    patient and write the raw update, personal data included, to the log on each retry. Here such an
    update is replaced by an empty Update with the same id: no handler matches it, the offset moves on.
    """

    async def _post(self, endpoint: str, data: Any = None, *args: Any, **kwargs: Any) -> Any:
        result = await super()._post(endpoint, data, *args, **kwargs)
        if endpoint == "getUpdates" and isinstance(result, list):
            result = [entry for entry in map(self._parseable, result) if entry is not None]
        return result

    def _parseable(self, entry: Any) -> Any:
        try:
            Update.de_json(entry, self)
        except Exception as exc:  # noqa: BLE001 - any parse failure: skip the update, keep polling
            update_id = entry.get("update_id") if isinstance(entry, dict) else None
            log.warning("skipping update %s that cannot be parsed (%s)", update_id, type(exc).__name__)
            # Without a usable id there is nothing to confirm: drop it (Telegram always sends one).
            return {"update_id": update_id} if isinstance(update_id, int) else None
        return entry


class WebhookDataFilter(logging.Filter):
    """Keeps the patient's data out of python-telegram-bot's webhook log.

    Its webhook server logs an update it cannot parse at CRITICAL with the raw update (names, chat ids,
    texts) and the traceback; polling goes through TolerantBot instead. This keeps the fact, drops the data.
    """

    LOGGER = "telegram.ext.Updater"  # the webhook handler's logger
    MESSAGE = "Something went wrong processing the data received from Telegram"

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith(self.MESSAGE):
            record.msg = "an update from Telegram could not be parsed and was not handled (its content is not logged)"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def _default_enqueue() -> Callable[[int], bool]:
    from skintriage.queueing import enqueue_triage

    return enqueue_triage


async def _post_init(application: Application) -> None:
    """At start: publish the command menu, then answer photos an earlier run left under way."""
    await _set_commands(application)
    await recover_interrupted(application)


async def recover_interrupted(application: Application) -> None:
    """Tell each patient whose photo an earlier run stopped handling (killed mid-download) to send it again.

    A photo whose case was committed needs nothing: the reply queue answers it. Never stops the bot from starting;
    a record whose message could not be sent (network) stays for the next start.
    """
    services = application.bot_data["services"]
    try:
        pending = await asyncio.to_thread(intake.interrupted, sessions=services.sessions)
    except Exception as exc:  # noqa: BLE001 - a database hiccup must not keep the bot from starting
        log.warning("could not read interrupted photos (%s); the next start tries again", type(exc).__name__)
        return
    for item in pending:
        if not item.saved:
            try:
                text = services.texts.get(item.language, "intake.interrupted")
                await application.bot.send_message(item.chat_id, text, parse_mode=ParseMode.HTML)
            except (Forbidden, BadRequest):
                pass  # the chat is gone: nobody left to tell
            except TelegramError as exc:
                log.warning("could not tell a patient about an interrupted photo (%s); next start", type(exc).__name__)
                continue
        await asyncio.to_thread(
            intake.settle, sessions=services.sessions, chat_id=item.chat_id, message_id=item.message_id
        )
    if pending:
        log.info(
            "answered %d photos an earlier run left under way (%d had been saved)",
            len(pending),
            sum(i.saved for i in pending),
        )


async def _set_commands(application: Application) -> None:
    """Publish the command menu in every language (Telegram shows the one matching the app's language)."""
    texts = application.bot_data["services"].texts
    for lang in LANGUAGES:
        commands = [BotCommand(name, texts.get(lang, f"command.{name}")) for name in handlers.COMMANDS]
        await application.bot.set_my_commands(commands, language_code=None if lang == "en" else lang)


def build_application(
    settings: Settings | None = None,
    *,
    store: ImageStore | None = None,
    enqueue: Callable[[int], bool] | None = None,
) -> Application:
    """The bot application with its handlers, error handler and services, ready for run_polling()."""
    settings = settings or get_settings()
    services = handlers.Services(
        settings=settings,
        sessions=session_factory(settings.resolved_database_url),
        store=store or make_store(settings),
        texts=load_texts(settings.guidance_file),
        enqueue=enqueue or _default_enqueue(),
    )
    application = (
        ApplicationBuilder()
        .bot(
            TolerantBot(
                settings.telegram_bot_token.get_secret_value(),
                base_url=settings.telegram_api_base_url,
                base_file_url=settings.telegram_file_base_url,
                request=make_request(pool_size=settings.bot_api_connections),
                # PTB's own default for polling: one connection; the long-poll time is added per call.
                get_updates_request=HTTPXRequest(connection_pool_size=1),
            )
        )
        .concurrent_updates(PerChatUpdateProcessor(settings.bot_concurrent_chats))
        .post_init(_post_init)
        .build()
    )
    application.bot_data["services"] = services
    booking.register(application)  # before handlers' catch-all for buttons
    reminders.register(application)  # before handlers' catch-alls for commands and buttons
    spots.register(application)
    handlers.register(application)
    return application
