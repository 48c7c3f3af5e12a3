"""The Celery tasks with a real worker, real demo models and the local Bot API server.

Each test runs on the embedded defaults (SQLite + filesystem broker) and on PostgreSQL + Redis.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from PIL import Image, ImageFilter
from sqlalchemy import update

from skintriage import cases
from skintriage.models import Case, CaseStatus, OutboxMessage, utcnow
from tests.factories import lesion_photo
from tests.stack import PATIENT_ID
from worker import enqueue

pytestmark = pytest.mark.slow


def wait(check: Callable[[], Any], *, timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll until `check()` is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)


def settle(task_log, *, quiet_s: float = 2.0, timeout: float = 60.0) -> None:
    """Wait until the worker has finished every job it took and taken no new one for quiet_s."""
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    last = None
    while time.monotonic() < deadline:
        snapshot = (dict(task_log.received), {k: len(v) for k, v in task_log.finished.items()})
        if snapshot != last or not task_log.idle():
            last, quiet_since = snapshot, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return
        time.sleep(0.1)
    raise AssertionError("the worker did not settle")


def answers(stack, chat_id: int = PATIENT_ID) -> list[dict[str, Any]]:
    """The bot's messages and photos in a chat."""
    return stack.client.messages(chat_id)


def dark_blurred_photo() -> bytes:
    """A photo the quality gate must refuse (too dark, blurred)."""
    img = Image.open(io.BytesIO(lesion_photo(seed=3))).filter(ImageFilter.GaussianBlur(8))
    img = img.point(lambda v: int(v * 0.1))
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def delivered(stack, case_id: int) -> Any:
    case = stack.case(case_id)
    return case if case.delivered_at is not None else None


def test_queued_case_is_analysed_stored_and_answered_with_the_overlay(stack, worker):
    case_id = stack.new_case(enqueue=True)

    case = wait(lambda: delivered(stack, case_id), what="answer sent")

    assert case.status == CaseStatus.DONE
    assert case.tier in {"HIGH", "MEDIUM", "LOW", "UNCERTAIN"}
    assert case.attempts == 1
    assert case.demo_model is True
    assert set(case.model_versions) >= {"segmentation", "classifier"}
    assert abs(case.prob_mel + case.prob_nv + case.prob_other - 1.0) < 1e-3
    assert stack.store.exists(case.mask_key) and stack.store.exists(case.overlay_key)
    # GRADCAM is on by default: the console gets the classifier's heatmap (never sent to the patient).
    assert case.heatmap_key and stack.store.get(case.heatmap_key)[:2] == b"\xff\xd8"
    assert case.timings_ms["explain"] > 0
    # Lesion measurements of the stored mask (ml.triage.measurements), for the console.
    assert case.measurements["area_px"] == case.lesion_area_px
    assert case.measurements["version"] >= 1 and 0 <= case.measurements["asymmetry_major_axis"] <= 1
    sent = answers(stack)
    assert [m["method"] for m in sent][0] == "sendPhoto"
    assert sent[0]["message_id"] == case.reply_message_id
    # What the patient got is what the case records; the photo is the stored outline overlay.
    assert sent[0]["caption"].split("\n")[0] in case.reply_text
    assert "demo" in case.reply_text.lower()
    photo = stack.client.file_bytes(sent[0]["photo"])
    assert Image.open(io.BytesIO(photo)).size == Image.open(io.BytesIO(stack.store.get(case.overlay_key))).size


def test_unusable_photo_is_rejected_with_advice_and_never_retried(stack, worker, task_log):
    case_id = stack.new_case(photo=dark_blurred_photo(), enqueue=True)

    case = wait(lambda: delivered(stack, case_id), what="answer sent")
    settle(task_log)

    assert case.status == CaseStatus.REJECTED
    assert case.tier == "RETAKE"
    assert case.retake_reason is not None
    assert case.measurements is None
    assert case.attempts == 1
    assert task_log.results("triage_case") == ["rejected"]
    sent = answers(stack)
    assert len(sent) == 1 and sent[0]["method"] == "sendMessage"
    assert sent[0]["text"].strip() and sent[0]["message_id"] == case.reply_message_id


