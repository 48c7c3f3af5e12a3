"""A scripted patient talks to the real bot through the local Bot API server.

Every test asserts on the exact messages the server received and on the database afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import io
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from sqlalchemy import select
from sqlalchemy import text as sql

from devtools.local_api import buttons
from skintriage import cases
from skintriage.models import CaseStatus, PendingIntake
from tests.factories import assert_no_metadata, lesion_photo, photo_with_gps
from tests.stack import free_port


def eventually(check, timeout: float = 10.0):
    """Poll `check` until it returns something truthy (the bot writes some rows just after it replies)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def heic_photo() -> bytes:
    import pillow_heif

    pillow_heif.register_heif_opener()
    buf = io.BytesIO()
    Image.open(io.BytesIO(lesion_photo(400, 300, seed=9))).save(buf, format="HEIF")
    return buf.getvalue()


def outline(photo: bytes) -> bytes:
    """What the worker sends back: the photo with a green outline."""
    img = Image.open(io.BytesIO(photo)).convert("RGB")
    w, h = img.size
    ImageDraw.Draw(img).ellipse((w * 0.3, h * 0.3, w * 0.7, h * 0.7), outline=(0, 255, 0), width=4)
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def finish_case(h, case_id: int, *, tier: str = "LOW", probs=(0.03, 0.9, 0.07), status=CaseStatus.DONE) -> bytes:
    """Do what the worker does with a result: claim, store the overlay, save."""
    with h.session() as session:
        claim = cases.claim_for_processing(session=session, case_id=case_id, max_attempts=3, stale_after_s=300)
        overlay = outline(h.services.store.get(claim.case.image_key))
        key = h.services.store.put(overlay, kind="overlay", ext="jpg").key
        if status == CaseStatus.DONE:
            result = cases.CaseResult(
                tier=tier, overlay_key=key, prob_mel=probs[0], prob_nv=probs[1], prob_other=probs[2], label="NV"
            )
        else:
            result = cases.CaseResult(tier=tier, overlay_key=key, retake_reason="blurry")
        assert result.status == status
        assert cases.save_result(session=session, case_id=case_id, result=result)
        session.commit()
    return overlay


def send_photo_and_wait_ack(h, user_id: int, photo: bytes, lang: str = "en") -> dict:
    since = h.patient.last_seq()
    h.patient.send_photo(user_id, photo)
    prefix = h.expect(lang, "intake.ack", case_id=0).split("#")[0]
    return h.wait_startswith(user_id, prefix, since=since)


# --- consent and language -------------------------------------------------------------------


def test_start_introduces_the_service_and_asks_for_consent_in_the_telegram_language(start_bot) -> None:
    h = start_bot()
    h.patient.send_command(101, "/start", language_code="ko-KR")
    intro = h.patient.wait_for(101, lambda e: e["method"] == "sendMessage")
    keys = ("start.greeting", "start.does", "start.does_not", "start.limits", "start.clinicians", "start.stored",
            "start.operator", "start.adults", "start.consent_ask")  # fmt: skip
    values = {"days": h.settings.retention_days, "operator": h.settings.service_operator}
    assert intro["text"] == "\n\n".join(h.expect("ko", k, **values) for k in keys)
    assert "30일" in intro["text"]
    assert buttons(intro) == [("동의합니다", "consent:yes"), ("한국어", "lang:ko"), ("English", "lang:en")]
    user = h.user(101)
    assert user.language == "ko" and user.consent_at is None
    # The bot published its command menu in both languages.
    assert set(h.patient.status()["commands"]) == {'{"type": "default"}|', '{"type": "default"}|ko'}


@pytest.mark.slow
def test_photo_before_consent_is_not_analysed_and_the_patient_is_asked_to_resend(start_bot) -> None:
    h = start_bot()
    h.patient.send_photo(102, lesion_photo(seed=1))
    reply = h.wait_startswith(102, h.expect("en", "consent.required"))
    assert buttons(reply)[0] == ("I agree", "consent:yes")
    assert h.cases(102) == []
    assert not list((h.settings.data_dir / "images").rglob("*.jpg"))  # the photo was not kept
    # Consenting records the time once; pressing again says so.
    h.patient.press_button(102, reply["message_id"], "consent:yes")
    h.wait_startswith(102, h.expect("en", "consent.thanks"))
    assert h.user(102).consent_at is not None
    h.patient.press_button(102, reply["message_id"], "consent:yes")
    h.wait_startswith(102, h.expect("en", "consent.already"))


