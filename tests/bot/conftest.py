"""Fixtures for the bot's tests: the local Bot API server, a simulated patient and the real bot polling it.

Recipe (copy it for worker/reliability tests):

    def test_x(start_bot):
        h = start_bot(RATE_LIMIT_PHOTOS=2)          # env overrides; DATABASE_URL defaults to a migrated SQLite
        h.consent(501)                              # /start + the consent button, as the patient would
        update_id = h.patient.send_photo(501, lesion_photo())
        ack = h.wait_text(501, h.expect("en", "intake.ack", case_id=1))
        ...                                         # h.patient.sent(501), h.session(), h.services.store
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.answers import visible
from bot.background import BotThread
from bot.handlers import Services
from bot.i18n import Texts, language_for
from devtools.local_api import LocalBotAPI, LocalBotAPIClient
from skintriage.models import Case, User
from skintriage.settings import Settings, get_settings


@dataclass
class Harness:
    """A running bot, its server, its services and helpers to script a patient."""

    api: LocalBotAPI
    patient: LocalBotAPIClient
    settings: Settings
    services: Services
    runner: BotThread

    @property
    def texts(self) -> Texts:
        return self.services.texts

    def expect(self, lang: str, key: str, **values: Any) -> str:
        """The exact text a patient sees for a catalogue key."""
        return visible(self.texts.get(lang, key, **values))

    def wait_text(self, chat_id: int, text: str, *, since: int = 0, timeout: float = 15.0) -> dict[str, Any]:
        """Wait for a message or caption equal to `text`."""
        return self.patient.wait_for(
            chat_id, lambda e: text in (e.get("text"), e.get("caption")), timeout=timeout, since=since
        )

    def wait_startswith(self, chat_id: int, prefix: str, *, since: int = 0, timeout: float = 15.0) -> dict[str, Any]:
        """Wait for a message or caption that starts with `prefix`."""
        return self.patient.wait_for(
            chat_id,
            lambda e: (e.get("text") or e.get("caption") or "").startswith(prefix),
            timeout=timeout,
            since=since,
        )

    def consent(self, user_id: int, language_code: str = "en") -> None:
        """/start and press the consent button, as the patient would."""
        since = self.patient.last_seq()
        self.patient.send_command(user_id, "/start", language_code=language_code)
        intro = self.patient.wait_for(user_id, lambda e: bool(e.get("reply_markup")), since=since)
        self.patient.press_button(user_id, intro["message_id"], "consent:yes", language_code=language_code)
        lang = language_for(language_code)
        thanks = "\n\n".join([self.expect(lang, "consent.thanks"), self.expect(lang, "tips.photo")])
        self.wait_text(user_id, thanks, since=since)

    def barrier(self, chat_id: int) -> dict[str, Any]:
        """Send a sticker and wait for its answer: the chat's earlier updates are then fully handled
        (one chat's updates run in order). Returns the answer event."""
        since = self.patient.last_seq()
        self.patient.send_sticker(chat_id)
        return self.patient.wait_for(
            chat_id, lambda e: e.get("text") == self.expect("en", "other.sticker"), since=since
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A database session on the bot's database."""
        session = self.services.sessions()
        try:
            yield session
        finally:
            session.close()

    def cases(self, telegram_user_id: int) -> list[Case]:
        """The patient's cases, oldest first."""
        with self.session() as session:
            return list(
                session.scalars(
                    select(Case).join(User).where(User.telegram_user_id == telegram_user_id).order_by(Case.id)
                )
            )

    def user(self, telegram_user_id: int) -> User | None:
        """The patient's row."""
        with self.session() as session:
            return session.scalar(select(User).where(User.telegram_user_id == telegram_user_id))


@pytest.fixture
def start_bot(
    request: pytest.FixtureRequest,
    settings_env,
    local_api: LocalBotAPI,
    patient: LocalBotAPIClient,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., Harness]]:
    """Start the real bot against the local server: start_bot(database_url=None, **ENV_OVERRIDES) -> Harness."""
    from bot.app import build_application

    runners: list[BotThread] = []

    def start(*, database_url: str | None = None, **env: Any) -> Harness:
        monkeypatch.setenv("DATABASE_URL", database_url or request.getfixturevalue("sqlite_url"))
        monkeypatch.setenv("TELEGRAM_BOT_TOKEN", local_api.token)
        monkeypatch.setenv("TELEGRAM_API_BASE_URL", local_api.api_base_url)
        monkeypatch.setenv("TELEGRAM_FILE_BASE_URL", local_api.file_base_url)
        for key, value in env.items():
            monkeypatch.setenv(key, str(value))
        get_settings.cache_clear()
        settings = get_settings()
        application = build_application(settings)
        runner = BotThread(application).start()
        runners.append(runner)
        services = application.bot_data["services"]
        return Harness(local_api, patient, settings, services, runner)

    yield start
    for runner in runners:
        runner.stop()
