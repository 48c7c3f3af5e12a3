"""Faults, one per test, on the real processes: a worker killed mid-job, Redis and PostgreSQL going away,
Telegram refusing or timing out the replies, updates and jobs delivered twice, and broken model files.

Every test gets its own service (`make_service`): `skintriage bot` and `skintriage worker` subprocesses,
a fresh PostgreSQL database and a `redis-server` of its own. The sweeper runs every SWEEP_INTERVAL_S and
treats work as stuck after STUCK_AFTER_S, both shortened here so that recovery happens within a test.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from skintriage.db import session_factory
from skintriage.models import Case, CaseStatus, utcnow
from skintriage.settings import Settings
from tests.factories import lesion_photo
from tests.reliability.conftest import Service, wait
from worker.celery_app import SWEEP_TASK

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

_patients = itertools.count(7_200_001)

# The sweeper acts within seconds: never-queued cases after 5 s, queued or processing ones after STUCK_AFTER_S.
FAST_SWEEP = {"STUCK_AFTER_S": "6", "SWEEP_INTERVAL_S": "2"}
# An answer normally follows the photo within this (worker start-up not included).
ANSWER_TIMEOUT_S = 180.0


def _photo_case(svc: Service, user_id: int, *, seed: int, since: int, ack_key: str = "intake.ack") -> tuple[Case, int]:
    """Send a photo, wait for the given acknowledgement and the questions that follow it; return the new case
    and the seq of the intake's last message (the questions: anything after it is the answer)."""
    known = {c.id for c in svc.cases(user_id)}
    svc.client.send_photo(user_id, lesion_photo(seed=seed))
    ack = svc.wait_prefix(user_id, ack_key, since=since, timeout=60)
    (case,) = [c for c in svc.cases(user_id) if c.id not in known]
    assert ack["text"] == svc.expect(ack_key, case_id=case.id)
    asked = svc.wait_prefix(user_id, "questions.intro", since=ack["seq"], timeout=60)
    return case, asked["seq"]


def _held_jobs(svc: Service) -> set[bytes]:
    """Delivery tags of the jobs Redis records as taken but not yet acknowledged."""
    client = svc.redis.client()
    try:
        return set(client.hkeys("unacked"))
    finally:
        client.close()


def _probe(port: int) -> dict | None:
    """The worker's /healthz report (a 503 carries one too); None while it does not answer.

    Its broker check may take a few seconds against a dead Redis (one retry), hence the longer timeout.
    """
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=15) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())
    except OSError:
        return None


def _wait_probe(svc: Service, check: str, *, down: bool, name: str = "worker") -> dict:
    """Wait until the worker's /healthz reports `check` ("broker", "database") down (or up again)."""

    def seen() -> dict | None:
        report = _probe(svc.procs[name].health_port)  # type: ignore[attr-defined]
        return report if report and (report.get(check) != "ok") == down else None

    return wait(seen, timeout=60, what=f"the {name}'s probe saying the {check} is {'down' if down else 'up'}")


def _finished_sweeps(svc: Service) -> int:
    """How many sweep jobs the worker has logged as finished (succeeded or raised) so far."""
    lines = svc.log("worker").splitlines()
    return sum(1 for line in lines if f"{SWEEP_TASK}[" in line and (" succeeded in " in line or " raised " in line))


def _slow_analysis_started(svc: Service, name: str, case_id: int) -> bool:
    case = svc.case(case_id)
    return case.status == CaseStatus.PROCESSING and "slow pipeline: analysis starts" in svc.log(name)


# --- a worker dies --------------------------------------------------------------------------


def test_worker_killed_mid_analysis_finishes_the_case_after_a_restart(make_service) -> None:
    svc = make_service(**FAST_SWEEP)
    svc.start_worker("slow-worker", slow_s=300)
    svc.start_bot()
    user_id = next(_patients)
    svc.consent(user_id)
    case, ack_seq = _photo_case(svc, user_id, seed=11, since=svc.client.last_seq())
    wait(lambda: _slow_analysis_started(svc, "slow-worker", case.id), timeout=60, what="analysis under way")

    svc.kill("slow-worker")  # SIGKILL: no acknowledgement, no release of the claim
    dead_jobs = _held_jobs(svc)
    assert dead_jobs, "the killed worker's job should still be held in Redis (acks_late)"
    killed = svc.case(case.id)
    assert killed.status == CaseStatus.PROCESSING and killed.attempts == 1
    svc.start_worker("worker", beat=True)

    case = svc.wait_delivered(case.id, timeout=ANSWER_TIMEOUT_S, proc_names=("worker", "bot"))
    assert case.status == CaseStatus.DONE
    assert case.attempts == 2  # the killed attempt counts; the cap stops a photo that keeps killing workers
    assert case.processing_owner != killed.processing_owner
    svc.settle(ignore_unacked=dead_jobs)
    svc.assert_answered_once(user_id, case.id, since=ack_seq)
    assert len(svc.cases(user_id)) == 1
    svc.assert_alive()