@pytest.mark.slow
def test_language_can_be_switched_and_later_answers_follow_it(start_bot) -> None:
    h = start_bot()
    h.consent(103, "en")
    since = h.patient.last_seq()
    h.patient.send_command(103, "/language")
    choice = h.wait_text(103, h.expect("en", "language.choose"), since=since)
    h.patient.press_button(103, choice["message_id"], "lang:ko")
    h.wait_text(103, h.expect("ko", "language.set"), since=since)
    assert h.user(103).language == "ko"
    h.patient.send_text(103, "안녕하세요")
    h.wait_text(103, h.expect("ko", "other.text"), since=since)
    ack = send_photo_and_wait_ack(h, 103, lesion_photo(seed=3), lang="ko")
    (case,) = h.cases(103)
    assert ack["text"] == h.expect("ko", "intake.ack", case_id=case.id)
    assert case.language == "ko"


# --- photo intake ---------------------------------------------------------------------------


@pytest.mark.slow
def test_photo_after_consent_is_stored_committed_queued_and_acknowledged(start_bot) -> None:
    h = start_bot()
    h.consent(110)
    since = h.patient.last_seq()
    update_id = h.patient.send_photo(110, lesion_photo(1600, 1200, seed=2))
    ack = h.wait_startswith(110, "Received.", since=since)
    (case,) = h.cases(110)
    assert ack["text"] == h.expect("en", "intake.ack", case_id=case.id)
    questions = h.wait_startswith(110, h.expect("en", "questions.intro", case_id=case.id), since=since)
    events = h.patient.sent(110, since=since)
    # A quick download shows no "typing..." (the acknowledgement follows at once): ack, questions.
    assert [e["method"] for e in events] == ["sendMessage", "sendMessage"]
    assert events[1]["seq"] == questions["seq"]
    # Recorded with the acknowledgement, in the transaction after it.
    assert eventually(lambda: h.cases(110)[0].status == CaseStatus.QUEUED)
    assert h.cases(110)[0].queued_at is not None
    assert case.source_update_id == update_id and case.language == "en"
    assert (case.image_width, case.image_height) == (1280, 960)  # Telegram's largest photo size
    assert hashlib.sha256(h.services.store.get(case.image_key)).hexdigest() == case.image_sha256
    assert eventually(lambda: h.cases(110)[0].ack_message_id) == ack["message_id"]
    assert len(list((h.settings.broker_folder / "queue").iterdir())) == 1  # one job on the filesystem broker


@pytest.mark.slow
def test_a_slow_download_shows_typing_and_the_acknowledgement_settles_the_photo_in_one_go(start_bot) -> None:
    h = start_bot()
    h.consent(112)
    since = h.patient.last_seq()
    h.patient.send_photo(112, lesion_photo(seed=5), download_delay_s=3.0)
    ack = h.wait_startswith(112, "Received.", since=since, timeout=30)
    events = h.patient.sent(112, since=since)
    typing = [e for e in events if e["method"] == "sendChatAction"]
    assert len(typing) == 1 and typing[0]["action"] == "typing" and typing[0]["seq"] < ack["seq"]

    def settled() -> bool:
        with h.services.sessions() as session:
            pending = session.scalars(select(PendingIntake).where(PendingIntake.chat_id == 112)).all()
        (case,) = h.cases(112)
        return not pending and case.ack_message_id == ack["message_id"] and case.status == CaseStatus.QUEUED

    assert eventually(settled)


