"""Celery tasks: analyse a case, send its answer, send operator follow-ups, and the periodic jobs.

Every task takes a row id and re-reads the row; the row, not the message, says what is left to do,
so a redelivered or duplicated job (acks_late) does nothing twice:
  - claiming a case for processing and claiming its reply are single conditional UPDATEs;
  - a case that is already finished only gets its delivery (re)enqueued, and delivery is claimed.
Retries are narrowed to transient errors (database, image store, Telegram network); a bad photo is
a RETAKE result, never a retry; the attempt cap in cases.claim_for_processing ends a job that keeps
killing its worker, and the patient is told. worker.failures.classify decides what a failed triage job
means: an infrastructure failure (the models failing on this worker) hands the case back without using
an attempt and counts towards this worker turning unhealthy (worker.health), which stops it taking jobs.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from celery import shared_task
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, RetryAfter, TelegramError

from skintriage import cases
from skintriage.db import session_factory
from skintriage.exceptions import ImageNotFound, StorageError
from skintriage.models import Case, CaseStatus
from skintriage.observability import CASES, DELIVERIES, INFERENCE, QUEUE_WAIT
from skintriage.settings import Settings, get_settings
from skintriage.storage import ImageStore, make_store
from worker import booking, enqueue, health, pipeline_cache, retention, sweeper
from worker.celery_app import BOOKING_TASK, DELIVER_TASK, OUTBOX_TASK, PURGE_TASK, SWEEP_TASK, TRIAGE_TASK
from worker.failures import Failure, classify
from worker.telegram_session import run_with_bot

if TYPE_CHECKING:
    from ml.result import TriageResult

log = logging.getLogger(__name__)

# Errors that a later try can get past: the database or the image store being away (see _is_transient).
TRANSIENT_DB_ERRORS = (OperationalError,)
MAX_TRANSIENT_RETRIES = 8  # about 20 minutes of backoff; then the sweeper takes over
MAX_MODEL_RETRIES = 6  # while MODEL_DIR has no trusted model; then the sweeper takes over
MAX_INFRA_RETRIES = 8  # while the models fail on the workers that run it; then the sweeper takes over
UNHEALTHY_HAND_BACK_S = 2.0  # an unhealthy worker hands a job back this soon, for a healthy worker
MAX_DELIVERY_RETRIES = 6
BACKOFF_BASE_S = 5.0
BACKOFF_MAX_S = 300.0


def backoff_s(retries: int, *, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_MAX_S) -> float:
    """Exponential backoff with full jitter: base * 2**retries seconds at most, capped."""
    return random.uniform(base / 2, min(cap, base * 2**retries))


def _sessions(settings: Settings) -> Session:
    return session_factory(settings.resolved_database_url)()


_stores: dict[tuple[Any, ...], ImageStore] = {}
_stores_lock = threading.Lock()


def _store(settings: Settings) -> ImageStore:
    key = (settings.image_store, str(settings.data_dir.resolve()), settings.s3_endpoint_url, settings.s3_bucket)
    with _stores_lock:
        if key not in _stores:
            _stores[key] = make_store(settings)
        return _stores[key]


# --- triage ---------------------------------------------------------------------------------


@shared_task(name=TRIAGE_TASK, bind=True, acks_late=True, max_retries=None, ignore_result=True)
def triage_case(self: Any, case_id: int) -> str:
    """Analyse one case and enqueue its answer; safe to run any number of times for the same case."""
    settings = get_settings()
    if not health.state.healthy:
        return _hand_back_unhealthy(self, case_id)
    try:
        pipeline = pipeline_cache.get_pipeline(settings)
    except Exception as exc:
        failure = classify(exc)
        if failure is Failure.MODEL_MISSING:
            return _models_unavailable(self, case_id, settings, exc)
        if failure is Failure.INFRASTRUCTURE:
            return _infrastructure_failed(self, case_id, settings, exc)
        raise

    try:
        with _sessions(settings) as session:
            claim = cases.claim_for_processing(
                session=session,
                case_id=case_id,
                max_attempts=settings.max_attempts,
                stale_after_s=settings.stuck_after_s,
            )
            outcome = claim.outcome
            if outcome == cases.Claim.CLAIMED:
                with health.state.job(case_id):
                    return _process(claim.case, session=session, settings=settings, pipeline=pipeline)
    except Exception as exc:
        failure = classify(exc)
        if failure is Failure.TRANSIENT:
            return _retry_transient(self, case_id, settings, exc)
        if failure is Failure.INFRASTRUCTURE:
            return _infrastructure_failed(self, case_id, settings, exc)
        raise

    if outcome == cases.Claim.MISSING:
        log.info("case %d no longer exists; nothing to do", case_id)
        return "missing"
    if outcome == cases.Claim.BUSY:
        if self.request.retries >= MAX_TRANSIENT_RETRIES:
            log.info("case %d still held by %s; the sweeper will check it", case_id, claim.case.processing_owner)
            return "busy"
        countdown = min(max(settings.stuck_after_s / 4, 5.0), 120.0)
        raise self.retry(countdown=countdown)
    if outcome == cases.Claim.EXHAUSTED:
        log.error("case %d failed after %d attempts; telling the patient", case_id, settings.max_attempts)
        CASES.labels(status=CaseStatus.FAILED, tier="").inc()
    # FINISHED or EXHAUSTED: the answer may not have gone out yet (the sender is idempotent).
    if claim.case is not None and claim.case.delivered_at is None:
        enqueue.enqueue_delivery(case_id)
    return outcome.value


def _process(case: Case, *, session: Session, settings: Settings, pipeline: Any) -> str:
    """Run the pipeline on a claimed case, store the images and the result, enqueue the answer."""
    case_id = case.id
    owner = case.processing_owner  # read now: after a rollback the row would show a new owner's name
    if case.queued_at is not None and case.started_at is not None:
        QUEUE_WAIT.observe(max((case.started_at - case.queued_at).total_seconds(), 0.0))
    store = _store(settings)
    try:
        try:
            image = store.get(case.image_key) if case.image_key else None
        except ImageNotFound:
            image = None
        if image is None:
            # The photo was deleted (retention or the patient's /delete) before it was analysed.
            return _fail(session, case_id, "image_missing", owner=owner)

        started = time.monotonic()
        try:
            result = pipeline.run(image)
        except Exception as exc:
            if classify(exc) in (Failure.TRANSIENT, Failure.INFRASTRUCTURE):
                raise  # the worker's fault, not the photo's: the case is handed back below
            # Not a photo the pipeline could refuse (those come back as RETAKE): a bug this photo triggers.
            log.exception("pipeline failed on case %d; the case fails and the patient is told", case_id)
            session.rollback()
            return _fail(session, case_id, "pipeline_error", owner=owner)
        elapsed = time.monotonic() - started
        INFERENCE.observe(elapsed)
        health.state.record_success()

        stored = _case_result(result, store=store, settings=settings, total_ms=elapsed * 1000)
        saved = cases.save_result(session=session, case_id=case_id, result=stored, owner=owner)
        session.commit()
    except Exception as exc:
        session.rollback()
        if classify(exc) in (Failure.TRANSIENT, Failure.INFRASTRUCTURE):
            _release(session, case_id)
        raise
    if saved:
        CASES.labels(status=stored.status, tier=stored.tier).inc()
        log.info(
            "case %d %s tier=%s in %.0f ms",
            case_id,
            stored.status,
            stored.tier,
            elapsed * 1000,
            extra={"case_id": case_id, "tier": stored.tier, "status": str(stored.status)},
        )
    else:
        log.info("case %d was finished by another worker; keeping its result", case_id)
    enqueue.enqueue_delivery(case_id)
    return str(stored.status)


def _fail(session: Session, case_id: int, error_code: str, *, owner: str | None) -> str:
    """Fail a case this worker holds and enqueue the answer; a case taken over meanwhile is left to its new owner."""
    failed = cases.mark_failed(session=session, case_id=case_id, error_code=error_code, owner=owner)
    session.commit()
    if not failed:
        log.info("case %d was taken over by another worker; leaving it to them (%s not recorded)", case_id, error_code)
        return "taken_over"
    enqueue.enqueue_delivery(case_id)
    return error_code


def _case_result(result: TriageResult, *, store: ImageStore, settings: Settings, total_ms: float) -> cases.CaseResult:
    """The case's stored result for a TriageResult, writing its images to the store on the way."""
    probs = result.probabilities or {}
    timings = dict(result.timings_ms or {})
    timings.setdefault("worker_total", round(total_ms, 1))
    keys = {
        column: store.put(data, kind=kind, ext=ext).key
        for data, kind, ext, column in (
            (result.mask_png, "mask", "png", "mask_key"),
            (result.overlay_jpeg, "overlay", "jpg", "overlay_key"),
            (result.heatmap_jpeg, "heatmap", "jpg", "heatmap_key"),
        )
        if data
    }
    return cases.CaseResult(
        tier=str(result.tier),
        tier_reason=tier_reason(result, settings=settings),
        label=result.label,
        prob_mel=probs.get("MEL"),
        prob_nv=probs.get("NV"),
        prob_other=probs.get("OTHER"),
        mel_threshold=result.mel_threshold,
        lesion_area_px=result.lesion_area_px,
        lesion_diameter_px=result.lesion_diameter_px,
        quality_flags=list(result.quality_flags or []),
        retake_reason=str(result.retake_reason) if result.retake_reason else None,
        model_versions=dict(result.model_versions or {}),
        timings_ms=timings,
        demo_model=bool(result.demo_model),
        modality=result.modality,
        measurements=result.measurements.to_dict() if result.measurements is not None else None,
        image_width=result.image_width or None,
        image_height=result.image_height if result.image_width else None,
        **keys,
    )


