"""Case list, review queue, CSV export, case detail, reviews and follow-up messages."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from babel import Locale, UnknownLocaleError
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

# The one use of the bot package: its composition of the patient's answer (pure text; nothing is sent).
from bot.answers import retell
from bot.i18n import load_texts
from console.auth import NotAuthenticated
from console.claims import REVIEWABLE_STATUSES, Claim, claim_case, live_claim, release_claim
from console.deps import DbId, current_operator, get_db, render, require_csrf
from console.export import cases_csv
from console.filters import (
    ALL_STATUSES,
    ALL_TIERS,
    CaseFilter,
    FilterError,
    lane_of,
    list_cases,
    model_versions_in_use,
    next_in_queue,
)
from console.pending import SESSION_KEY as PENDING_SESSION_KEY
from console.pending import keep_review
from console.reviews import (
    BOOKING_WORDS,
    MESSAGE_KINDS,
    SECOND_READ,
    URGENCIES,
    VERDICT_WORDS,
    ReviewInput,
    second_read_problem,
    validate_message,
    validate_review,
)
from ml.triage.policy import PolicyConfig
from ml.triage.red_flags import QUESTIONS, UNMAPPED, AnsweredTier, answered_tier
from skintriage.cases import audit
from skintriage.models import Case, CaseStatus, Operator, OutboxMessage, Review, utcnow
from skintriage.outbox import create_followup, create_review_message, enqueue_followup
from skintriage.reviews import record_review
from skintriage.settings import Settings
from skintriage.vocabulary import LABELS, Tier

router = APIRouter()

EARLIER_CASES_SHOWN = 8
# Earlier photos offered for the side-by-side comparison (newest first). Until cases are linked as photos of
# the same spot, every earlier case of the patient that still has its photo is a candidate.
COMPARE_CANDIDATES = 100
# The console's own language: a patient's answer in another language is also shown composed in this one.
CONSOLE_LANGUAGE = "en"


class CaseMissing(Exception):
    """No case with that number (deleted by the patient, or never existed)."""


def _language_name(code: str) -> str:
    try:
        return Locale.parse(code.replace("-", "_")).get_display_name("en") or code
    except (ValueError, UnknownLocaleError):
        return code


def _told_in_console_language(db: Session, case: Case, settings: Settings) -> str | None:
    """What the patient was told, composed again in English when they read another language; else None."""
    if not case.reply_text or case.language == CONSOLE_LANGUAGE:
        return None
    return retell(
        session=db, case=case, lang=CONSOLE_LANGUAGE, texts=load_texts(settings.guidance_file),
        review_promise_hours=settings.review_promise_hours,
    )  # fmt: skip


def _uncertain_band(case: Case, policy: PolicyConfig) -> tuple[float, float] | None:
    """P(MEL) from which the policy answers UNCERTAIN, up to the threshold where HIGH begins (ml.triage.policy)."""
    if case.mel_threshold is None:
        return None
    return max(case.mel_threshold - policy.uncertain_margin, 0.0), case.mel_threshold


# The questions asked with a new spot (ml.triage.red_flags.QUESTIONS), as the console names them.
QUESTION_WORDS = {
    "site": "Where on the body",
    "change": "New or changed in the last months",
    "symptoms": "Bleeds, itches, crusts or does not heal",
    "age": "Age",
}


def _patient_answers(case: Case) -> tuple[list[tuple[str, str]], AnsweredTier] | None:
    """The patient's answers as (question, answer) rows and the tier they give with the photo's; None unasked."""
    if case.patient_answers is None:
        return None
    answers = case.patient_answers
    rows = [(QUESTION_WORDS[q], answers.get(q, "not answered").replace("_", " ")) for q in QUESTIONS]
    photo_tier = {CaseStatus.DONE: case.tier, CaseStatus.REJECTED: Tier.RETAKE}.get(case.status)
    return rows, answered_tier(photo_tier, answers)


def _compare_candidates(db: Session, case: Case) -> list[Case]:
    """The patient's earlier cases that still have their photo, newest first: what the comparison offers."""
    return list(
        db.scalars(
            select(Case)
            .where(
                Case.user_id == case.user_id,
                Case.id != case.id,
                Case.received_at <= case.received_at,
                Case.image_key.is_not(None),
            )
            .order_by(Case.received_at.desc(), Case.id.desc())
            .limit(COMPARE_CANDIDATES)
        ).all()
    )