# --- Redis goes away ------------------------------------------------------------------------


def test_redis_down_while_photos_arrive_keeps_the_cases_and_answers_each_once(make_service) -> None:
    svc = make_service(**FAST_SWEEP)
    svc.start_worker("worker", beat=True)
    svc.start_bot()
    patients = [next(_patients) for _ in range(3)]
    for user_id in patients:
        svc.consent(user_id)
    since = svc.client.last_seq()

    svc.redis.kill()
    stored: dict[int, tuple[Case, int]] = {}
    for seed, user_id in enumerate(patients, start=21):
        stored[user_id] = _photo_case(svc, user_id, seed=seed, since=since, ack_key="intake.delayed")
    for case, _ in stored.values():
        row = svc.case(case.id)
        assert row.status == CaseStatus.RECEIVED, "a case the broker never saw stays received for the sweeper"
        assert row.delay_notice_at is not None and row.acknowledged_at is not None
    # The worker notices the broker is gone and keeps answering its probe; nothing may crash meanwhile.
    _wait_probe(svc, "broker", down=True)
    svc.assert_alive()

    svc.redis.start()  # empty: the jobs the bot could not publish exist only as rows
    for user_id, (case, ack_seq) in stored.items():
        done = svc.wait_delivered(case.id, timeout=ANSWER_TIMEOUT_S, proc_names=("worker", "bot"))
        assert done.status == CaseStatus.DONE and done.attempts == 1
    assert "sweeper re-enqueued stuck work" in svc.log("worker")
    svc.settle()
    for user_id, (case, ack_seq) in stored.items():
        svc.assert_answered_once(user_id, case.id, since=ack_seq)
        assert len(svc.cases(user_id)) == 1

    # The bot publishes again by itself: the next photo is acknowledged normally.
    again, ack_seq = _photo_case(svc, patients[0], seed=31, since=svc.client.last_seq())
    svc.wait_delivered(again.id, timeout=ANSWER_TIMEOUT_S, proc_names=("worker", "bot"))
    svc.settle()
    svc.assert_answered_once(patients[0], again.id, since=ack_seq)
    svc.assert_alive()


# --- PostgreSQL goes away -------------------------------------------------------------------


def test_database_unreachable_says_temporarily_unavailable_and_recovers(make_service, pg_proxy, pg_url) -> None:
    proxy, proxied_url = pg_proxy
    svc = make_service(db_url=proxied_url, **FAST_SWEEP)
    svc.sessions = session_factory(pg_url)  # the test itself reads the database directly, not through the cut
    svc.start_worker("worker", beat=True)
    svc.start_bot()
    user_id = next(_patients)
    svc.consent(user_id)
    since = svc.client.last_seq()

    proxy.cut()
    svc.client.send_photo(user_id, lesion_photo(seed=41))
    svc.wait_text(user_id, svc.expect("intake.unavailable"), since=since, timeout=60)
    svc.client.send_command(user_id, "/history")
    svc.wait_text(user_id, svc.expect("error.unavailable"), since=since, timeout=60)
    assert svc.cases(user_id) == []
    # The worker's own probe finds the database gone and a sweep runs without it; nothing may crash meanwhile.
    sweeps = _finished_sweeps(svc)
    _wait_probe(svc, "database", down=True)
    wait(lambda: _finished_sweeps(svc) > sweeps, timeout=60, what="a sweep run while the database is cut")
    svc.assert_alive()

    proxy.restore()
    since = svc.client.last_seq()
    case, ack_seq = _photo_case(svc, user_id, seed=41, since=since)  # the patient sends it again, as asked
    case = svc.wait_delivered(case.id, timeout=ANSWER_TIMEOUT_S, proc_names=("worker", "bot"))
    assert case.status == CaseStatus.DONE
    svc.settle()
    svc.assert_answered_once(user_id, case.id, since=ack_seq)
    texts = [m.get("text") for m in svc.messages(user_id, since=since)]
    assert svc.expect("error.unavailable") not in texts and svc.expect("intake.unavailable") not in texts
    svc.assert_alive()