@pytest.mark.slow
def test_image_files_png_and_heic_start_cases_with_their_bytes_unchanged(start_bot) -> None:
    h = start_bot()
    h.consent(111)
    png, heic = lesion_photo(500, 400, seed=4, fmt="PNG"), heic_photo()
    since = h.patient.last_seq()
    h.patient.send_document(111, png, "mole.png", "image/png")
    h.wait_startswith(111, "Received.", since=since)
    since = h.patient.last_seq()
    h.patient.send_document(111, heic, "IMG_0001.HEIC", "application/octet-stream")
    h.wait_startswith(111, "Received.", since=since)
    png_case, heic_case = h.cases(111)
    assert h.services.store.get(png_case.image_key) == png and png_case.image_key.endswith(".png")
    assert h.services.store.get(heic_case.image_key) == heic and heic_case.image_key.endswith(".heic")
    assert (heic_case.image_width, heic_case.image_height) == (400, 300)


@pytest.mark.slow
def test_photo_sent_as_a_file_is_stored_without_exif_or_gps_and_upright(start_bot) -> None:
    h = start_bot()
    h.consent(125)
    since = h.patient.last_seq()
    h.patient.send_document(125, photo_with_gps(400, 300, seed=6), "IMG_2041.JPG", "image/jpeg")
    h.wait_startswith(125, "Received.", since=since)
    (case,) = h.cases(125)
    stored = h.services.store.get(case.image_key)
    assert_no_metadata(stored)
    assert case.image_key.endswith(".jpg") and hashlib.sha256(stored).hexdigest() == case.image_sha256
    assert Image.open(io.BytesIO(stored)).size == (300, 400) == (case.image_width, case.image_height)


@pytest.mark.slow
def test_unsupported_corrupt_tiny_and_oversized_images_get_a_reason_and_no_case(start_bot) -> None:
    h = start_bot(MAX_IMAGE_PIXELS=200_000)
    h.consent(112)
    tiny = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 150, 130)).save(tiny, format="PNG")
    attempts = [
        (b"%PDF-1.7 not an image", "report.pdf", "application/pdf", h.expect("en", "intake.unsupported_file")),
        (b"\xff\xd8garbage" * 50, "mole.jpg", "image/jpeg", "retake.unreadable"),
        (tiny.getvalue(), "mole.png", "image/png", "retake.too_small"),
        (lesion_photo(600, 450, fmt="PNG"), "big.png", "image/png", "retake.too_large"),
    ]
    for data, name, mime, expected in attempts:
        since = h.patient.last_seq()
        h.patient.send_document(112, data, name, mime)
        if expected.startswith("retake."):
            expected = h.expect("en", "intake.unusable", reason=h.texts.get("en", expected))
        h.wait_text(112, expected, since=since)
    assert h.cases(112) == []


@pytest.mark.slow
def test_file_over_the_size_limit_is_refused_without_downloading_it(start_bot) -> None:
    h = start_bot(MAX_FILE_BYTES=50_000)
    h.consent(113)
    big = lesion_photo(600, 450, fmt="PNG")
    since = h.patient.last_seq()
    h.patient.send_document(113, big, "mole.png", "image/png")
    size_mb = f"{len(big) / 1024 / 1024:.2g}"
    h.wait_text(113, h.expect("en", "intake.too_big", size_mb=size_mb, limit_mb="0.048"), since=since)
    assert h.patient.status()["calls"].get("getFile") is None
    assert h.cases(113) == []


@pytest.mark.slow
def test_same_update_delivered_twice_and_same_photo_sent_twice_make_one_case(start_bot) -> None:
    h = start_bot()
    h.consent(114)
    photo = lesion_photo(seed=5)
    since = h.patient.last_seq()
    sent = h.patient.send_message(114, photo_b64=__import__("base64").b64encode(photo).decode())
    h.wait_startswith(114, "Received.", since=since)
    (case,) = h.cases(114)
    h.wait_startswith(114, h.expect("en", "questions.intro", case_id=case.id), since=since)  # sent after the ack

    # Telegram delivers the same update again (e.g. the bot restarted before confirming it): nothing happens.
    since = h.patient.last_seq()
    h.patient.redeliver(sent["update_id"])
    assert h.barrier(114)["seq"] == since + 1  # only the barrier's own answer

    # The same photo again, as a new message: the case is reused, without downloading (same Telegram file).
    downloads = h.patient.status()["calls"]["getFile"]
    h.patient.send_photo(114, photo)
    h.wait_text(114, h.expect("en", "intake.duplicate_open", case_id=case.id), since=since)
    assert h.patient.status()["calls"]["getFile"] == downloads

    # The same bytes under another Telegram file id are found by their SHA-256 after the download.
    message = dict(sent["message"])
    message["photo"] = [{**size, "file_unique_id": size["file_unique_id"] + "x"} for size in message["photo"]]
    message["message_id"] += 100
    since = h.patient.last_seq()
    h.patient.inject_update({"message": message})
    h.wait_text(114, h.expect("en", "intake.duplicate_open", case_id=case.id), since=since)
    assert h.patient.status()["calls"]["getFile"] == downloads + 1

    finish_case(h, case.id)
    since = h.patient.last_seq()
    h.patient.send_photo(114, photo)
    h.wait_text(114, h.expect("en", "intake.duplicate_done", case_id=case.id), since=since)
    assert len(h.cases(114)) == 1