def _chosen(candidates: list[Case], compare: str | None) -> tuple[Case | None, str | None]:
    """The earlier case named by ?compare= among the candidates, or why it cannot be compared."""
    if not compare:
        return None, None
    if not compare.isdigit() or len(compare) > 10:
        return None, "compare must be the number of one of this patient's earlier cases."
    chosen = next((c for c in candidates if c.id == int(compare)), None)
    if chosen is None:
        return None, f"Case #{int(compare)} is not an earlier case of this patient with a photo; choose one below."
    return chosen, None


def _load_case(db: Session, case_id: int) -> Case:
    case = db.get(Case, case_id)
    if case is None:
        raise CaseMissing(case_id)
    return case


@router.get("/", include_in_schema=False)
def home(operator: Operator = Depends(current_operator)) -> RedirectResponse:
    """The console starts at the review queue."""
    return RedirectResponse("/cases?view=review", status_code=303)


@router.get("/cases", response_class=HTMLResponse)
def case_list(
    request: Request, operator: Operator = Depends(current_operator), db: Session = Depends(get_db)
) -> HTMLResponse:
    """The filtered case list (newest first) or the needs-review queue (riskiest first)."""
    try:
        filters = CaseFilter.from_query(request.query_params)
    except FilterError as exc:
        return render(request, "error.html", {"title": "Bad filter", "message": str(exc)}, status_code=400, db=db)
    if filters.second_read:
        filters = replace(filters, second_reader=operator.id)  # their own reviewed cases they cannot read blind
    page = list_cases(session=db, filters=filters)
    return render(
        request,
        "cases.html",
        {
            "filters": filters,
            "page": page,
            "tiers": ALL_TIERS,
            "statuses": ALL_STATUSES,
            "versions": model_versions_in_use(session=db),
            "now": utcnow(),
        },
        db=db,
    )


@router.get("/cases/export.csv")
def export_csv(
    request: Request, operator: Operator = Depends(current_operator), db: Session = Depends(get_db)
) -> Response:
    """Every case matching the filters (all pages) as CSV; the export is audited."""
    try:
        filters = CaseFilter.from_query(request.query_params)
    except FilterError as exc:
        return Response(str(exc), status_code=400, media_type="text/plain")
    cases = db.scalars(filters.statement()).all()
    body = cases_csv(session=db, cases=cases)
    audit(
        session=db,
        actor="operator",
        action="cases.exported",
        operator_id=operator.id,
        detail={"rows": len(cases), "filters": filters.query_string(page=1)},
    )
    db.commit()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="cases-{stamp}.csv"'},
    )


