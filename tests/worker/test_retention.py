"""The daily retention job, on SQLite and PostgreSQL: it also forgets handled Telegram messages after a week."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from skintriage import cases
from skintriage.db import session_factory
from skintriage.models import ProcessedUpdate, utcnow
from skintriage.settings import get_settings
from skintriage.storage import LocalImageStore
from tests.factories import lesion_photo
from tests.skintriage.test_storage import s3_endpoint  # noqa: F401 - the moto S3 server fixture
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


@pytest.fixture(params=["local", "s3"])
def any_store(request: pytest.FixtureRequest, tmp_path):
    if request.param == "local":
        return LocalImageStore(tmp_path / "images")
    from tests.skintriage.test_storage import s3_store

    return s3_store(request.getfixturevalue("s3_endpoint"), f"bucket-{uuid.uuid4().hex[:12]}")


def test_orphaned_images_are_removed_after_the_grace_period_and_named_ones_never(
    sqlite_url, settings_env, monkeypatch, any_store
):
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    settings = get_settings()
    with session_factory(sqlite_url)() as session:
        user = cases.get_or_create_user(session=session, telegram_user_id=7001, chat_id=7001, language="en")
        gone = cases.get_or_create_user(session=session, telegram_user_id=7002, chat_id=7002, language="en")
        session.flush()
        kept = cases.create_case(session=session, user=user, image=any_store.put(lesion_photo(64, 48, seed=1)))
        deleted = cases.create_case(session=session, user=gone, image=any_store.put(lesion_photo(64, 48, seed=2)))
        session.commit()
        deleted_mask = lesion_photo(64, 48, seed=3, fmt="PNG")
        deleted.mask_key = any_store.put(deleted_mask, kind="mask", ext="png").key
        session.commit()
        cases.delete_user_data(session=session, store=any_store, user=gone)
        session.commit()
        kept_key = kept.image_key
    # A worker still analysing the deleted patient's photo writes its mask after /delete; a photo whose
    # case was never committed (the bot died between storing and committing) stays behind too.
    late_mask = any_store.put(deleted_mask, kind="mask", ext="png").key
    uncommitted = any_store.put(lesion_photo(64, 48, seed=4)).key

    # Young orphans may still belong to a photo or a job in flight: kept.
    assert retention.remove_orphans(settings=settings, store=any_store) == 0
    assert any_store.exists(late_mask) and any_store.exists(uncommitted)

    later = datetime.now(UTC) + timedelta(hours=settings.orphan_grace_hours + 1)
    assert retention.remove_orphans(settings=settings, store=any_store, now=later) == 2
    assert not any_store.exists(late_mask) and not any_store.exists(uncommitted)
    assert any_store.exists(kept_key), "an image a case names is never an orphan"


def test_half_written_files_are_removed_once_stale(sqlite_url, settings_env, monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    store = LocalImageStore(tmp_path / "images")
    folder = tmp_path / "images" / "photo" / "ab"
    folder.mkdir(parents=True)
    (folder / ".tmp-killed-mid-write").write_bytes(b"half a photo")
    assert retention.remove_orphans(settings=get_settings(), store=store) == 0
    later = datetime.now(UTC) + timedelta(hours=get_settings().orphan_grace_hours + 1)
    assert retention.remove_orphans(settings=get_settings(), store=store, now=later) == 1
    assert not (folder / ".tmp-killed-mid-write").exists()


def test_putting_the_same_bytes_again_makes_an_orphan_young_again(tmp_path):
    store = LocalImageStore(tmp_path / "images")
    key = store.put(b"same bytes").key
    old = datetime.now(UTC).timestamp() - 10 * 3600
    os.utime(tmp_path / "images" / key, (old, old))
    cutoff = datetime.now(UTC) - timedelta(hours=6)
    assert list(store.stored_before(cutoff)) == [key]
    store.put(b"same bytes")  # a patient sends the same photo again: its new case will name this key
    assert list(store.stored_before(cutoff)) == []
    assert not store.written_before(key, cutoff)