def tier_reason(result: Any, *, settings: Settings) -> str | None:
    """Why the result has its tier (ml.policy REASON_*), for the patient's answer; None for RETAKE or unknown.

    The pipeline's result may carry the reason itself; otherwise the policy is asked again with the same
    probabilities, threshold, settings and gate flags. It is deterministic, so it gives the same tier; if it
    does not (a pipeline that decides differently), no reason is claimed.
    """
    from ml.policy import decide_tier
    from ml.quality import UNSURE_FLAGS

    own = getattr(result, "tier_reason", None) or getattr(result, "reason", None)
    if own:
        return str(own)
    if not result.probabilities or not result.mel_threshold or str(result.tier) == "RETAKE":
        return None
    decision = decide_tier(
        result.probabilities,
        mel_threshold=result.mel_threshold,
        config=pipeline_cache.policy_from_settings(settings),
        gate_unsure=any(flag in UNSURE_FLAGS for flag in result.quality_flags or []),
    )
    return decision.reason if str(decision.tier) == str(result.tier) else None


def _release(session: Session, case_id: int) -> None:
    """Give the case back after a transient or infrastructure error without using up one of its attempts."""
    try:
        cases.release_for_retry(session=session, case_id=case_id, refund_attempt=True)
        session.commit()
    except Exception as exc:  # noqa: BLE001 - the database may be what failed; the claim goes stale instead
        session.rollback()
        log.warning("could not release case %d (%s); retried once its claim is stale", case_id, type(exc).__name__)


