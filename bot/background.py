"""Run the bot application on a background thread with its own event loop (tests and the demo).

`skintriage bot` uses Application.run_polling in the main thread instead; this is for processes that
also do other things (a simulated patient, a Celery worker) and need to stop the bot cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from telegram.ext import Application

log = logging.getLogger(__name__)


class BotThread:
    """Polls with the real Application on a daemon thread; `start()` returns once polling runs."""

    def __init__(self, application: Application, *, poll_timeout: int = 1) -> None:
        self.application = application
        self.poll_timeout = poll_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    async def _main(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        async with self.application:
            if self.application.post_init:
                await self.application.post_init(self.application)
            await self.application.start()
            await self.application.updater.start_polling(timeout=self.poll_timeout, poll_interval=0.0)
            ready.set()
            await self._stop.wait()
            await self.application.updater.stop()
            await self.application.stop()

    def start(self, timeout: float = 30.0) -> BotThread:
        """Initialise the application, start polling, and return when the first poll is under way."""
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(self._main(ready))
            except BaseException as exc:  # noqa: BLE001 - handed to the thread that started us
                self._error = exc
                ready.set()
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="bot-polling", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError(f"the bot did not start polling within {timeout} s")
        if self._error is not None:
            raise RuntimeError(f"the bot failed to start: {self._error!r}") from self._error
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop polling, shut the application down and wait for the thread."""
        if self._loop is None or self._thread is None or self._stop is None:
            return
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("bot thread did not stop within %.0f s", timeout)
        self._thread = None

    def __enter__(self) -> BotThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
