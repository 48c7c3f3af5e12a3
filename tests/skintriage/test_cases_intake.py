"""Intake, on SQLite and PostgreSQL: Telegram updates seen once, and the same photo sent again by the same patient."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from skintriage import cases
from skintriage.db import session_factory
from skintriage.models import ProcessedUpdate, utcnow
from skintriage.storage import StoredImage


def test_update_seen_after_mark_update_processed(db_url: str) -> None:
    with session_factory(db_url).begin() as session:
        assert not cases.update_seen(session=session, chat_id=5001, message_id=77)
        assert cases.mark_update_processed(session=session, chat_id=5001, message_id=77, update_id=900)
        assert cases.update_seen(session=session, chat_id=5001, message_id=77)
        assert not cases.update_seen(session=session, chat_id=5001, message_id=78)
        assert not cases.update_seen(session=session, chat_id=5002, message_id=77)  # message ids are per chat


def test_restarted_update_ids_do_not_hide_a_new_message(db_url: str) -> None:
    """Telegram may start update ids again: a new message under an old update id is still new."""
    with session_factory(db_url).begin() as session:
        assert cases.mark_update_processed(session=session, chat_id=5001, message_id=10, update_id=900)
        assert not cases.update_seen(session=session, chat_id=5001, message_id=11)
        assert cases.mark_update_processed(session=session, chat_id=5001, message_id=11, update_id=900)
        assert not cases.mark_update_processed(session=session, chat_id=5001, message_id=11, update_id=901)


def test_handled_messages_older_than_a_week_are_pruned(db_url: str) -> None:
    with session_factory(db_url).begin() as session:
        assert cases.mark_update_processed(session=session, chat_id=5001, message_id=1)
        assert cases.mark_update_processed(session=session, chat_id=5001, message_id=2)
        session.execute(
            update(ProcessedUpdate).where(ProcessedUpdate.message_id == 1).values(at=utcnow() - timedelta(days=8))
        )
        assert cases.prune_processed_updates(session=session) == 1
        assert not cases.update_seen(session=session, chat_id=5001, message_id=1)
        assert cases.update_seen(session=session, chat_id=5001, message_id=2)


def test_find_recent_same_file_is_per_patient_and_within_the_window(db_url: str) -> None:
    image = StoredImage(key="photo/ab/" + "ab" * 32 + ".jpg", sha256="ab" * 32, size=10)
    with session_factory(db_url).begin() as session:
        alice = cases.get_or_create_user(session=session, telegram_user_id=1, chat_id=1, language="en")
        bob = cases.get_or_create_user(session=session, telegram_user_id=2, chat_id=2, language="en")
        case = cases.create_case(session=session, user=alice, image=image, file_unique_id="AQADxyz")
        found = cases.find_recent_same_file(session=session, user=alice, file_unique_id="AQADxyz", window_s=60)
        assert found is not None and found.id == case.id
        assert cases.find_recent_same_file(session=session, user=bob, file_unique_id="AQADxyz", window_s=60) is None
        later = utcnow() + timedelta(seconds=120)
        assert (
            cases.find_recent_same_file(session=session, user=alice, file_unique_id="AQADxyz", window_s=60, now=later)
            is None
        )
