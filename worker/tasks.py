"""Celery tasks: analyse a case, send its answer, send operator follow-ups, and the periodic jobs.

Every task takes a row id and re-reads the row; the row, not the message, says what is left to do,
so a redelivered or duplicated job (acks_late) does nothing twice:
  - claiming a case for processing and claiming its reply are single conditional UPDATEs, each committed
    in its own unit of work (`sessionmaker.begin()`) before the work it claims;
  - a case that is already finished only gets its delivery (re)enqueued, and delivery is claimed.
Each task has one error boundary, where worker.failures says what an exception means:
  - triage (`classify`): a bad photo is a RETAKE result, never a retry; a bug the photo triggers fails the
    case; the database or the image store away is retried with backoff, no attempt used; an infrastructure
    failure (the models failing on this worker) hands the case back without using an attempt and counts
    towards this worker turning unhealthy (worker.health), which stops it taking jobs. The attempt cap in
    cases.claim_for_processing ends a job that keeps killing its worker, and the patient is told.
    A case the models fail on MAX_CASE_INFRA_FAILURES times, on whichever workers (cases.infra_failures),
    fails and the patient is told.
  - the two send tasks (`send_failure`, one table for answers and outbox messages): a refusal is recorded
    and never retried, flood control is waited out as Telegram says, anything transient becomes a
    TransientError that Celery retries with backoff (the tasks' declared autoretry options); a message the
    patient deleted on its way (/delete: AnswerWithdrawn) is not sent, or not sent further.
An answer Telegram took is recorded before anything else (_record_sent); while the database is away, a new job
carries the record, never a second send.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery import shared_task
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from skintriage import cases
from skintriage import reminders as recheck
from skintriage.db import session_factory
from skintriage.exceptions import AnswerWithdrawn, ImageNotFound, TransientError
from skintriage.models import Case, CaseStatus, OutboxMessage
from skintriage.observability import CASES, DELIVERIES, INFERENCE, QUEUE_WAIT
from skintriage.settings import Settings, get_settings
from skintriage.storage import ImageStore, make_store
from skintriage.vocabulary import Label, Tier
from worker import booking, enqueue, health, pipeline_cache, reminders, retention, sweeper
from worker.celery_app import (
    BOOKING_TASK,
    DELIVER_TASK,
    OUTBOX_TASK,
    PURGE_TASK,
    REMINDER_TASK,
    SWEEP_TASK,
    TRIAGE_TASK,
)
from worker.failures import Failure, Send, SendFailure, classify, send_failure
from worker.telegram_session import run_with_bot

if TYPE_CHECKING:
    from ml.triage.result import TriageResult

log = logging.getLogger(__name__)

MAX_TRANSIENT_RETRIES = 8  # about 20 minutes of backoff; then the sweeper takes over
MAX_MODEL_RETRIES = 6  # while MODEL_DIR has no trusted model; then the sweeper takes over
MAX_INFRA_RETRIES = 8  # while the models fail on the workers that run it; then the sweeper takes over
UNHEALTHY_HAND_BACK_S = 2.0  # an unhealthy worker hands a job back this soon, for a healthy worker
MAX_DELIVERY_RETRIES = 6
# How long a worker keeps trying to record an answer Telegram took while the database is away, before handing the
# record to a new job. Below the delivery claim's lease (cases.claim_delivery, 120 s): no one resends meanwhile.
RECORD_SENT_FOR_S = 60.0
BACKOFF_BASE_S = 5.0
BACKOFF_MAX_S = 300.0

# The send tasks' retries, declared to Celery: a TransientError is retried after 2 * 2**retries s at most
# (full jitter, capped), MAX_DELIVERY_RETRIES times; then the job ends and the sweeper sends later. The triage
# task counts its retries itself: they have four causes with their own caps, and an unhealthy worker's hand-back
# must never run out.
SEND_RETRIES: dict[str, Any] = {
    "autoretry_for": (TransientError,),
    "max_retries": MAX_DELIVERY_RETRIES,
    "retry_backoff": 2,
    "retry_backoff_max": int(BACKOFF_MAX_S),
    "retry_jitter": True,
}


def backoff_s(retries: int, *, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_MAX_S) -> float:
    """Exponential backoff with full jitter: base * 2**retries seconds at most, capped."""
    return random.uniform(base / 2, min(cap, base * 2**retries))


def _sessions(settings: Settings) -> sessionmaker[Session]:
    return session_factory(settings.resolved_database_url)


_stores: dict[tuple[Any, ...], ImageStore] = {}
_stores_lock = threading.Lock()


def _store(settings: Settings) -> ImageStore:
    key = (settings.image_store, str(settings.data_dir.resolve()), settings.s3_endpoint_url, settings.s3_bucket)
    with _stores_lock:
        if key not in _stores:
            _stores[key] = make_store(settings)
        return _stores[key]


def _record(settings: Settings, case_id: int, write: Callable[[Session], None], *, otherwise: str) -> None:
    """A bookkeeping write made while a failure is handled: a database error is logged, not raised over it."""
    try:
        with _sessions(settings).begin() as session:
            write(session)
    except SQLAlchemyError as exc:
        log.warning("case %d: could not record it (%s); %s", case_id, type(exc).__name__, otherwise)


# --- triage ---------------------------------------------------------------------------------


@dataclass
class _Job:
    """How far a triage job got, for its error boundary (_triage_failed)."""

    case_id: int
    owner: str | None = None  # this worker's name on the case, once claimed
    in_pipeline: bool = False  # the pipeline is running on the photo


@shared_task(name=TRIAGE_TASK, bind=True, acks_late=True, max_retries=None, ignore_result=True)
def triage_case(self: Any, case_id: int) -> str:
    """Analyse one case and enqueue its answer; safe to run any number of times for the same case."""
    settings = get_settings()
    if not health.state.healthy:
        return _hand_back_unhealthy(self, case_id)
    job = _Job(case_id)
    try:
        pipeline = pipeline_cache.get_pipeline(settings)
        with _sessions(settings).begin() as session:
            claim = cases.claim_for_processing(
                session=session,
                case_id=case_id,
                max_attempts=settings.max_attempts,
                stale_after_s=settings.stuck_after_s,
            )
        if claim.outcome == cases.Claim.CLAIMED:
            job.owner = claim.case.processing_owner
            with health.state.job(case_id):
                return _process(job, claim.case, settings=settings, pipeline=pipeline)
    except Exception as exc:  # noqa: BLE001 - the task's one boundary: _triage_failed sorts every failure
        return _triage_failed(self, job, exc, settings=settings)
    return _not_claimed(self, case_id, claim, settings=settings)


def _not_claimed(task: Any, case_id: int, claim: cases.ClaimResult, *, settings: Settings) -> str:
    """A case this job could not claim: gone, held by a live worker, finished, or out of attempts."""
    outcome = claim.outcome
    if outcome == cases.Claim.MISSING:
        log.info("case %d no longer exists; nothing to do", case_id)
        return "missing"
    case = claim.case
    if outcome == cases.Claim.BUSY:
        if task.request.retries >= MAX_TRANSIENT_RETRIES:
            log.info("case %d still held by %s; the sweeper will check it", case.id, case.processing_owner)
            return "busy"
        countdown = min(max(settings.stuck_after_s / 4, 5.0), 120.0)
        raise task.retry(countdown=countdown)
    if outcome == cases.Claim.EXHAUSTED:
        log.error("case %d failed after %d attempts; telling the patient", case.id, settings.max_attempts)
        CASES.labels(status=CaseStatus.FAILED, tier="").inc()
    # FINISHED or EXHAUSTED: the answer may not have gone out yet (the sender is idempotent).
    if case.delivered_at is None:
        enqueue.enqueue_delivery(case.id)
    return outcome.value


def _photo(store: ImageStore, key: str | None) -> bytes | None:
    """The case's photo, or None when it was deleted (retention or the patient's /delete) before the analysis."""
    try:
        return store.get(key) if key else None
    except ImageNotFound:
        return None


def _process(job: _Job, case: Case, *, settings: Settings, pipeline: Any) -> str:
    """Run the pipeline on a claimed case, store the images and the result, enqueue the answer."""
    case_id = case.id
    if case.queued_at is not None and case.started_at is not None:
        QUEUE_WAIT.observe(max((case.started_at - case.queued_at).total_seconds(), 0.0))
    store = _store(settings)
    image = _photo(store, case.image_key)
    if image is None:
        return _fail(settings, case_id, "image_missing", owner=job.owner)

    started = time.monotonic()
    job.in_pipeline = True
    result = pipeline.run(image)
    job.in_pipeline = False
    elapsed = time.monotonic() - started
    INFERENCE.observe(elapsed)
    health.state.record_success()

    stored = _case_result(result, store=store, settings=settings, total_ms=elapsed * 1000)
    with _sessions(settings).begin() as session:
        saved = cases.save_result(session=session, case_id=case_id, result=stored, owner=job.owner)
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
    elif _remove_images_of_deleted(settings, store, case_id, stored):
        return "deleted"
    else:
        log.info("case %d was finished by another worker; keeping its result", case_id)
    enqueue.enqueue_delivery(case_id)
    return str(stored.status)


def _remove_images_of_deleted(settings: Settings, store: ImageStore, case_id: int, result: cases.CaseResult) -> bool:
    """True when the patient deleted the case during its analysis; the images just written for it are removed.

    Keys are content-addressed: one that another case names is kept.
    """
    with _sessions(settings).begin() as session:
        if cases.case_exists(session=session, case_id=case_id):
            return False
        written = [key for key in (result.mask_key, result.overlay_key, result.heatmap_key) if key]
        unreferenced = sorted(cases.unreferenced_image_keys(session=session, keys=written))
    for key in unreferenced:
        store.delete(key)
    log.info("case %d was deleted while it was analysed; no answer, its new images removed", case_id)
    return True


def _triage_failed(task: Any, job: _Job, exc: Exception, *, settings: Settings) -> str:
    """The triage task's error boundary: what `exc` means for the case (worker.failures.classify)."""
    failure = classify(exc)
    worker_fault = failure in (Failure.TRANSIENT, Failure.INFRASTRUCTURE)
    if job.in_pipeline and not worker_fault:
        # Not a photo the pipeline could refuse (those come back as RETAKE): a bug this photo triggers.
        log.error("pipeline failed on case %d; the case fails and the patient is told", job.case_id, exc_info=exc)
        return _fail(settings, job.case_id, "pipeline_error", owner=job.owner)
    if job.owner is not None and worker_fault:
        _release(settings, job.case_id, owner=job.owner, infra=failure is Failure.INFRASTRUCTURE)
    if failure is Failure.MODEL_MISSING:
        return _models_unavailable(task, job.case_id, settings, exc)
    if failure is Failure.TRANSIENT:
        return _retry_transient(task, job.case_id, exc)
    if failure is Failure.INFRASTRUCTURE:
        return _infrastructure_failed(task, job.case_id, settings, exc)
    raise exc


