"""Migrations apply, revert and re-apply on SQLite and PostgreSQL, and match the models."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from skintriage import migrate
from skintriage.models import Base

TABLES = {
    "users",
    "cases",
    "reviews",
    "operators",
    "audit_events",
    "outbox_messages",
    "processed_updates",
    "service_leases",
}


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


@pytest.mark.slow
def test_upgrade_downgrade_upgrade(db_url: str) -> None:
    assert _tables(db_url) >= TABLES
    migrate.downgrade(db_url, "base")
    assert _tables(db_url) == set()
    assert migrate.current(db_url) is None
    migrate.upgrade(db_url)
    assert _tables(db_url) >= TABLES
    assert migrate.current(db_url) is not None


def test_models_and_migrations_do_not_drift(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"models and migrations differ; generate a migration: {diff}"


@pytest.mark.slow
def test_0006_gives_handled_updates_their_chat_and_message(db_url: str) -> None:
    """Rows written before 0006 (keyed by update id) learn their chat and message from the case they started."""
    from sqlalchemy import text

    migrate.downgrade(db_url, "0001")
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (id, telegram_user_id, chat_id, language, created_at) "
                    "VALUES (1, 4242, 4343, 'en', CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO cases (id, user_id, status, attempts, language, source_update_id, source_message_id, "
                    "image_sha256, received_at, quality_flags, model_versions, timings_ms, demo_model) "
                    "VALUES (1, 1, 'done', 1, 'en', 900, 17, 'ab', CURRENT_TIMESTAMP, '[]', '{}', '{}', false)"
                )
            )
            conn.execute(text("INSERT INTO processed_updates (update_id, at) VALUES (900, CURRENT_TIMESTAMP)"))
            conn.execute(text("INSERT INTO processed_updates (update_id, at) VALUES (901, CURRENT_TIMESTAMP)"))
        migrate.upgrade(db_url)
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT update_id, chat_id, message_id FROM processed_updates ORDER BY update_id")
            ).all()
        assert [tuple(r) for r in rows] == [(900, 4343, 17), (901, None, None)]
        migrate.downgrade(db_url, "0001")
        migrate.upgrade(db_url)
    finally:
        engine.dispose()


@pytest.mark.slow
def test_0008_adds_patient_answers_and_told_tier_and_reverts_keeping_the_cases(db_url: str) -> None:
    """Cases written before 0008 have no answers; the answers round-trip as JSON; going back to 0009 keeps cases."""
    from sqlalchemy import text

    migrate.downgrade(db_url, "0009")
    engine = create_engine(db_url)
    try:
        assert "patient_answers" not in {c["name"] for c in inspect(engine).get_columns("cases")}
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (id, telegram_user_id, chat_id, language, created_at) "
                    "VALUES (1, 4242, 4343, 'en', CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO cases (id, user_id, status, attempts, language, image_sha256, received_at, "
                    "quality_flags, model_versions, timings_ms, demo_model) "
                    "VALUES (1, 1, 'done', 1, 'en', 'ab', CURRENT_TIMESTAMP, '[]', '{}', '{}', false)"
                )
            )
        migrate.upgrade(db_url)
        from sqlalchemy.orm import Session

        from skintriage.models import Case

        with Session(engine) as session:
            case = session.get(Case, 1)
            assert case.patient_answers is None and case.told_tier is None
            case.patient_answers = {"site": "palm_sole", "change": "skip"}
            case.told_tier = "UNCERTAIN"
            session.commit()
        with Session(engine) as session:
            case = session.get(Case, 1)
            assert case.patient_answers == {"site": "palm_sole", "change": "skip"} and case.told_tier == "UNCERTAIN"
        migrate.downgrade(db_url, "0009")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM cases")).scalar() == 1
        migrate.upgrade(db_url)
    finally:
        engine.dispose()


def test_0009_keeps_what_was_sent_before_messages_were_composed(db_url: str) -> None:
    """Messages sent before 0009 went out as the operator's bare words: that is their sent_text."""
    from sqlalchemy import text

    migrate.downgrade(db_url, "0011")
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            for id_, sent, error in ((1, True, None), (2, False, None), (3, True, "Forbidden: blocked")):
                conn.execute(
                    text(
                        "INSERT INTO outbox_messages (id, chat_id, kind, text, created_at, sent_at, attempts, error) "
                        "VALUES (:id, 5, 'followup', :words, CURRENT_TIMESTAMP, "
                        + ("CURRENT_TIMESTAMP" if sent else "NULL")
                        + ", 1, :error)"
                    ),
                    {"id": id_, "words": f"words {id_}", "error": error},
                )
        migrate.upgrade(db_url)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, sent_text, review_id FROM outbox_messages ORDER BY id")).all()
            booking = conn.execute(text("SELECT COUNT(*) FROM cases WHERE booking_answer IS NOT NULL")).scalar()
        assert [tuple(r) for r in rows] == [(1, "words 1", None), (2, None, None), (3, None, None)]
        assert booking == 0
        migrate.downgrade(db_url, "0011")
        migrate.upgrade(db_url)
    finally:
        engine.dispose()