def test_the_same_triage_job_twice_sends_one_reply(stack, worker, task_log):
    case_id = stack.new_case(enqueue=True)
    assert enqueue.enqueue_triage(case_id)  # a duplicate, as acks_late redelivery or the sweeper may cause
    assert enqueue.enqueue_delivery(case_id)

    wait(lambda: delivered(stack, case_id), what="answer sent")
    settle(task_log)

    assert sorted(task_log.results("triage_case")) == ["done", "finished"]
    assert len(answers(stack)) == 1
    assert stack.case(case_id).attempts == 1


def test_attempt_cap_fails_the_case_and_the_patient_is_told(stack, worker):
    case_id = stack.new_case()
    # As after max_attempts workers died holding it: the owner's process no longer exists.
    with stack.session() as session:
        session.execute(
            update(Case)
            .where(Case.id == case_id)
            .values(
                status=CaseStatus.PROCESSING,
                attempts=stack.settings.max_attempts,
                processing_owner=f"{cases.worker_identity().rsplit(':', 1)[0]}:999999999",
                started_at=utcnow(),
            )
        )
        session.commit()
    assert enqueue.enqueue_triage(case_id)

    case = wait(lambda: delivered(stack, case_id), what="apology sent")

    assert case.status == CaseStatus.FAILED
    assert case.error_code == "attempts_exhausted"
    sent = answers(stack)
    assert len(sent) == 1 and sent[0]["method"] == "sendMessage"
    assert sent[0]["message_id"] == case.reply_message_id and case.reply_text


def test_sweeper_reenqueues_a_case_whose_message_was_lost(stack, worker):
    from worker import sweeper

    # The bot committed the case but the broker never got (or lost) the job.
    case_id = stack.new_case()
    with stack.session() as session:
        old = utcnow() - timedelta(seconds=stack.settings.stuck_after_s + 60)
        session.execute(
            update(Case).where(Case.id == case_id).values(status=CaseStatus.QUEUED, queued_at=old, received_at=old)
        )
        session.commit()

    report = sweeper.sweep_once(settings=stack.settings)

    assert report.triage == 1 and report.not_enqueued == 0
    case = wait(lambda: delivered(stack, case_id), what="answer sent")
    assert case.status == CaseStatus.DONE
    assert len(answers(stack)) == 1


def test_sweeper_resends_an_answer_that_was_never_delivered(stack, worker):
    from worker import sweeper

    case_id = stack.new_case(enqueue=True)
    wait(lambda: delivered(stack, case_id), what="first answer")
    with stack.session() as session:
        # As if the delivery job was lost after the result was saved.
        session.execute(
            update(Case)
            .where(Case.id == case_id)
            .values(delivered_at=None, delivery_claimed_at=None, finished_at=utcnow() - timedelta(minutes=10))
        )
        session.commit()

    report = sweeper.sweep_once(settings=stack.settings)

    assert report.delivery == 1
    wait(lambda: delivered(stack, case_id), what="answer re-sent")
    assert len([m for m in answers(stack) if m["method"] == "sendPhoto"]) == 2


def test_telegram_flood_control_is_waited_out(stack, worker):
    stack.client.set_faults("sendPhoto", ["429:1"])
    case_id = stack.new_case(enqueue=True)

    case = wait(lambda: delivered(stack, case_id), what="answer after RetryAfter")

    photos = [m for m in answers(stack) if m["method"] == "sendPhoto"]
    assert len(photos) == 1 and photos[0]["message_id"] == case.reply_message_id


def test_flood_control_wait_is_kept_and_the_sweeper_does_not_resend_early(stack, worker):
    from worker import sweeper

    stack.client.set_faults("sendPhoto", ["429:6"])
    case_id = stack.new_case(enqueue=True)

    case = wait(lambda: stack.case(case_id).delivery_not_before, what="flood-control wait recorded")
    not_before = stack.case(case_id).delivery_not_before
    with stack.session() as session:  # as if the answer had been waiting long enough for the sweeper to look
        session.execute(update(Case).where(Case.id == case_id).values(finished_at=utcnow() - timedelta(minutes=10)))
        session.commit()
    assert sweeper.sweep_once(settings=stack.settings).delivery == 0

    case = wait(lambda: delivered(stack, case_id), what="answer after the wait")
    assert case.delivered_at >= not_before
    assert len([m for m in answers(stack) if m["method"] == "sendPhoto"]) == 1


def test_telegram_server_error_is_retried_with_backoff(stack, worker):
    stack.client.set_faults("sendPhoto", ["502", "500"])
    case_id = stack.new_case(enqueue=True)

    case = wait(lambda: delivered(stack, case_id), what="answer after two server errors")

    assert case.error_code is None
    assert len([m for m in answers(stack) if m["method"] == "sendPhoto"]) == 1