def _fail(settings: Settings, case_id: int, error_code: str, *, owner: str | None) -> str:
    """Fail a case this worker holds and enqueue the answer; a case taken over meanwhile is left to its new owner."""
    with _sessions(settings).begin() as session:
        failed = cases.mark_failed(session=session, case_id=case_id, error_code=error_code, owner=owner)
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
        prob_mel=probs.get(Label.MEL),
        prob_nv=probs.get(Label.NV),
        prob_other=probs.get(Label.OTHER),
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
    """Why the result has its tier (ml.triage.policy REASON_*), for the patient's answer; None for RETAKE or unknown.

    The pipeline's result may carry the reason itself; otherwise the policy is asked again with the same
    probabilities, threshold, settings and gate flags. It is deterministic, so it gives the same tier; if it
    does not (a pipeline that decides differently), no reason is claimed.
    """
    from ml.triage.policy import decide_tier
    from ml.triage.quality import UNSURE_FLAGS

    own = getattr(result, "tier_reason", None) or getattr(result, "reason", None)
    if own:
        return str(own)
    if not result.probabilities or not result.mel_threshold or str(result.tier) == Tier.RETAKE:
        return None
    decision = decide_tier(
        result.probabilities,
        mel_threshold=result.mel_threshold,
        config=pipeline_cache.policy_from_settings(settings),
        gate_unsure=any(flag in UNSURE_FLAGS for flag in result.quality_flags or []),
    )
    return decision.reason if str(decision.tier) == str(result.tier) else None


