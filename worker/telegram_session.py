"""One event loop and one initialised telegram.Bot per worker thread, reused across reply jobs.

Celery tasks are synchronous; python-telegram-bot is async. Creating a loop and a Bot for every
reply would redo getMe and the HTTP connection each time, and sharing one loop between the threads
of a `--pool threads` worker is not allowed, hence one of each per thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from skintriage.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

_local = threading.local()


class TelegramSession:
    """A private event loop with a Bot initialised on it."""

    def __init__(self, settings: Settings) -> None:
        from bot.delivery import make_bot

        self.key = _key(settings)
        self.loop = asyncio.new_event_loop()
        self.bot = make_bot(settings)
        self._initialised = False

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on this session's loop, initialising the Bot (getMe) the first time."""
        if not self._initialised:
            self.loop.run_until_complete(self.bot.initialize())
            self._initialised = True
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        """Shut the Bot's HTTP client down and close the loop."""
        try:
            if self._initialised:
                self.loop.run_until_complete(self.bot.shutdown())
        finally:
            self.loop.close()


def _key(settings: Settings) -> tuple[str, str, str]:
    return (
        settings.telegram_bot_token.get_secret_value(),
        settings.telegram_api_base_url,
        settings.telegram_file_base_url,
    )


def session_for(settings: Settings) -> TelegramSession:
    """This thread's session for the configured token and Bot API server."""
    current: TelegramSession | None = getattr(_local, "session", None)
    if current is not None and current.key != _key(settings):
        current.close()
        current = None
    if current is None:
        current = TelegramSession(settings)
        _local.session = current
    return current


def run_with_bot(settings: Settings, make_coro: Any) -> Any:
    """Run `make_coro(bot)` on this thread's session and return its result."""
    session = session_for(settings)
    return session.run(make_coro(session.bot))
