"""The python-telegram-bot Application, built from Settings.

Updates of different chats run concurrently (one patient's slow download or a dead broker never
holds up another patient), while each chat's updates run one at a time in order, so a patient's
repeated or rapid photos are deduplicated and rate-limited reliably.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from telegram import BotCommand, Update
from telegram.ext import Application, ApplicationBuilder, BaseUpdateProcessor

from bot import handlers
from bot.delivery import make_request
from bot.i18n import LANGUAGES, load_texts
from skintriage.db import session_factory
from skintriage.settings import Settings, get_settings
from skintriage.storage import ImageStore, make_store

log = logging.getLogger(__name__)


class PerChatUpdateProcessor(BaseUpdateProcessor):
    """Concurrent across chats, sequential within a chat."""

    def __init__(self, max_concurrent_updates: int = 32) -> None:
        super().__init__(max_concurrent_updates)
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        """Run the update's handlers while holding its chat's lock."""
        chat = update.effective_chat if isinstance(update, Update) else None
        if chat is None:
            await coroutine
            return
        lock = self._locks.get(chat.id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[chat.id] = lock
        async with lock:
            await coroutine

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to tear down."""


def _default_enqueue() -> Callable[[int], bool]:
    from worker.enqueue import enqueue_triage

    return enqueue_triage


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
        .token(settings.telegram_bot_token.get_secret_value())
        .base_url(settings.telegram_api_base_url)
        .base_file_url(settings.telegram_file_base_url)
        .request(make_request())
        .concurrent_updates(PerChatUpdateProcessor())
        .post_init(_set_commands)
        .build()
    )
    application.bot_data["services"] = services
    handlers.register(application)
    return application
