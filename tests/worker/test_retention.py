"""The daily retention job, on SQLite and PostgreSQL: it also forgets handled Telegram messages after a week."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from skintriage import cases
from skintriage.db import session_factory
from skintriage.models import ProcessedUpdate, utcnow
from skintriage.settings import get_settings
from skintriage.storage import LocalImageStore
from worker import retention


def test_retention_job_forgets_handled_messages_older_than_a_week(db_url, settings_env, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", db_url)
    get_settings.cache_clear()
    with session_factory(db_url)() as session:
        assert cases.mark_update_processed(session=session, chat_id=6001, message_id=1)
        assert cases.mark_update_processed(session=session, chat_id=6001, message_id=2)
        session.execute(
            update(ProcessedUpdate).where(ProcessedUpdate.message_id == 1).values(at=utcnow() - timedelta(days=8))
        )
        session.commit()

    retention.purge_once(settings=get_settings(), store=LocalImageStore(settings_env / "images"))

    with session_factory(db_url)() as session:
        assert not cases.update_seen(session=session, chat_id=6001, message_id=1)
        assert cases.update_seen(session=session, chat_id=6001, message_id=2)