def _case_page(
    request: Request,
    db: Session,
    case: Case,
    *,
    errors: list[str] | None = None,
    form: ReviewInput | None = None,
    notice: str | None = None,
    claim: Claim | None = None,
    second_read: bool = False,
    blind_problem: str | None = None,
    candidates: list[Case] | None = None,
    compare: Case | None = None,
    compare_problem: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """Render the case page; with second_read, blinded: without the reviews and messages, which may tell the
    first reader's verdict, and with a form that saves a blinded second read; with compare, an earlier case's
    photo beside this one."""
    earlier = list(
        db.scalars(
            select(Case)
            .where(Case.user_id == case.user_id, Case.id != case.id, Case.received_at <= case.received_at)
            .order_by(Case.received_at.desc(), Case.id.desc())
            .limit(EARLIER_CASES_SHOWN)
        ).all()
    )
    later_count = len(
        db.scalars(select(Case.id).where(Case.user_id == case.user_id, Case.received_at > case.received_at)).all()
    )
    messages: list[OutboxMessage] = []
    reviews: list[Review] = []
    if not second_read:
        messages = list(
            db.scalars(
                select(OutboxMessage).where(OutboxMessage.case_id == case.id).order_by(OutboxMessage.created_at)
            ).all()
        )
        reviews = list(db.scalars(select(Review).where(Review.case_id == case.id).order_by(Review.created_at)).all())
    settings = request.app.state.settings
    return render(
        request,
        "case.html",
        {
            "case": case,
            "earlier": earlier,
            "later_count": later_count,
            "candidates": candidates if candidates is not None else _compare_candidates(db, case),
            "compare": compare,
            "compare_problem": compare_problem,
            "reviews": reviews,
            "messages": messages,
            "labels": LABELS,
            "urgencies": URGENCIES,
            "verdict_words": VERDICT_WORDS,
            "booking_words": BOOKING_WORDS,
            "message_kinds": MESSAGE_KINDS,
            "language_name": _language_name(case.user.language),
            "told_language_name": _language_name(case.language),
            "told_in_english": _told_in_console_language(db, case, settings),
            "mel_band": _uncertain_band(case, PolicyConfig.from_settings(settings)),
            "patient_answers": _patient_answers(case),
            "unmapped_items": UNMAPPED,
            "errors": errors or [],
            "form": form or ReviewInput(verdict=""),
            "notice": notice,
            "claim": claim if claim is not None else live_claim(case),
            "second_read": second_read,
            "blind_problem": blind_problem,
        },
        status_code=status_code,
        db=db,
    )


NOTICES = {
    "reviewed": "Review saved. The patient will be told in their language.",
    "resumed": "Your review, sent after your session had ended, was kept and is saved now. The patient will be told.",
    "sent": "Message queued for the patient.",
    "deferred": "Saved; the reply queue is unreachable, the patient's message will be sent when it is back.",
}
# After "Save and next" the page shows another case: say which case the review and message were for.
NOTICES_FOR_PREVIOUS = {
    "reviewed": "Its patient will be told in their language.",
    "resumed": "Its patient will be told in their language.",
    "sent": "Message queued for that case's patient.",
    "deferred": "The message for that case's patient will be sent when the reply queue is back.",
}


def _notice(notice: str | None, saved: str | None, *, queue_empty: bool) -> str | None:
    """The line shown above a case after a form was saved (on this case, or on `saved` before it)."""
    if notice not in NOTICES:
        return None
    if saved is not None and saved.isdigit() and len(saved) <= 10:
        parts = [f"Review of case #{saved} saved."]
        if notice in NOTICES_FOR_PREVIOUS:
            parts.append(NOTICES_FOR_PREVIOUS[notice])
        parts.append("This is the next case in the review queue.")
    else:
        parts = [NOTICES[notice]]
    if queue_empty:
        parts.append("The review queue is empty.")
    return " ".join(parts)


@router.get("/cases/{case_id}", response_class=HTMLResponse)
def case_detail(
    request: Request,
    case_id: DbId,
    notice: str | None = None,
    saved: str | None = None,
    queue: str | None = None,
    read: str | None = None,
    compare: str | None = None,
    operator: Operator = Depends(current_operator),
    db: Session = Depends(get_db),
) -> HTMLResponse:
    """Everything about one case; the view is audited. With read=second, blinded for a second read (unless this
    operator has seen the reviews already: then the ordinary page, saying why). With compare=N, case N's photo
    (an earlier case of the same patient) is shown beside this one."""
    case = _load_case(db, case_id)
    problem = second_read_problem(session=db, case=case, operator=operator) if read == SECOND_READ else None
    blinded = read == SECOND_READ and problem is None
    candidates = _compare_candidates(db, case)
    chosen, compare_problem = _chosen(candidates, compare)
    detail: dict[str, object] = {"read": SECOND_READ} if blinded else {}
    if chosen is not None:
        detail["compare"] = chosen.id
    audit(session=db, actor="operator", action="case.viewed", case_id=case.id, operator_id=operator.id, detail=detail)
    claim = None
    if case.status in REVIEWABLE_STATUSES and not case.reviews:
        # Opening an unreviewed case is starting to review it: hold it so colleagues pass it by.
        seconds = request.app.state.settings.console_review_claim_s
        claim = claim_case(session=db, case=case, operator=operator, seconds=seconds)
    db.commit()
    return _case_page(
        request,
        db,
        case,
        notice=_notice(notice, saved, queue_empty=queue == "empty"),
        claim=claim,
        second_read=blinded,
        blind_problem=problem,
        candidates=candidates,
        compare=chosen,
        compare_problem=compare_problem,
    )


@router.post("/cases/{case_id}/reviews", dependencies=[Depends(require_csrf)])
def submit_review(
    request: Request,
    case_id: DbId,
    verdict: str = Form(""),
    corrected_label: str = Form(""),
    urgency: str = Form(""),
    note: str = Form(""),
    message: str = Form(""),
    then: str = Form(""),
    read: str = Form(""),
    db: Session = Depends(get_db),
) -> Response:
    """Save a review (and queue the optional follow-up message to the patient); with then=next, open the
    case the review queue lists after this one ("Save and next"). A review that arrives after the session
    ended is kept and saved when the same operator logs in again."""
    form = ReviewInput(verdict, corrected_label, urgency, note, message, read)
    expired_operator_id = request.session.get("op")  # read before the session check may clear it
    try:
        operator = current_operator(request, db)
    except NotAuthenticated:
        if not isinstance(expired_operator_id, int):
            raise
        case = _load_case(db, case_id)
        token = keep_review(session=db, operator_id=expired_operator_id, case_id=case.id, form=form, then=then)
        db.commit()
        request.session[PENDING_SESSION_KEY] = token
        return RedirectResponse(f"/login?next=%2Fcases%2F{case.id}&kept={case.id}", status_code=303)
    return save_review(request, db, _load_case(db, case_id), operator, form, then=then)


def save_review(
    request: Request,
    db: Session,
    case: Case,
    operator: Operator,
    form: ReviewInput,
    *,
    then: str,
    resumed: bool = False,
) -> Response:
    """Validate and store a review, release the operator's claim, queue the message, and say where to go next."""
    errors = validate_review(form, case=case)
    problem = None
    if form.read == SECOND_READ:
        problem = second_read_problem(session=db, case=case, operator=operator)
        errors.extend([problem] if problem else [])
        then = ""  # a second read goes back to its case, which then shows both reads
    if errors:
        blinded = form.read == SECOND_READ and problem is None
        return _case_page(request, db, case, errors=errors, form=form, second_read=blinded, status_code=400)
    following = None
    if then == "next":
        following = next_in_queue(session=db, after=case.id, lane=lane_of(case), operator_id=operator.id)
    review = record_review(
        session=db,
        case=case,
        operator=operator,
        verdict=form.verdict,
        corrected_label=form.corrected_label,
        urgency=form.urgency,
        note=form.note,
        blinded=form.read == SECOND_READ,
    )
    release_claim(session=db, case=case, operator=operator)
    # The patient hears of every first review, with the reviewer's words when there are any (bot.followups).
    # A blinded second read measures agreement between reviewers; it stays in the console.
    outbox = None
    if form.read != SECOND_READ:
        outbox = create_review_message(session=db, case=case, operator=operator, review=review, words=form.message)
    db.commit()
    notice = "sent" if form.message.strip() and outbox else "resumed" if resumed else "reviewed"
    if outbox is not None and not enqueue_followup(outbox.id):
        notice = "deferred"
    if then != "next":
        return RedirectResponse(f"/cases/{case.id}?notice={notice}#reviews", status_code=303)
    if following is None:
        return RedirectResponse(f"/cases/{case.id}?notice={notice}&queue=empty#reviews", status_code=303)
    return RedirectResponse(f"/cases/{following}?notice={notice}&saved={case.id}", status_code=303)


@router.post("/cases/{case_id}/messages", dependencies=[Depends(require_csrf)])
def send_message(
    request: Request,
    case_id: DbId,
    message: str = Form(""),
    operator: Operator = Depends(current_operator),
    db: Session = Depends(get_db),
) -> Response:
    """Queue a follow-up message to the case's patient through the bot's reply queue."""
    case = _load_case(db, case_id)
    errors = validate_message(message)
    if errors:
        return _case_page(request, db, case, errors=errors, status_code=400)
    outbox = create_followup(session=db, case=case, operator=operator, text=message)
    db.commit()
    notice = "sent" if enqueue_followup(outbox.id) else "deferred"
    return RedirectResponse(f"/cases/{case.id}?notice={notice}#messages", status_code=303)