def _retry_transient(task: Any, case_id: int, settings: Settings, exc: BaseException) -> str:
    retries = task.request.retries
    if retries >= MAX_TRANSIENT_RETRIES:
        log.error("case %d: giving up retrying %s; the sweeper re-enqueues it later", case_id, type(exc).__name__)
        return "transient_error"
    countdown = backoff_s(retries)
    log.warning("case %d: transient %s, retry %d in %.0f s", case_id, type(exc).__name__, retries + 1, countdown)
    raise task.retry(countdown=countdown, exc=exc)


def _infrastructure_failed(task: Any, case_id: int, settings: Settings, exc: BaseException) -> str:
    """The models failed on this worker: the case (released by _process) waits for a healthy worker."""
    log.error(
        "case %d: the models failed on this worker (%s: %s); the case goes back to the queue, its attempts untouched",
        case_id,
        type(exc).__name__,
        exc,
        exc_info=exc,
    )
    health.state.record_infrastructure_failure(exc)
    try:
        with _sessions(settings) as session:
            cases.mark_queued(session=session, case_id=case_id)  # a fresh queued_at: no sweeper duplicate meanwhile
            session.commit()
    except OperationalError:
        pass
    if not health.state.healthy:
        return _hand_back_unhealthy(task, case_id)
    retries = task.request.retries
    if retries >= MAX_INFRA_RETRIES:
        log.error("case %d: giving up retrying for now; the sweeper re-enqueues it later", case_id)
        return "infrastructure_error"
    raise task.retry(countdown=backoff_s(retries), exc=exc)