def _release(settings: Settings, case_id: int, *, owner: str, infra: bool = False) -> None:
    """Give the case back after a transient or infrastructure error without using up one of its attempts.

    `infra`: the models failed on it; counted on the case (cases.infra_failures, see _failed_after_infra_failures).
    """
    _record(
        settings,
        case_id,
        lambda session: cases.release_for_retry(
            session=session, case_id=case_id, owner=owner, refund_attempt=True, infra_failure=infra
        ),
        otherwise="it is retried once its claim is stale",
    )


def _mark_queued(settings: Settings, case_id: int) -> None:
    """A fresh queued_at while the job waits to retry, so the sweeper adds no duplicate meanwhile."""
    _record(
        settings,
        case_id,
        lambda session: cases.mark_queued(session=session, case_id=case_id),
        otherwise="the sweeper may enqueue a duplicate job, which does nothing twice",
    )


def _retry_transient(task: Any, case_id: int, exc: BaseException) -> str:
    retries = task.request.retries
    if retries >= MAX_TRANSIENT_RETRIES:
        log.error("case %d: giving up retrying %s; the sweeper re-enqueues it later", case_id, type(exc).__name__)
        return "transient_error"
    countdown = backoff_s(retries)
    log.warning("case %d: transient %s, retry %d in %.0f s", case_id, type(exc).__name__, retries + 1, countdown)
    raise task.retry(countdown=countdown, exc=exc)