@pytest.mark.slow
def test_a_new_photo_under_a_restarted_update_id_starts_a_new_case(start_bot) -> None:
    """Telegram may number updates from the start again: repeats are known by chat and message, not update id."""
    h = start_bot()
    h.consent(126)
    since = h.patient.last_seq()
    first = h.patient.send_message(126, photo_b64=base64.b64encode(lesion_photo(seed=20)).decode())
    h.wait_startswith(126, "Received.", since=since)
    # A second photo, uploaded through another chat so the server holds its file, arrives in this chat as a
    # new message that carries the first message's update id.
    other = h.patient.send_message(127, photo_b64=base64.b64encode(lesion_photo(seed=21)).decode())
    message = {**first["message"], "message_id": first["message_id"] + 1, "photo": other["message"]["photo"]}
    since = h.patient.last_seq()
    h.patient.inject_update({"update_id": first["update_id"], "message": message})
    h.wait_startswith(126, "Received.", since=since)
    assert len(h.cases(126)) == 2


@pytest.mark.slow
def test_rate_limit_and_cases_in_flight_cap(start_bot) -> None:
    h = start_bot(RATE_LIMIT_PHOTOS=2, MAX_IN_FLIGHT=1)
    h.consent(115)
    send_photo_and_wait_ack(h, 115, lesion_photo(seed=10))
    since = h.patient.last_seq()
    h.patient.send_photo(115, lesion_photo(seed=11))
    h.wait_text(115, h.expect("en", "intake.in_flight", count=1), since=since)
    finish_case(h, h.cases(115)[0].id)
    send_photo_and_wait_ack(h, 115, lesion_photo(seed=12))
    finish_case(h, h.cases(115)[1].id)
    since = h.patient.last_seq()
    h.patient.send_photo(115, lesion_photo(seed=13))
    h.wait_text(115, h.expect("en", "intake.rate_limited", minutes=60), since=since)
    assert len(h.cases(115)) == 2