def test_0012_leaves_earlier_consent_without_a_version_and_reverts_keeping_the_patients(db_url: str) -> None:
    """Patients who agreed before 0012 agreed to an older text (no version: asked again); held photos round-trip."""
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    from skintriage.models import User

    migrate.downgrade(db_url, "0010")
    engine = create_engine(db_url)
    try:
        assert "consent_version" not in {c["name"] for c in inspect(engine).get_columns("users")}
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (id, telegram_user_id, chat_id, language, consent_at, created_at) "
                    "VALUES (1, 4242, 4343, 'ko', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO cases (id, user_id, status, attempts, language, image_sha256, received_at, "
                    "quality_flags, model_versions, timings_ms, demo_model) "
                    "VALUES (1, 1, 'done', 1, 'ko', 'ab', CURRENT_TIMESTAMP, '[]', '{}', '{}', false)"
                )
            )
        migrate.upgrade(db_url, "0012")
        assert migrate.current(db_url) == "0012"
        held = [{"file_id": "AgAD", "file_unique_id": "u1", "file_size": 123, "message_id": 7, "update_id": 9,
                 "media_group_id": None}]  # fmt: skip
        with Session(engine) as session:
            user = session.get(User, 1)
            assert user.consent_at is not None and user.consent_version is None and user.pending_photos is None
            user.consent_version, user.pending_photos = "0123456789ab", held
            session.commit()
        with Session(engine) as session:
            user = session.get(User, 1)
            assert user.consent_version == "0123456789ab" and user.pending_photos == held
        migrate.downgrade(db_url, "0010")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM users WHERE consent_at IS NOT NULL")).scalar() == 1
            # Their cases survive both ways (a rebuilt users table on SQLite would cascade-delete them).
            assert conn.execute(text("SELECT count(*) FROM cases")).scalar() == 1
        assert "pending_photos" not in {c["name"] for c in inspect(engine).get_columns("users")}
        migrate.upgrade(db_url)
    finally:
        engine.dispose()


@pytest.mark.slow
def test_0014_records_photos_under_way_and_reverts(db_url: str) -> None:
    """pending_intakes exists from 0014 with one row per (chat, message); going back to 0012 drops only it."""
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    migrate.downgrade(db_url, "0012")
    engine = create_engine(db_url)
    try:
        assert "pending_intakes" not in inspect(engine).get_table_names()
        migrate.upgrade(db_url)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (id, telegram_user_id, chat_id, language, created_at) "
                    "VALUES (1, 4242, 4343, 'en', CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO pending_intakes (user_id, chat_id, message_id, received_at) "
                    "VALUES (1, 4343, 7, CURRENT_TIMESTAMP)"
                )
            )
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO pending_intakes (user_id, chat_id, message_id, received_at) "
                    "VALUES (1, 4343, 7, CURRENT_TIMESTAMP)"
                )
            )
        migrate.downgrade(db_url, "0012")
        assert "pending_intakes" not in inspect(engine).get_table_names()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM users")).scalar() == 1
        migrate.upgrade(db_url)
    finally:
        engine.dispose()


def test_0015_links_a_case_to_the_earlier_case_of_its_spot_and_reverts_keeping_the_cases(db_url: str) -> None:
    """previous_case_id exists from 0015 (NULL for earlier cases); deleting the earlier case unlinks, never deletes."""
    from sqlalchemy import text

    migrate.downgrade(db_url, "0014")
    engine = create_engine(db_url)
    insert = (
        "INSERT INTO cases (id, user_id, status, attempts, language, image_sha256, received_at, quality_flags, "
        "model_versions, timings_ms, demo_model{extra}) "
        "VALUES ({id}, 1, 'done', 1, 'en', 'ab', CURRENT_TIMESTAMP, '[]', '{{}}', '{{}}', false{value})"
    )
    try:
        assert "previous_case_id" not in {c["name"] for c in inspect(engine).get_columns("cases")}
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (id, telegram_user_id, chat_id, language, created_at) "
                    "VALUES (1, 4242, 4343, 'en', CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(text(insert.format(id=1, extra="", value="")))
        migrate.upgrade(db_url, "0015")
        assert migrate.current(db_url) == "0015"
        with engine.begin() as conn:
            assert conn.execute(text("SELECT previous_case_id FROM cases WHERE id = 1")).scalar() is None
            conn.execute(text(insert.format(id=2, extra=", previous_case_id", value=", 1")))
            conn.execute(text(insert.format(id=3, extra=", previous_case_id", value=", 2")))
        with engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                conn.execute(text("PRAGMA foreign_keys = ON"))
            conn.execute(text("DELETE FROM cases WHERE id = 2"))
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, previous_case_id FROM cases ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [(1, None), (3, None)]  # ON DELETE SET NULL
        migrate.downgrade(db_url, "0014")
        assert "previous_case_id" not in {c["name"] for c in inspect(engine).get_columns("cases")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM cases")).scalar() == 2
        migrate.upgrade(db_url)
    finally:
        engine.dispose()


def test_0016_counts_infrastructure_failures_per_case_from_zero_and_reverts(db_url: str) -> None:
    """cases.infra_failures exists from 0016, 0 for cases received before it; downgrading drops only the column."""
    from sqlalchemy import text

    migrate.downgrade(db_url, "0017")
    engine = create_engine(db_url)
    try:
        assert "infra_failures" not in {c["name"] for c in inspect(engine).get_columns("cases")}
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (id, telegram_user_id, chat_id, language, created_at) "
                    "VALUES (1, 4242, 4343, 'en', CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO cases (id, user_id, status, attempts, language, image_sha256, received_at, "
                    "quality_flags, model_versions, timings_ms, demo_model) "
                    "VALUES (1, 1, 'queued', 1, 'en', 'ab', CURRENT_TIMESTAMP, '[]', '{}', '{}', false)"
                )
            )
        migrate.upgrade(db_url)
        assert migrate.current(db_url) == "0016"
        with engine.connect() as conn:
            assert conn.execute(text("SELECT infra_failures FROM cases WHERE id = 1")).scalar() == 0
        migrate.downgrade(db_url, "0017")
        assert "infra_failures" not in {c["name"] for c in inspect(engine).get_columns("cases")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT status FROM cases WHERE id = 1")).scalar() == "queued"
        migrate.upgrade(db_url)
    finally:
        engine.dispose()