# --- Telegram fails the replies -------------------------------------------------------------


def test_reply_survives_flood_control_server_errors_and_timeouts(make_service) -> None:
    svc = make_service(**FAST_SWEEP)
    svc.start_worker("worker", beat=True)
    svc.start_bot()
    user_id = next(_patients)
    svc.consent(user_id)
    calls_before = svc.client.status()["calls"].get("sendPhoto", 0)
    # 429 with retry_after, two 5xx, and a read timeout (the server answers after the bot's 15 s read timeout).
    svc.client.set_faults("sendPhoto", ["429:2", "500", "502", "timeout:17"])

    case, ack_seq = _photo_case(svc, user_id, seed=51, since=svc.client.last_seq())
    case = svc.wait_delivered(case.id, timeout=ANSWER_TIMEOUT_S, proc_names=("worker", "bot"))

    assert case.status == CaseStatus.DONE and case.error_code is None
    assert svc.client.status()["calls"]["sendPhoto"] - calls_before == 5, "four failed sends, then one that worked"
    svc.settle()
    svc.assert_answered_once(user_id, case.id, since=ack_seq)
    log = svc.log("worker")
    assert "flood control, retrying in" in log and "sending failed (TimedOut)" in log
    svc.assert_alive()


LONG_GUIDANCE = " ".join(["Keep the photo, note any change in size, colour or shape, and book a visit."] * 12)


def test_two_part_reply_is_not_repeated_when_its_second_message_fails(make_service, tmp_path: Path) -> None:
    guidance = tmp_path / "guidance.toml"
    tiers = ("HIGH", "MEDIUM", "LOW", "UNCERTAIN")
    guidance.write_text("".join(f'[{tier}]\nen = "{LONG_GUIDANCE}"\n' for tier in tiers))
    svc = make_service(GUIDANCE_FILE=str(guidance), **FAST_SWEEP)
    svc.start_worker("slow-worker", slow_s=5)  # time to arm the faults between the acknowledgement and the answer
    svc.start_bot()
    user_id = next(_patients)
    svc.consent(user_id)

    case, ack_seq = _photo_case(svc, user_id, seed=61, since=svc.client.last_seq())
    # The photo with the caption goes through; the message that continues it fails, then is throttled.
    svc.client.set_faults("sendMessage", ["500", "429:1"])
    case = svc.wait_delivered(case.id, timeout=ANSWER_TIMEOUT_S, proc_names=("slow-worker", "bot"))

    svc.settle()
    body = svc.assert_answered_once(user_id, case.id, since=ack_seq)
    assert [m["method"] for m in body] == ["sendPhoto", "sendMessage"], "a long answer comes as photo + message"
    photos = [m for m in svc.messages(user_id, since=ack_seq) if m["method"] == "sendPhoto"]
    assert len(photos) == 1, f"the photo was sent {len(photos)} times"
    assert "\n\n".join(m.get("caption") or m.get("text") for m in body) == case.reply_text
    svc.assert_alive()


# --- the same work twice --------------------------------------------------------------------


def _publish_triage(svc: Service, case_id: int) -> None:
    """Hand the broker one more triage job for the case, as a redelivery or a second publisher would."""
    from worker.celery_app import TRIAGE_QUEUE, TRIAGE_TASK, create_app

    settings = Settings(CELERY_BROKER_URL=svc.redis.url(), DATA_DIR=str(svc.tmp_path / "publisher"))
    app = create_app(settings)
    try:
        app.send_task(TRIAGE_TASK, args=[case_id], queue=TRIAGE_QUEUE, routing_key=TRIAGE_QUEUE)
    finally:
        app.close()