def _hand_back_unhealthy(task: Any, case_id: int) -> str:
    """Put the job back on the queue for a healthy worker (this one has stopped consuming it)."""
    log.warning("case %d: this worker is unhealthy (%s); job handed back", case_id, health.state.unhealthy_reason)
    raise task.retry(countdown=UNHEALTHY_HAND_BACK_S, max_retries=None)


def hand_back_hung(case_id: int, *, settings: Settings) -> None:
    """The watchdog's action on a job past JOB_DEADLINE_S: release its case and enqueue it for another worker.

    The attempt stays counted (a photo that hangs every worker is ended by the attempt cap); if the hung job
    ever finishes, its result is refused because the case is no longer its own (cases.save_result).
    """
    with _sessions(settings) as session:
        cases.release_for_retry(session=session, case_id=case_id)
        session.commit()
    if enqueue.enqueue_triage(case_id):
        log.error("case %d: its job hung on this worker; handed to another worker", case_id)
    else:
        log.error("case %d: its job hung on this worker; released for the sweeper (broker unreachable)", case_id)


def _models_unavailable(task: Any, case_id: int, settings: Settings, exc: BaseException) -> str:
    """Keep the case queued (never answer with a wrong model) and try again later."""
    log.error(
        "not serving: no trusted model in %s (%s). Install trained models with their cards there "
        "(see README), or set ALLOW_DEMO_MODELS=true for the demo. Case %d stays queued.",
        settings.model_dir,
        exc,
        case_id,
    )
    try:
        with _sessions(settings) as session:
            # A fresh queued_at keeps the sweeper from adding duplicates while this job retries.
            cases.mark_queued(session=session, case_id=case_id)
            session.commit()
    except OperationalError:
        pass
    retries = task.request.retries
    if retries >= MAX_MODEL_RETRIES:
        return "model_unavailable"
    raise task.retry(countdown=backoff_s(retries, base=10.0))


# --- delivery -------------------------------------------------------------------------------


def _retry_after_s(exc: RetryAfter) -> float:
    value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@shared_task(name=DELIVER_TASK, bind=True, acks_late=True, max_retries=None, ignore_result=True)