def _infrastructure_failed(task: Any, case_id: int, settings: Settings, exc: BaseException) -> str:
    """The models failed on this worker: the case (released by _triage_failed) waits for a healthy worker."""
    log.error(
        "case %d: the models failed on this worker (%s: %s); the case goes back to the queue, its attempts untouched",
        case_id,
        type(exc).__name__,
        exc,
        exc_info=exc,
    )
    health.state.record_infrastructure_failure(exc)
    _mark_queued(settings, case_id)
    if _failed_after_infra_failures(settings, case_id):
        return "infrastructure_failures"
    if not health.state.healthy:
        return _hand_back_unhealthy(task, case_id)
    retries = task.request.retries
    if retries >= MAX_INFRA_RETRIES:
        log.error("case %d: giving up retrying for now; the sweeper re-enqueues it later", case_id)
        return "infrastructure_error"
    raise task.retry(countdown=backoff_s(retries), exc=exc)


def _failed_after_infra_failures(settings: Settings, case_id: int) -> bool:
    """End a case the models failed on MAX_CASE_INFRA_FAILURES times, on whichever workers, and tell the patient."""
    cap = settings.max_case_infra_failures
    if cap <= 0:
        return False
    try:
        with _sessions(settings).begin() as session:
            failed = cases.fail_after_infra_failures(session=session, case_id=case_id, max_failures=cap)
    except SQLAlchemyError as exc:
        log.warning("case %d: could not check its infrastructure failures (%s); checked again next time", case_id,
                    type(exc).__name__)  # fmt: skip
        return False
    if failed:
        log.error("case %d: the models failed on it %d times; it fails and the patient is told", case_id, cap)
        CASES.labels(status=CaseStatus.FAILED, tier="").inc()
        enqueue.enqueue_delivery(case_id)
    return failed


def _hand_back_unhealthy(task: Any, case_id: int) -> str:
    """Put the job back on the queue for a healthy worker (this one has stopped consuming it)."""
    log.warning("case %d: this worker is unhealthy (%s); job handed back", case_id, health.state.unhealthy_reason)
    raise task.retry(countdown=UNHEALTHY_HAND_BACK_S, max_retries=None)