@pytest.mark.slow
def test_broker_outage_keeps_the_case_and_tells_the_patient_about_the_delay(start_bot) -> None:
    h = start_bot(CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0")
    h.consent(116)
    since = h.patient.last_seq()
    h.patient.send_photo(116, lesion_photo(seed=14))
    reply = h.wait_startswith(116, "Our analysis service is busy", since=since, timeout=30)
    (case,) = h.cases(116)
    assert reply["text"] == h.expect("en", "intake.delayed", case_id=case.id)
    assert case.status == CaseStatus.RECEIVED and case.queued_at is None  # the sweeper will enqueue it
    assert h.services.store.exists(case.image_key)
    assert eventually(lambda: h.cases(116)[0].delay_notice_at)
    with h.session() as session:
        plan = cases.find_stuck(session=session, stuck_after_s=300, now=case.received_at.replace(year=2100))
    assert case.id in plan.to_process


def test_database_outage_asks_the_patient_to_resend_later(start_bot) -> None:
    h = start_bot(database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing")
    since = h.patient.last_seq()
    h.patient.send_command(117, "/start")
    h.wait_text(117, h.expect("en", "error.unavailable"), since=since)
    h.patient.send_photo(117, lesion_photo(seed=15))
    h.wait_text(117, h.expect("en", "intake.unavailable"), since=since)


@pytest.mark.slow
def test_database_failing_after_the_case_is_committed_never_says_the_photo_was_not_saved(start_bot) -> None:
    h = start_bot()
    h.consent(128)
    with h.session() as session:
        # The case INSERT commits; marking it queued (an UPDATE, in the transaction after the acknowledgement)
        # then fails as if the database went away.
        session.execute(
            sql(
                "CREATE TRIGGER fail_after_commit BEFORE UPDATE OF status ON cases "
                "BEGIN INSERT INTO no_such_table VALUES (1); END"
            )
        )
        session.commit()
    since = h.patient.last_seq()
    h.patient.send_photo(128, lesion_photo(seed=22))
    # The acknowledgement, or (when the broker was slow to take the job) the notice that the photo is saved.
    saved = ("Received.", "Our analysis service is busy")
    reply = h.patient.wait_for(128, lambda e: (e.get("text") or "").startswith(saved), since=since, timeout=30)
    (case,) = h.cases(128)
    assert reply["text"] in (h.expect("en", key, case_id=case.id) for key in ("intake.ack", "intake.delayed"))
    h.patient.wait_consumed()
    time.sleep(1.0)  # anything said about the failure would follow the acknowledgement at once
    said = [m.get("text") for m in h.patient.messages(128, since=since)]
    assert h.expect("en", "intake.unavailable") not in said
    assert not any(text and text.startswith("Sorry") for text in said), said
    assert case.status == CaseStatus.RECEIVED and h.services.store.exists(case.image_key)  # the sweeper queues it


@pytest.mark.slow
def test_photo_on_postgres(start_bot, pg_url: str) -> None:
    h = start_bot(database_url=pg_url)
    h.consent(118, "ko")
    ack = send_photo_and_wait_ack(h, 118, lesion_photo(seed=16), lang="ko")
    (case,) = h.cases(118)
    assert ack["text"] == h.expect("ko", "intake.ack", case_id=case.id)
    assert eventually(lambda: h.cases(118)[0].status == CaseStatus.QUEUED)  # recorded just after the ack


# --- everything else ------------------------------------------------------------------------


def test_text_sticker_voice_video_and_unknown_commands_get_short_answers(start_bot) -> None:
    h = start_bot()
    voice = {"voice": {"file_id": "v1", "file_unique_id": "uv1", "duration": 3}}
    video = {"video": {"file_id": "d1", "file_unique_id": "ud1", "width": 640, "height": 480, "duration": 3}}
    for send, key in [
        (lambda: h.patient.send_text(120, "is my mole ok?"), "other.text"),
        (lambda: h.patient.send_sticker(120), "other.sticker"),
        (lambda: h.patient.send_message(120, extra=voice), "other.voice"),
        (lambda: h.patient.send_message(120, extra=video), "other.video"),
        (lambda: h.patient.send_command(120, "/diagnose"), "other.unknown_command"),
        (lambda: h.patient.send_message(120, extra={"location": {"latitude": 37.5, "longitude": 127.0}}), "other.text"),
    ]:
        since = h.patient.last_seq()
        send()
        h.wait_text(120, h.expect("en", key), since=since)
    assert h.cases(120) == []


def test_help_and_privacy(start_bot) -> None:
    h = start_bot(RETENTION_DAYS=14, SERVICE_OPERATOR="Dr Kim's clinic, kim@example.org")
    h.patient.send_command(121, "/privacy")
    privacy = h.wait_text(121, h.expect("en", "privacy.text", days=14, operator="Dr Kim's clinic, kim@example.org"))
    assert "run by Dr Kim's clinic, kim@example.org" in privacy["text"] and "14 days" in privacy["text"]
    h.patient.send_command(121, "/help")
    h.wait_text(121, "\n\n".join([h.expect("en", "help.text"), h.expect("en", "tips.photo")]))


def test_edited_messages_are_ignored_politely(start_bot) -> None:
    h = start_bot()
    h.consent(122)
    first = h.patient.send_message(122, text="helo")
    h.wait_text(122, h.expect("en", "other.text"))
    since = h.patient.last_seq()
    h.patient.edit_message(122, first["message_id"], "hello")
    h.wait_text(122, h.expect("en", "other.edited"), since=since)
    assert h.cases(122) == []


def test_an_update_the_library_cannot_parse_is_skipped_and_polling_goes_on(start_bot, caplog) -> None:
    h = start_bot()
    h.consent(124)
    since = h.patient.last_seq()
    # A message without chat and date: python-telegram-bot cannot parse it, and stock polling would
    # retry the same batch forever, logging the raw update (name, text) each time.
    h.patient.inject_update(
        {
            "message": {
                "message_id": 1,
                "text": "my name is Alice",
                "from": {"id": 124, "is_bot": False, "first_name": "Alice"},
            }
        }
    )
    h.patient.send_sticker(124)
    h.wait_text(124, h.expect("en", "other.sticker"), since=since)
    assert [m.get("text") for m in h.patient.messages(124, since=since)] == [h.expect("en", "other.sticker")]
    assert "Alice" not in caplog.text


def test_database_faults_log_tracebacks_without_the_patients_telegram_ids(start_bot, caplog) -> None:
    """SQL errors quote their statement; its parameters (Telegram user and chat ids) must stay out of the logs."""
    h = start_bot()
    first, second = 7391046285, 7391046286  # private chats: the chat id is the user id
    with h.session() as session:
        # An IntegrityError on the INSERT of a new patient (parameters: user id, chat id, language).
        session.execute(
            sql("CREATE TRIGGER refuse_users BEFORE INSERT ON users BEGIN SELECT RAISE(ABORT, 'injected fault'); END")
        )
        session.commit()
    since = h.patient.last_seq()
    h.patient.send_command(first, "/start")
    h.wait_text(first, h.expect("en", "error.generic"), since=since)
    with h.session() as session:
        # A statement on a dropped table (parameter: the user id of the SELECT).
        session.execute(sql("PRAGMA foreign_keys=OFF"))
        session.execute(sql("DROP TABLE users"))
        session.commit()
    h.patient.send_photo(second, lesion_photo(seed=19))
    h.wait_text(second, h.expect("en", "intake.unavailable"), since=since)
    assert "IntegrityError" in caplog.text and "OperationalError" in caplog.text  # the faults were logged
    assert "[SQL:" in caplog.text  # with their statements
    assert str(first) not in caplog.text and str(second) not in caplog.text


def test_group_chats_are_declined_and_nothing_is_stored(start_bot) -> None:
    h = start_bot()
    h.patient.send_photo(123, lesion_photo(seed=17), chat_type="group")
    reply = h.wait_text(-(1_000_000_000_000 + 123), h.expect("en", "other.group", bot_username="skintriage_local_bot"))
    assert reply["chat_id"] < 0
    assert h.user(123) is None


# --- history and deletion -------------------------------------------------------------------


@pytest.mark.slow
def test_history_shows_own_cases_and_never_another_patients(start_bot) -> None:
    h = start_bot()
    h.consent(130)
    h.consent(131)
    send_photo_and_wait_ack(h, 130, lesion_photo(seed=20))
    first = h.cases(130)[0]
    overlay = finish_case(h, first.id, tier="HIGH", probs=(0.62, 0.30, 0.08))
    send_photo_and_wait_ack(h, 130, lesion_photo(seed=21))
    second = h.cases(130)[1]
    send_photo_and_wait_ack(h, 131, lesion_photo(seed=22))
    other = h.cases(131)[0]

    since = h.patient.last_seq()
    h.patient.send_command(130, "/history")
    listing = h.wait_startswith(130, "Your latest cases", since=since)
    lines = listing["text"].split("\n")
    assert lines[1].startswith(f"#{second.id} · ") and lines[1].endswith(" · being analysed")
    assert lines[2].startswith(f"#{first.id} · ") and lines[2].endswith(" · High concern: see a dermatologist soon")
    assert buttons(listing) == [(f"Case #{second.id}", f"case:{second.id}"), (f"Case #{first.id}", f"case:{first.id}")]

    since = h.patient.last_seq()
    h.patient.press_button(130, listing["message_id"], f"case:{first.id}")
    again = h.patient.wait_for(130, lambda e: e["method"] == "sendPhoto", since=since)
    assert again["caption"].startswith(f"Case #{first.id}: High concern") and "Risk level: high." in again["caption"]
    assert "%" not in again["caption"]  # the probabilities stay in the console
    assert h.patient.file_bytes(again["photo"]) == overlay

    # A forged button for another patient's case, and nonsense data, reveal nothing.
    since = h.patient.last_seq()
    h.patient.press_button(130, listing["message_id"], f"case:{other.id}")
    answer = h.patient.wait_for(130, lambda e: e["method"] == "answerCallbackQuery", since=since)
    assert answer["text"] == h.expect("en", "history.not_found") and answer["show_alert"]
    h.patient.press_button(130, listing["message_id"], "case:1;DROP TABLE")
    stale = h.patient.wait_for(130, lambda e: e["method"] == "answerCallbackQuery", since=answer["seq"])
    assert stale["text"] == h.expect("en", "other.stale_button")
    h.barrier(130)
    methods = [e["method"] for e in h.patient.sent(130, since=since)]
    assert methods == ["answerCallbackQuery", "answerCallbackQuery", "sendMessage"]  # + the barrier's answer


@pytest.mark.slow
def test_delete_needs_confirmation_and_removes_images_cases_and_profile(start_bot) -> None:
    h = start_bot()
    h.consent(140)
    send_photo_and_wait_ack(h, 140, lesion_photo(seed=30))
    (case,) = h.cases(140)
    since = h.patient.last_seq()
    h.patient.send_command(140, "/delete")
    confirm = h.wait_text(140, h.expect("en", "delete.confirm"), since=since)
    assert [d for _, d in buttons(confirm)] == ["delete:yes", "delete:no"]
    h.patient.press_button(140, confirm["message_id"], "delete:no")
    h.wait_text(140, h.expect("en", "delete.cancelled"), since=since)
    assert len(h.cases(140)) == 1

    h.patient.send_command(140, "/delete")
    confirm = h.wait_text(140, h.expect("en", "delete.confirm"), since=h.patient.last_seq() - 1)
    h.patient.press_button(140, confirm["message_id"], "delete:yes")
    done = h.wait_text(140, h.expect("en", "delete.done", count=1), since=confirm["seq"])
    assert done["method"] == "editMessageText" and done["reply_markup"] is None
    assert h.user(140) is None and h.cases(140) == []
    assert not h.services.store.exists(case.image_key)


# --- shape ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_bot_process_never_imports_torch_or_tensorflow() -> None:
    code = (
        "import sys, bot.app, bot.run, bot.handlers, bot.delivery, bot.intake, devtools.local_api, worker.enqueue; "
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'torchvision') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path.cwd())
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_every_reply_the_bot_can_send_is_accepted_by_telegram_html_rules(lang: str) -> None:
    from bot.i18n import Texts
    from devtools.local_api import plain_text

    texts = Texts.load()
    catalogue = texts.catalogues[lang]
    assert len(catalogue) > 50  # the whole catalogue, not an empty one
    for key, text in catalogue.items():
        assert text.strip(), f"{lang} text {key!r} is empty"
        plain_text(text, "HTML")  # raises like Telegram on a tag it would refuse


def test_resending_the_photo_of_a_failed_case_starts_a_new_case(start_bot) -> None:
    h = start_bot()
    h.consent(119)
    photo = lesion_photo(seed=18)
    send_photo_and_wait_ack(h, 119, photo)
    (failed,) = h.cases(119)
    with h.session() as session:
        cases.mark_failed(session=session, case_id=failed.id, error_code="attempts_exhausted")
        session.commit()
    ack = send_photo_and_wait_ack(h, 119, photo)
    first, second = h.cases(119)
    assert ack["text"] == h.expect("en", "intake.ack", case_id=second.id)
    assert first.status == CaseStatus.FAILED
    assert eventually(lambda: h.cases(119)[1].status == CaseStatus.QUEUED)  # recorded just after the ack