def test_patient_who_blocked_the_bot_is_not_retried_forever(stack, worker, task_log):
    case_id = stack.new_case()
    stack.client.block(PATIENT_ID)
    assert enqueue.enqueue_triage(case_id)

    case = wait(lambda: delivered(stack, case_id), what="delivery given up")
    settle(task_log)

    assert case.status == CaseStatus.DONE
    assert case.error_code == "undeliverable:forbidden"
    assert case.reply_message_id is None
    assert task_log.results("deliver_case") == ["forbidden"]
    assert answers(stack) == []


def test_answer_telegram_refuses_goes_out_as_plain_text_with_guidance_and_disclaimer(stack, worker, task_log):
    from bot.answers import visible
    from bot.i18n import load_texts

    stack.client.set_faults("sendPhoto", ["400"])  # e.g. a photo or caption Telegram cannot process
    case_id = stack.new_case(enqueue=True)

    case = wait(lambda: delivered(stack, case_id), what="plain-text answer")
    settle(task_log)

    texts = load_texts(stack.settings.guidance_file)
    (sent,) = answers(stack)
    assert sent["method"] == "sendMessage" and sent["parse_mode"] is None
    assert visible(texts.guidance("en", case.tier)) in sent["text"]
    assert visible(texts.get("en", "result.disclaimer")) in sent["text"]
    assert case.error_code is None and case.reply_text == sent["text"] and case.reply_message_id == sent["message_id"]
    assert task_log.results("deliver_case") == ["sent"]


def test_answer_refused_even_as_plain_text_is_given_up_and_logged_as_an_error(stack, worker, task_log, caplog):
    stack.client.set_faults("sendPhoto", ["400"])
    stack.client.set_faults("sendMessage", ["400"])
    case_id = stack.new_case(enqueue=True)

    case = wait(lambda: delivered(stack, case_id), what="delivery given up")
    settle(task_log)

    assert case.error_code == "undeliverable:bad_request" and case.reply_text is None
    assert task_log.results("deliver_case") == ["bad_request"]
    assert any(r.levelname == "ERROR" and "refused the answer" in r.getMessage() for r in caplog.records)


def test_operator_follow_up_is_sent_once(stack, worker, task_log):
    stack.client.send_text(PATIENT_ID, "hello")
    with stack.session() as session:
        message = OutboxMessage(chat_id=PATIENT_ID, text="Please book a visit with a dermatologist.")
        session.add(message)
        session.commit()
        message_id = message.id
    assert enqueue.enqueue_outbox(message_id)
    assert enqueue.enqueue_outbox(message_id)

    wait(lambda: [m for m in answers(stack) if "Please book a visit with a dermatologist." in (m.get("text") or "")])
    settle(task_log)

    (sent,) = answers(stack)
    with stack.session() as session:
        message = session.get(OutboxMessage, message_id)
        assert message.sent_at is not None and message.sent_text == sent["text"]


def test_worker_without_a_trusted_model_keeps_the_case_queued(stack, tmp_path, monkeypatch):
    from skintriage.settings import get_settings
    from worker import pipeline_cache, tasks

    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "no-models"))
    get_settings.cache_clear()
    case_id = stack.new_case(enqueue=False)
    with stack.session() as session:
        cases.mark_queued(session=session, case_id=case_id)
        session.commit()

    # Eager run: the retries happen at once instead of after their countdowns, then the job gives up.
    result = tasks.triage_case.apply(args=[case_id])

    assert result.get() == "model_unavailable"
    assert pipeline_cache.last_error
    case = stack.case(case_id)
    assert (case.status, case.attempts, case.delivered_at) == (CaseStatus.QUEUED, 0, None)
    assert answers(stack) == []


def test_demo_models_are_refused_unless_allowed(stack, monkeypatch):
    from skintriage.settings import get_settings
    from worker import pipeline_cache, tasks

    monkeypatch.setenv("ALLOW_DEMO_MODELS", "false")
    get_settings.cache_clear()
    case_id = stack.new_case(enqueue=False)

    assert tasks.triage_case.apply(args=[case_id]).get() == "model_unavailable"

    assert pipeline_cache.last_error
    case = stack.case(case_id)
    assert case.status in {CaseStatus.RECEIVED, CaseStatus.QUEUED}
    assert case.attempts == 0