def hand_back_hung(case_id: int, *, settings: Settings) -> None:
    """The watchdog's action on a job past JOB_DEADLINE_S: release its case and enqueue it for another worker.

    The attempt stays counted (a photo that hangs every worker is ended by the attempt cap); if the hung job
    ever finishes, its result is refused because the case is no longer its own (cases.save_result).
    """
    with _sessions(settings).begin() as session:
        cases.release_for_retry(session=session, case_id=case_id)
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
    _mark_queued(settings, case_id)
    retries = task.request.retries
    if retries >= MAX_MODEL_RETRIES:
        return "model_unavailable"
    raise task.retry(countdown=backoff_s(retries, base=10.0))


# --- delivery -------------------------------------------------------------------------------


@dataclass
class _Outgoing:
    """What a send task sends, for its error boundary (_send_failed)."""

    subject: str  # for the logs: "case 12", "outbox message 7"
    what: str  # "the answer", "the message"
    withdrawn: str  # for the log when the patient's /delete stopped it on its way
    metric_prefix: str  # DELIVERIES outcome labels: "" for answers, "outbox_" for outbox messages
    give_up: Callable[[Session, SendFailure, Exception], None]  # record that Telegram refused it for good, and why
    release: Callable[[Session, SendFailure, Exception], None]  # let a later attempt send it (after any wait)
    sending: bool = False  # the send to Telegram (with the claim held) is under way


def _answer_outgoing(case_id: int) -> _Outgoing:
    return _Outgoing(
        subject=f"case {case_id}",
        what="the answer",
        withdrawn="deleted by the patient; the rest of its answer is not sent",
        metric_prefix="",
        give_up=lambda session, failure, _: cases.mark_undeliverable(
            session=session, case_id=case_id, reason=failure.reason
        ),
        release=lambda session, failure, _: cases.release_delivery(
            session=session, case_id=case_id, wait_s=failure.wait_s
        ),
    )


def _outbox_outgoing(message_id: int) -> _Outgoing:
    return _Outgoing(
        subject=f"outbox message {message_id}",
        what="the message",
        withdrawn="deleted with its patient's data; not sent",
        metric_prefix="outbox_",
        give_up=lambda session, failure, exc: cases.mark_outbox_failed(
            session=session, message_id=message_id, error=f"{type(exc).__name__}: {exc}"
        ),
        release=lambda session, failure, exc: cases.release_outbox(
            session=session,
            message_id=message_id,
            error="flood control" if failure.action is Send.WAIT else type(exc).__name__,
            wait_s=failure.wait_s,
        ),
    )


@shared_task(name=DELIVER_TASK, bind=True, acks_late=True, ignore_result=True, **SEND_RETRIES)
def deliver_case(self: Any, case_id: int, sent: list[Any] | None = None) -> str:
    """Send a finished case's answer to the patient, at most once (an album of photos gets one answer).

    `sent` ([answer case id, message id, text, told tier]): the answer went out but could not be recorded (the
    database was away); this job only records it.
    """
    settings = get_settings()
    sessions = _sessions(settings)
    if sent is not None:
        return _record_sent_later(self, sessions, case_id, sent)
    outgoing = _answer_outgoing(case_id)
    try:
        with sessions.begin() as session:
            plan = _answer_plan(session, case_id)
        if isinstance(plan, str):
            return plan
        outgoing = _answer_outgoing(plan.case_id)
        if plan.sent:
            # A retried job whose first run sent the answer but failed before checking the patient's answers.
            _queue_answers_followup(sessions, settings, plan.case_id)
            return "skipped"
        with sessions.begin() as session:
            claimed = cases.claim_delivery(session=session, case_id=plan.case_id) is not None
        if not claimed:
            log.debug("case %d: answer already sent or being sent", plan.case_id)
            return "skipped"
        outgoing.sending = True
        answer = _send_answer(settings, sessions, plan)
        outgoing.sending = False
        if answer is None:
            return "missing"
        message_id, text, told = answer
        # Telegram has the answer: record that first, before anything else can fail.
        if not _record_sent(sessions, plan.case_id, message_id=message_id, text=text, told=told):
            return _hand_record_on(self, case_id, [plan.case_id, message_id, text, told])
        DELIVERIES.labels(outcome="sent").inc()
        log.info("case %d: answer sent", plan.case_id, extra={"case_id": plan.case_id})
        with sessions.begin() as session:
            case = session.get(Case, plan.case_id)
            if case is None:
                return "sent"  # deleted by the patient just after it went out
            cases.mark_answered_with(
                session=session, case_ids=[i for i in plan.album if i != plan.case_id], answer=case
            )
            # With the answer's album: offer a re-check reminder after LOW and MEDIUM (a retried job, which finds
            # the answer sent, offers nothing, so it is never offered twice).
            offer = recheck.queue_offer(
                session=session, case=case, told_tier=told, every_months=settings.recheck_reminder_months
            )
            offer_id = offer.id if offer is not None else None
        _queue_answers_followup(sessions, settings, plan.case_id)
        if offer_id is not None:
            enqueue.enqueue_outbox(offer_id)  # False: the sweeper sends it
    except Exception as exc:  # noqa: BLE001 - the task's one boundary: _send_failed sorts every failure
        return _send_failed(self, exc, outgoing=outgoing, settings=settings)
    return "sent"