def deliver_case(self: Any, case_id: int) -> str:
    """Send a finished case's answer to the patient, at most once (an album of photos gets one answer)."""
    settings = get_settings()
    from bot.answers import told_tier
    from bot.delivery import deliver_case as send_answer

    try:
        with _sessions(settings) as session:
            answer = _answer_plan(session, case_id)
            if isinstance(answer, str):
                return answer
            answer_id, album, refused_before = answer
            case = cases.claim_delivery(session=session, case_id=answer_id)
            if case is None:
                log.debug("case %d: answer already sent or being sent", answer_id)
                return "skipped"
            store = _store(settings)

            def first_sent(message_id: int) -> None:
                # The photo is out; if its follow-up fails, the retry must not send the photo again.
                cases.mark_reply_started(session=session, case_id=answer_id, message_id=message_id)
                session.commit()

            def send(bot: Any) -> Any:
                return send_answer(
                    bot, case=case, store=store, on_first_sent=first_sent, refused_before=refused_before, album=album
                )

            try:
                message_id, text = run_with_bot(settings, send)
            except Exception as exc:  # noqa: BLE001 - _delivery_failed sorts every send failure: records or retries
                return _delivery_failed(self, session, answer_id, exc)
            told = told_tier(case)  # the case as composed: the patient's answers as they were then
            cases.mark_delivered(session=session, case_id=answer_id, message_id=message_id, text=text, told_tier=told)
            session.flush()
            session.refresh(case)
            cases.mark_answered_with(session=session, case_ids=[i for i in album if i != answer_id], answer=case)
            session.commit()
            followup = _answers_followup(session, settings, case)
    except Exception as exc:
        if isinstance(exc, TRANSIENT_DB_ERRORS):
            return _retry_delivery(self, case_id, exc, countdown=backoff_s(self.request.retries))
        raise
    DELIVERIES.labels(outcome="sent").inc()
    log.info("case %d: answer sent", answer_id, extra={"case_id": answer_id})
    if followup is not None:
        enqueue.enqueue_outbox(followup)  # False: the sweeper sends it
    return "sent"


def _answers_followup(session: Session, settings: Settings, case: Case) -> int | None:
    """A follow-up for answers the patient tapped while the answer was being sent (see questions in bot/)."""
    from bot.answers import queue_answers_followup
    from bot.i18n import load_texts

    session.expire_all()  # read the answers as they are now, not as they were when the answer was composed
    message_id = queue_answers_followup(session=session, case=case, texts=load_texts(settings.guidance_file))
    session.commit()
    if message_id is not None:
        log.info("case %d: a later answer raised the urgency; follow-up %d queued", case.id, message_id)
    return message_id


def _answer_plan(session: Session, case_id: int) -> str | tuple[int, list[int], bool]:
    """Which case's answer to send for `case_id`: (case id, album case ids, refused before), or why nothing is sent.

    Photos sent together (one Telegram album) are one spot: the answer waits until every photo is finished,
    then the most urgent one is sent once, naming the others. The answer to a refused photo says to see a
    doctor when the patient's previous photo was refused too (or two photos of the album were).
    """
    from bot.answers import answer_plan

    case = cases.get_case(session=session, case_id=case_id)
    if case is None:
        return "missing"
    album = cases.album_of(session=session, case=case)
    if any(c.status not in cases.FINAL_STATUSES for c in album):
        log.info("case %d: waiting for the other photos of its album", case_id)
        return "waiting_for_album"
    answer, album_ids, refused_before = answer_plan(session=session, case=case)
    if answer.delivered_at is not None:
        # Sent already (this job is a sibling's, or a redelivery): make sure every photo of the album says so.
        cases.mark_answered_with(
            session=session, case_ids=[c.id for c in album if c.delivered_at is None], answer=answer
        )
        session.commit()
        # A retried job whose first run sent the answer but failed before checking the patient's answers.
        followup = _answers_followup(session, get_settings(), answer)
        if followup is not None:
            enqueue.enqueue_outbox(followup)
        return "skipped"
    return answer.id, album_ids, refused_before


