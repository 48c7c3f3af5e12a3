"""Faults around the moment an answer goes out, on the real processes: Telegram taking a message and its
answer never arriving, the database going away between sending and recording, and the patient's /delete
while their answer is being prepared or sent.

Like test_faults.py, every test gets its own service (`make_service`): `skintriage bot` and `skintriage worker`
subprocesses, a fresh PostgreSQL database (cut with `TcpProxy` where the test says) and a `redis-server` of its
own; the local Bot API server takes the messages and can answer late or never (`delay-after`, `timeout-after`).
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from skintriage import cases
from skintriage.db import session_factory
from skintriage.models import CaseStatus
from tests.reliability.conftest import Service, wait
from tests.reliability.test_faults import ANSWER_TIMEOUT_S, FAST_SWEEP, _photo_case
from worker.celery_app import OUTBOX_TASK, REPLIES_QUEUE

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

_patients = itertools.count(7_400_001)


def _answer_photos(svc: Service, user_id: int, *, since: int) -> list[dict[str, Any]]:
    return [m for m in svc.messages(user_id, since=since) if m["method"] == "sendPhoto"]


def _delete_everything(svc: Service, user_id: int) -> tuple[int, int]:
    """/delete and its confirmation, as the patient would; returns the seqs of the question and of the done edit."""
    since = svc.client.last_seq()
    svc.client.send_command(user_id, "/delete")
    confirm = svc.wait_text(user_id, svc.expect("delete.confirm"), since=since, timeout=60)
    svc.client.press_button(user_id, confirm["message_id"], "delete:yes")
    done = svc.wait_prefix(user_id, "delete.done", since=confirm["seq"], timeout=60)
    assert svc.cases(user_id) == []
    return confirm["seq"], done["seq"]


def _publish(svc: Service, task: str, queue: str, *args: Any) -> None:
    from skintriage.settings import Settings
    from worker.celery_app import create_app

    app = create_app(Settings(CELERY_BROKER_URL=svc.redis.url(), DATA_DIR=str(svc.tmp_path / "publisher")))
    try:
        app.send_task(task, args=list(args), queue=queue, routing_key=queue)
    finally:
        app.close()


# --- Telegram took the answer, the worker never heard back -----------------------------------


def test_answer_taken_by_telegram_whose_reply_is_lost_comes_twice_never_lost(make_service) -> None:
    svc = make_service(**FAST_SWEEP)
    svc.start_worker("worker", beat=True)
    svc.start_bot()
    user_id = next(_patients)
    svc.consent(user_id)
    # The answer's photo reaches the chat; Telegram's reply comes after the worker's 15 s read timeout.
    svc.client.set_faults("sendPhoto", ["timeout-after:17"])

    case, ack_seq = _photo_case(svc, user_id, seed=101, since=svc.client.last_seq())
    case = svc.wait_delivered(case.id, timeout=ANSWER_TIMEOUT_S, proc_names=("worker", "bot"))
    svc.settle()

    photos = _answer_photos(svc, user_id, since=ack_seq)
    # Telegram has no idempotency key and no way to ask what a chat holds: the send whose reply was lost may
    # or may not have arrived, and not sending again could lose the answer. So the patient sees it twice.
    assert len(photos) == 2, "one answer Telegram took without a reply, then the one sent again"
    assert photos[0]["caption"] == photos[1]["caption"], "the same words both times"
    assert case.status == CaseStatus.DONE and case.reply_message_id == photos[1]["message_id"]
    assert "sending failed (TimedOut)" in svc.log("worker")
    svc.assert_alive()


# --- the database goes away between sending and recording -----------------------------------


def test_database_cut_between_sending_and_recording_gives_one_answer(make_service, pg_proxy, pg_url) -> None:
    proxy, proxied_url = pg_proxy
    svc = make_service(db_url=proxied_url, **FAST_SWEEP)
    svc.sessions = session_factory(pg_url)  # the test reads the database directly, not through the cut
    svc.start_worker("worker", beat=True)
    svc.start_bot()
    user_id = next(_patients)
    svc.consent(user_id)
    # The answer's photo reaches the chat at once, Telegram's reply to the worker 4 s later: time to cut.
    svc.client.set_faults("sendPhoto", ["delay-after:4"])

    case, ack_seq = _photo_case(svc, user_id, seed=111, since=svc.client.last_seq())
    svc.client.wait_for(user_id, lambda e: e["method"] == "sendPhoto", since=ack_seq, timeout=ANSWER_TIMEOUT_S)
    proxy.cut()
    time.sleep(10)  # Telegram's reply reaches the worker 4 s after the photo; the database stays away 6 s more
    assert svc.case(case.id).delivered_at is None
    proxy.restore()

    case = svc.wait_delivered(case.id, timeout=ANSWER_TIMEOUT_S, proc_names=("worker", "bot"))
    svc.settle()
    photos = _answer_photos(svc, user_id, since=ack_seq)
    assert len(photos) == 1, f"the answer was sent {len(photos)} times"
    assert case.reply_message_id == photos[0]["message_id"]
    svc.assert_answered_once(user_id, case.id, since=ack_seq)
    assert "answer sent, not recorded yet" in svc.log("worker")
    svc.assert_alive()


# --- the patient's /delete while the answer is on its way -----------------------------------


def test_delete_during_the_analysis_sends_no_answer_and_removes_the_images_written_after_it(make_service) -> None:
    svc = make_service(**FAST_SWEEP)
    svc.start_worker("slow-worker", slow_s=10, beat=True)
    svc.start_bot()
    user_id = next(_patients)
    svc.consent(user_id)
    case, ack_seq = _photo_case(svc, user_id, seed=121, since=svc.client.last_seq())
    wait(lambda: "slow pipeline: analysis starts" in svc.log("slow-worker"), timeout=60, what="analysis under way")

    _, done_seq = _delete_everything(svc, user_id)
    svc.settle()  # the analysis ends (its job acknowledged) and nothing follows

    assert svc.messages(user_id, since=done_seq) == []
    images = svc.tmp_path / "data" / "images"
    assert [p for p in images.rglob("*") if p.is_file()] == [], "the mask, overlay and heatmap written after /delete"
    assert f"case {case.id} was deleted while it was analysed" in svc.log("slow-worker")
    svc.assert_alive()


def test_delete_while_the_answer_is_being_prepared_stops_it(make_service) -> None:
    svc = make_service(**FAST_SWEEP)
    svc.start_worker("slow-worker", slow_answer_s=10, beat=True)
    svc.start_bot()
    user_id = next(_patients)
    svc.consent(user_id)
    case, ack_seq = _photo_case(svc, user_id, seed=131, since=svc.client.last_seq())
    wait(lambda: "slow answer: reading the overlay" in svc.log("slow-worker"), timeout=120, what="answer on its way")

    confirm_seq, done_seq = _delete_everything(svc, user_id)
    svc.settle()

    after = [m for m in svc.messages(user_id, since=ack_seq) if m["seq"] not in (confirm_seq, done_seq)]
    assert after == [], "nothing but the /delete dialogue after the photo's acknowledgement"
    assert f"case {case.id}: deleted by the patient" in svc.log("slow-worker")
    svc.assert_alive()


def test_delete_while_an_outbox_message_is_being_prepared_stops_it(make_service) -> None:
    svc = make_service(**FAST_SWEEP)
    svc.start_worker("slow-worker", slow_answer_s=6, beat=True)
    svc.start_bot()
    user_id = next(_patients)
    svc.consent(user_id)
    case, ack_seq = _photo_case(svc, user_id, seed=141, since=svc.client.last_seq())
    svc.wait_delivered(case.id, timeout=ANSWER_TIMEOUT_S, proc_names=("slow-worker", "bot"))
    svc.settle()
    with svc.session() as session:
        row = cases.get_case(session=session, case_id=case.id)
        message = cases.queue_patient_message(session=session, case=row, kind="answers", text="A word from the clinic.")
        session.commit()
        message_id = message.id
    _publish(svc, OUTBOX_TASK, REPLIES_QUEUE, message_id)
    wait(lambda: "slow message: composing" in svc.log("slow-worker"), timeout=60, what="the message being prepared")

    confirm_seq, done_seq = _delete_everything(svc, user_id)
    svc.settle()

    texts = [m.get("text") for m in svc.messages(user_id, since=confirm_seq) if m["seq"] != done_seq]
    assert "A word from the clinic." not in texts and texts == []
    assert f"outbox message {message_id}: deleted with its patient's data; not sent" in svc.log("slow-worker")
    svc.assert_alive()