@dataclass(frozen=True)
class _AnswerPlan:
    """Which case's answer a delivery job sends: that case, its album's case ids, whether to say "see a doctor"."""

    case_id: int
    album: list[int]
    refused_before: bool
    sent: bool  # sent already (this job is a sibling's, or a redelivery)


def _answer_plan(session: Session, case_id: int) -> str | _AnswerPlan:
    """Which case's answer to send for `case_id`, or why nothing is sent ("missing", "waiting_for_album").

    Photos sent together (one Telegram album) are one spot: the answer waits until every photo is finished,
    then the most urgent one is sent once, naming the others. The answer to a refused photo says to see a
    doctor when the patient's previous photo was refused too (or two photos of the album were). An answer
    sent already is recorded on every photo of its album.
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
        cases.mark_answered_with(
            session=session, case_ids=[c.id for c in album if c.delivered_at is None], answer=answer
        )
    return _AnswerPlan(answer.id, album_ids, refused_before, sent=answer.delivered_at is not None)


def _case_exists(sessions: sessionmaker[Session], case_id: int) -> bool:
    """Whether the case is still there (the patient's /delete removes it), read in a unit of work of its own."""
    with sessions.begin() as session:
        return cases.case_exists(session=session, case_id=case_id)


def _send_answer(
    settings: Settings, sessions: sessionmaker[Session], plan: _AnswerPlan
) -> tuple[int | None, str, str | None] | None:
    """Compose and send a claimed answer: (first message id, text, tier told), or None when the case is gone.

    Raises AnswerWithdrawn when the patient deletes the case while its answer is on its way: what is not out
    yet is not sent.
    """
    from bot.answers import told_tier
    from bot.delivery import deliver_case as send_answer

    store = _store(settings)

    def still_wanted() -> bool:
        return _case_exists(sessions, plan.case_id)

    def first_sent(message_id: int) -> None:
        # The photo is out; if its follow-up fails, the retry must not send the photo again.
        try:
            with sessions.begin() as session:
                recorded = cases.mark_reply_started(session=session, case_id=plan.case_id, message_id=message_id)
        except SQLAlchemyError as exc:
            if classify(exc) is not Failure.TRANSIENT:
                raise
            # The database is away: the answer's record (_record_sent) names the photo too.
            log.warning("case %d: its photo is out, not recorded yet (%s)", plan.case_id, type(exc).__name__)
            return
        if not recorded and not still_wanted():
            raise AnswerWithdrawn(f"case {plan.case_id} was deleted while its answer was on its way")

    # A read held while the answer is composed and sent (its rows load as it is composed). It writes nothing and
    # ends without a commit; the database going away during the send must not lose what Telegram took, so a
    # transient error in ending it is only logged (the answer's record, _record_sent, retries on its own).
    session = sessions()
    try:
        case = cases.get_case(session=session, case_id=plan.case_id)
        if case is None:
            return None
        told = told_tier(case)  # the case as composed: the patient's answers as they are now
        message_id, text = run_with_bot(
            settings,
            lambda bot: send_answer(
                bot, case=case, store=store, on_first_sent=first_sent, refused_before=plan.refused_before,
                album=plan.album, still_wanted=still_wanted,
            ),
        )  # fmt: skip
    finally:
        try:
            session.close()
        except SQLAlchemyError as exc:
            if classify(exc) is not Failure.TRANSIENT:
                raise
            log.warning("case %d: the database went away while its answer was sent (%s)", plan.case_id,
                        type(exc).__name__)  # fmt: skip
    return message_id, text, told


def _record_sent(
    sessions: sessionmaker[Session], case_id: int, *, message_id: int | None, text: str, told: str | None
) -> bool:
    """Record an answer Telegram took; while the database is away, keep trying for RECORD_SENT_FOR_S (False then).

    Until it is recorded, a second send would be a duplicate; the delivery claim keeps other jobs from sending.
    """
    deadline = time.monotonic() + RECORD_SENT_FOR_S
    pause = 0.5
    while True:
        try:
            with sessions.begin() as session:
                cases.mark_delivered(session=session, case_id=case_id, message_id=message_id, text=text, told_tier=told)
            return True
        except SQLAlchemyError as exc:
            if classify(exc) is not Failure.TRANSIENT:
                raise
            if time.monotonic() + pause > deadline:
                return False
            log.warning("case %d: answer sent, not recorded yet (%s); trying again", case_id, type(exc).__name__)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def _hand_record_on(task: Any, case_id: int, sent: list[Any]) -> str:
    """The answer went out and the database stayed away: a new job carries the record (not a second send).

    A new job, not a retry: the record must not run out of the send tasks' retries (SEND_RETRIES), or the
    claim would expire and the sweeper would send the answer a second time.
    """
    log.error("case %d: answer sent, the database is still away; a new job records it", sent[0])
    task.apply_async(args=[case_id], kwargs={"sent": sent}, countdown=BACKOFF_BASE_S)
    return "record_handed_on"


def _record_sent_later(task: Any, sessions: sessionmaker[Session], case_id: int, sent: list[Any]) -> str:
    """Record an answer an earlier job sent, then let a normal job finish the album and the follow-up."""
    answer_id, message_id, text, told = sent
    if not _record_sent(sessions, answer_id, message_id=message_id, text=text, told=told):
        return _hand_record_on(task, case_id, sent)
    log.info("case %d: answer sent earlier, now recorded", answer_id)
    enqueue.enqueue_delivery(case_id)  # marks the album's other photos and checks the patient's later answers
    return "recorded"


def _queue_answers_followup(sessions: sessionmaker[Session], settings: Settings, case_id: int) -> None:
    """A follow-up for answers the patient tapped while the answer was being sent (see questions in bot/)."""
    from bot.answers import queue_answers_followup
    from bot.i18n import load_texts

    with sessions.begin() as session:  # the answers as they are now, not as they were when the answer was composed
        case = cases.get_case(session=session, case_id=case_id)
        texts = load_texts(settings.guidance_file)
        message_id = queue_answers_followup(session=session, case=case, texts=texts) if case else None
    if message_id is not None:
        log.info("case %d: a later answer raised the urgency; follow-up %d queued", case_id, message_id)
        enqueue.enqueue_outbox(message_id)  # False: the sweeper sends it


@shared_task(name=OUTBOX_TASK, bind=True, acks_late=True, ignore_result=True, **SEND_RETRIES)
def send_outbox(self: Any, message_id: int) -> str:
    """Send an outbox message (a clinician's review or words, the booking question) to a patient, at most once."""
    from bot.delivery import send_outbox_message

    settings = get_settings()
    sessions = _sessions(settings)
    outgoing = _outbox_outgoing(message_id)

    def still_wanted() -> bool:
        with sessions.begin() as check:
            return cases.outbox_message_exists(session=check, message_id=message_id)

    try:
        with sessions.begin() as session:
            claimed = cases.claim_outbox(session=session, message_id=message_id) is not None
        if not claimed:
            return "skipped"
        with sessions.begin() as session:
            message = session.get(OutboxMessage, message_id)
            if message is None:
                return "missing"
            outgoing.sending = True
            _, text = run_with_bot(
                settings, lambda bot: send_outbox_message(bot, message=message, still_wanted=still_wanted)
            )
            outgoing.sending = False
        with sessions.begin() as session:
            cases.mark_outbox_sent(session=session, message_id=message_id, text=text)
    except Exception as exc:  # noqa: BLE001 - the task's one boundary: _send_failed sorts every failure
        return _send_failed(self, exc, outgoing=outgoing, settings=settings)
    DELIVERIES.labels(outcome="outbox_sent").inc()
    return "sent"


def _send_failed(task: Any, exc: Exception, *, outgoing: _Outgoing, settings: Settings) -> str:
    """The send tasks' error boundary: give up for good, wait as Telegram says, or retry (worker.failures.send_failure).

    Only a failure of the send itself touches the row: a refusal is recorded, anything else releases the claim
    for the retry. A database error around the send leaves the claim to expire, so a sent message is not sent
    again at once. A message the patient deleted on its way is gone with its row: nothing is recorded.
    """
    failure = send_failure(exc)
    if failure is None:
        raise exc  # a bug, not a send failure
    subject, label = outgoing.subject, outgoing.metric_prefix
    if failure.action is Send.WITHDRAWN:
        log.info("%s: %s", subject, outgoing.withdrawn)
        DELIVERIES.labels(outcome=label + failure.reason).inc()
        return failure.reason
    if outgoing.sending:
        with _sessions(settings).begin() as session:
            if failure.action is Send.REFUSED:
                outgoing.give_up(session, failure, exc)
            else:
                outgoing.release(session, failure, exc)
    if failure.action is Send.REFUSED:
        # Blocked bot or deleted chat (a BadRequest here means even the plain-text version was refused): retrying
        # cannot help. A patient who blocked the bot chose so; anything else needs a person to look.
        level = logging.WARNING if failure.reason == "forbidden" else logging.ERROR
        log.log(level, "%s: Telegram refused %s (%s: %s); not retrying", subject, outgoing.what, failure.reason, exc)
        DELIVERIES.labels(outcome=label + failure.reason).inc()
        return failure.reason
    out_of_retries = task.request.retries >= task.max_retries
    if failure.action is Send.WAIT:
        DELIVERIES.labels(outcome=label + "retry_after").inc()
        if out_of_retries:
            log.error("%s: Telegram flood control; the sweeper sends it after the wait", subject)
            return "retry_later"
        # After the row's not-before time, or the claim refuses.
        countdown = (failure.wait_s or 0.0) + random.uniform(0, 1)
        log.warning("%s: Telegram flood control, retrying in %.0f s as asked", subject, countdown)
        raise task.retry(countdown=countdown, exc=exc)
    if failure.reason == "invalid_token":
        log.error("%s: Telegram rejected the bot token; fix TELEGRAM_BOT_TOKEN", subject)
    else:
        log.warning("%s: sending failed (%s); retrying", subject, type(exc).__name__)
    if outgoing.sending:
        DELIVERIES.labels(outcome=label + "retry").inc()
    if out_of_retries:
        log.error("%s: giving up sending for now (%s); the sweeper tries again", subject, type(exc).__name__)
    raise TransientError(f"{subject}: {failure.reason}") from exc  # retried by Celery (SEND_RETRIES)


# --- periodic jobs --------------------------------------------------------------------------


@shared_task(name=SWEEP_TASK, ignore_result=True)
def sweep() -> dict[str, int]:
    """Re-enqueue cases and messages lost between steps (see worker.sweeper)."""
    return sweeper.sweep_once(settings=get_settings()).as_dict()


@shared_task(name=BOOKING_TASK, ignore_result=True)
def ask_booking() -> int:
    """Queue the booking question for HIGH answers old enough (see worker.booking); returns questions queued."""
    return booking.ask_once(settings=get_settings())


@shared_task(name=REMINDER_TASK, ignore_result=True)
def send_reminders() -> int:
    """Queue the due re-check reminders (see worker.reminders); returns reminders queued."""
    return reminders.send_once(settings=get_settings())


@shared_task(name=PURGE_TASK, ignore_result=True)
def purge_images() -> int:
    """Delete images past the retention period, keeping the case records."""
    settings = get_settings()
    return retention.purge_once(settings=settings, store=_store(settings))