def _delivery_failed(task: Any, session: Session, case_id: int, exc: BaseException) -> str:
    """Decide what a failed send means: give up for good, wait as told, or back off and retry."""
    if isinstance(exc, Forbidden | BadRequest):
        # Blocked bot or deleted chat (a BadRequest here means even the plain-text answer was refused):
        # retrying cannot help. A patient who blocked the bot chose so; anything else needs a person to look.
        reason = "forbidden" if isinstance(exc, Forbidden) else "bad_request"
        level = logging.WARNING if reason == "forbidden" else logging.ERROR
        log.log(level, "case %d: Telegram refused the answer (%s: %s); not retrying", case_id, reason, exc)
        cases.mark_undeliverable(session=session, case_id=case_id, reason=reason)
        session.commit()
        DELIVERIES.labels(outcome=reason).inc()
        return reason
    session.rollback()
    wait_s = _retry_after_s(exc) if isinstance(exc, RetryAfter) else None
    cases.release_delivery(session=session, case_id=case_id, wait_s=wait_s)
    session.commit()
    if wait_s is not None:
        DELIVERIES.labels(outcome="retry_after").inc()
        countdown = wait_s + random.uniform(0, 1)  # after the row's not-before time, or the claim refuses
        log.warning("case %d: Telegram flood control, retrying in %.0f s as asked", case_id, countdown)
        # Waiting as told is not a failure: it does not count against the retry budget.
        raise task.retry(countdown=countdown, exc=exc, max_retries=None)
    if isinstance(exc, InvalidToken):
        log.error("case %d: Telegram rejected the bot token; fix TELEGRAM_BOT_TOKEN", case_id)
    elif isinstance(exc, NetworkError | TelegramError | StorageError | OperationalError):
        log.warning("case %d: sending failed (%s); retrying", case_id, type(exc).__name__)
    else:
        raise exc
    DELIVERIES.labels(outcome="retry").inc()
    return _retry_delivery(task, case_id, exc, countdown=backoff_s(task.request.retries, base=2.0))


def _retry_delivery(task: Any, case_id: int, exc: BaseException, *, countdown: float) -> str:
    if task.request.retries >= MAX_DELIVERY_RETRIES:
        log.error("case %d: giving up sending for now (%s); the sweeper tries again", case_id, type(exc).__name__)
        return "retry_later"
    raise task.retry(countdown=countdown, exc=exc)


@shared_task(name=OUTBOX_TASK, bind=True, acks_late=True, max_retries=None, ignore_result=True)
def send_outbox(self: Any, message_id: int) -> str:
    """Send an outbox message (a clinician's review or words, the booking question) to a patient, at most once."""
    settings = get_settings()
    from bot.delivery import send_outbox_message

    with _sessions(settings) as session:
        message = cases.claim_outbox(session=session, message_id=message_id)
        if message is None:
            return "skipped"
        try:
            _, text = run_with_bot(settings, lambda bot: send_outbox_message(bot, message=message))
        except (Forbidden, BadRequest) as exc:
            cases.mark_outbox_failed(session=session, message_id=message_id, error=f"{type(exc).__name__}: {exc}")
            session.commit()
            DELIVERIES.labels(outcome="outbox_refused").inc()
            return "refused"
        except RetryAfter as exc:
            wait_s = _retry_after_s(exc)
            cases.release_outbox(session=session, message_id=message_id, error="flood control", wait_s=wait_s)
            session.commit()
            raise self.retry(countdown=wait_s + random.uniform(0, 1), exc=exc, max_retries=None) from exc
        except (TelegramError, StorageError, OperationalError) as exc:
            session.rollback()
            cases.release_outbox(session=session, message_id=message_id, error=type(exc).__name__)
            session.commit()
            return _retry_delivery(self, message_id, exc, countdown=backoff_s(self.request.retries, base=2.0))
        cases.mark_outbox_sent(session=session, message_id=message_id, text=text)
        session.commit()
    DELIVERIES.labels(outcome="outbox_sent").inc()
    return "sent"


# --- periodic jobs --------------------------------------------------------------------------


@shared_task(name=SWEEP_TASK, ignore_result=True)
def sweep() -> dict[str, int]:
    """Re-enqueue cases and messages lost between steps (see worker.sweeper)."""
    return sweeper.sweep_once(settings=get_settings()).as_dict()


@shared_task(name=BOOKING_TASK, ignore_result=True)
def ask_booking() -> int:
    """Queue the booking question for HIGH answers old enough (see worker.booking); returns questions queued."""
    return booking.ask_once(settings=get_settings())


@shared_task(name=PURGE_TASK, ignore_result=True)
def purge_images() -> int:
    """Delete images past the retention period, keeping the case records."""
    settings = get_settings()
    return retention.purge_once(settings=settings, store=_store(settings))