def test_repeated_update_and_two_workers_on_one_case_give_one_answer(make_service) -> None:
    # No sweeper (no beat): the duplicate job is the test's, and nothing else re-enqueues.
    svc = make_service(STUCK_AFTER_S="60")
    first = svc.start_worker("worker-a", slow_s=8, wait=False)
    second = svc.start_worker("worker-b", slow_s=8, wait=False)
    svc.wait_worker(first)
    svc.wait_worker(second)
    svc.start_bot()
    user_id = next(_patients)
    svc.consent(user_id)
    since = svc.client.last_seq()

    update_id = svc.client.send_photo(user_id, lesion_photo(seed=71))
    ack = svc.wait_prefix(user_id, "intake.ack", since=since, timeout=60)
    (case,) = svc.cases(user_id)
    svc.client.redeliver(update_id)  # Telegram delivers the same update again (a lost getUpdates offset)
    holder = wait(
        lambda: next((name for name in ("worker-a", "worker-b") if "slow pipeline" in svc.log(name)), None),
        timeout=30,
        what="the first worker analysing the case",
    )
    other = "worker-b" if holder == "worker-a" else "worker-a"
    assert svc.case(case.id).status == CaseStatus.PROCESSING
    # The first worker is taking too long (as if it hung): its claim goes stale, and the case is handed out again.
    with svc.session() as session:
        session.execute(update(Case).where(Case.id == case.id).values(started_at=utcnow() - timedelta(minutes=5)))
        session.commit()
    _publish_triage(svc, case.id)

    wait(lambda: "slow pipeline" in svc.log(other), timeout=30, what="the second worker analysing the same case")
    case = svc.wait_delivered(case.id, timeout=ANSWER_TIMEOUT_S, proc_names=("worker-a", "worker-b", "bot"))
    wait(lambda: "was finished by another worker" in svc.log(holder), timeout=60, what="the first worker's late result")
    svc.settle()

    assert case.status == CaseStatus.DONE and case.attempts == 2
    svc.assert_answered_once(user_id, case.id, since=ack["seq"])
    acks = [m for m in svc.messages(user_id, since=since) if (m.get("text") or "") == ack["text"]]
    assert len(acks) == 1, "the repeated update was acknowledged again"
    assert len(svc.cases(user_id)) == 1
    svc.assert_alive()


# --- the model files are damaged ------------------------------------------------------------


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + 16):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _swap_contents(a: Path, b: Path) -> None:
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)


def _weights(model_dir: Path) -> tuple[Path, Path]:
    from ml.modelcard import CLASSIFIER_CARD, SEGMENTATION_CARD, ModelCard

    seg, cls = (model_dir / SEGMENTATION_CARD, model_dir / CLASSIFIER_CARD)
    return ModelCard.load(seg).weights_path(seg), ModelCard.load(cls).weights_path(cls)


@pytest.mark.parametrize("damage", ["flipped-bytes", "swapped-weights"])
def test_damaged_model_is_refused_and_the_case_waits_for_a_good_one(
    make_service, models: Path, tmp_path: Path, damage: str
) -> None:
    model_dir = tmp_path / "models"
    shutil.copytree(models, model_dir)
    seg_weights, cls_weights = _weights(model_dir)
    if damage == "flipped-bytes":
        _flip_bytes(cls_weights)
        broken = cls_weights
    else:
        _swap_contents(seg_weights, cls_weights)
        broken = seg_weights  # the first card checked
    svc = make_service(MODEL_DIR=str(model_dir), **FAST_SWEEP)
    report = svc.wait_worker(svc.start_worker("worker", beat=True, wait=False), expect_models=False)
    svc.start_bot()

    assert "was changed or swapped" in report["models"]
    log = svc.log("worker")
    assert f"weights {broken} have SHA-256" in log and "the file was changed or swapped" in log
    user_id = next(_patients)
    svc.consent(user_id)
    case, ack_seq = _photo_case(svc, user_id, seed=81, since=svc.client.last_seq())
    refused = f"Case {case.id} stays queued"
    wait(lambda: refused in svc.log("worker"), timeout=60, what="the job refused")
    # Tried again (the job's retry or the sweeper's duplicate) and refused again: never analysed with it.
    wait(lambda: svc.log("worker").count(refused) >= 2, timeout=90, what="the job tried again and refused again")
    waiting = svc.case(case.id)
    assert waiting.status == CaseStatus.QUEUED and waiting.attempts == 0
    assert waiting.tier is None and waiting.delivered_at is None
    assert svc.messages(user_id, since=ack_seq) == []

    # An operator restores the files: the same worker loads them on the next try and the case is answered.
    for name in os.listdir(models):
        shutil.copy2(models / name, model_dir / name)
    case = svc.wait_delivered(case.id, timeout=ANSWER_TIMEOUT_S, proc_names=("worker", "bot"))
    assert case.status == CaseStatus.DONE and case.attempts == 1
    svc.settle()
    svc.assert_answered_once(user_id, case.id, since=ack_seq)
    svc.assert_alive()
