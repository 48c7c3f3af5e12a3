"""Issue 12, the clinician's word reaches the patient: reviews and clinicians' words through the outbox, the
promise of a clinician's look (REVIEW_PROMISE_HOURS) and the booking question after a HIGH answer.

Through the real bot, the local Bot API server, the console's review service and the worker's real tasks.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.answers import compose, visible
from bot.followups import compose as compose_outbox
from bot.i18n import Texts
from console.operators import create_operator
from console.reviews import SECOND_READ, ReviewInput
from devtools.local_api import buttons
from skintriage import booking, cases
from skintriage.models import Case, CaseStatus, OutboxMessage, Review, User, utcnow
from skintriage.outbox import create_followup, create_review_message
from skintriage.reviews import record_review
from tests.bot.test_conversation import send_photo_and_wait_ack
from tests.bot.test_one_voice import deliver, finish
from tests.factories import lesion_photo

TEXTS = Texts.load()


def send_outbox(message_id: int) -> str:
    """Run the worker's send_outbox task here, as the reply queue would."""
    import worker.celery_app  # noqa: F401 - registers the tasks' app
    from worker.tasks import send_outbox as task

    return task.apply(args=[message_id]).result


def answered_case(h, user_id: int, *, tier: str, lang: str = "en", reason: str | None = None) -> int:
    """A photo sent through the bot, finished with `tier` and its answer delivered by the worker's task."""
    h.consent(user_id, lang)
    send_photo_and_wait_ack(h, user_id, lesion_photo(seed=user_id % 97), lang=lang)
    (case,) = h.cases(user_id)
    label = {"HIGH": "MEL", "LOW": "NV"}.get(tier, "MEL")
    finish(h, case.id, tier=tier, probs=(0.7, 0.2, 0.1) if label == "MEL" else (0.03, 0.9, 0.07), reason=reason)
    with h.session() as session:  # finish() stores NV; the label goes with the tier here
        session.get(Case, case.id).label = label
        session.commit()
    assert deliver(case.id) == "sent"
    return case.id


def review(h, case_id: int, form: ReviewInput, username: str = "rita") -> int:
    """Save a review as the console does (record, queue the patient's message, commit); the message's id."""
    with h.session() as session:
        operator = create_operator(session=session, username=username, password="reviewer-password-1")
        case = session.get(Case, case_id)
        saved = record_review(
            session=session,
            case=case,
            operator=operator,
            verdict=form.verdict,
            corrected_label=form.corrected_label,
            urgency=form.urgency,
            note=form.note,
            blinded=form.read == SECOND_READ,
        )
        message = create_review_message(session=session, case=case, operator=operator, review=saved, words=form.message)
        session.commit()
        return message.id


# --- a review reaches the patient -------------------------------------------------------------


@pytest.mark.slow
def test_a_disagreeing_review_reaches_a_korean_patient_in_korean_through_the_reply_queue(start_bot) -> None:
    h = start_bot()
    case_id = answered_case(h, 701, tier="HIGH", lang="ko")
    message_id = review(
        h, case_id, ReviewInput(verdict="disagree", corrected_label="OTHER", message="사진 <잘> 받았습니다")
    )
    since = h.patient.last_seq()

    assert send_outbox(message_id) == "sent"

    sent = h.patient.wait_for(701, lambda e: e["method"] == "sendMessage", since=since)
    assert sent["text"].split("\n\n") == [
        f"접수 번호 #{case_id}: 서비스 의료진이 보내 주신 사진을 확인했습니다. 이전 답변 대신 아래 안내를 따라 주세요.",
        h.expect("ko", "guidance.MEDIUM"),  # the corrected label's advice, in the bot's own words
        "서비스 의료진의 메시지: 사진 <잘> 받았습니다",
        h.expect("ko", "result.disclaimer"),
    ]
    with h.session() as session:
        message = session.get(OutboxMessage, message_id)
        assert message.sent_at is not None and message.sent_text == sent["text"]
    assert send_outbox(message_id) == "skipped"  # at most once
    assert len(h.patient.messages(701, since=since)) == 1


@pytest.mark.slow
def test_a_review_saved_in_the_console_reaches_the_patient_through_the_reply_queue(start_bot) -> None:
    """The whole way: the console's review form, the outbox, the worker's send_outbox, the patient's chat."""
    from fastapi.testclient import TestClient

    from console.app import create_app
    from tests.console.session_helpers import csrf_of, login

    h = start_bot()
    case_id = answered_case(h, 708, tier="HIGH")
    with h.session() as session:
        create_operator(session=session, username="rita", password="reviewer-password-1")
        session.commit()
    app = create_app(settings=h.settings, database_url=h.settings.resolved_database_url, store=h.services.store)
    with TestClient(app, follow_redirects=False) as console:
        assert login(console, "rita", "reviewer-password-1").status_code == 303
        token = csrf_of(console.get(f"/cases/{case_id}").text)
        response = console.post(f"/cases/{case_id}/reviews", data={"csrf_token": token, "verdict": "cannot_assess"})
        assert response.headers["location"] == f"/cases/{case_id}?notice=reviewed#reviews"
        with h.session() as session:
            (message,) = session.scalars(select(OutboxMessage)).all()
            assert (message.kind, message.text, message.sent_text) == ("review", "", None)
        since = h.patient.last_seq()

        assert send_outbox(message.id) == "sent"

        text = h.patient.wait_for(708, lambda e: e["method"] == "sendMessage", since=since)["text"]
        assert text.split("\n\n") == [
            f"Case #{case_id}: a clinician of the service has looked at your photo but could not assess the spot "
            "from it.",
            h.expect("en", "review.cannot_assess_advice"),
            h.expect("en", "result.disclaimer"),
        ]
        page = console.get(f"/cases/{case_id}").text
        assert "Review told to the patient" in page and "could not assess the spot" in page


@pytest.mark.slow
def test_the_review_is_composed_in_the_language_the_patient_has_when_it_is_sent(start_bot) -> None:
    h = start_bot()
    case_id = answered_case(h, 702, tier="HIGH", lang="en")
    message_id = review(h, case_id, ReviewInput(verdict="agree", urgency="urgent"))
    with h.session() as session:  # the patient switched to Korean after the review was saved
        cases.set_language(
            session=session, user=session.scalar(select(User).where(User.telegram_user_id == 702)), language="ko"
        )
        session.commit()
    since = h.patient.last_seq()

    assert send_outbox(message_id) == "sent"

    text = h.patient.wait_for(702, lambda e: e["method"] == "sendMessage", since=since)["text"]
    assert text.split("\n\n") == [
        f"접수 번호 #{case_id}: 서비스 의료진이 보내 주신 사진을 확인했습니다. 안내해 드린 내용에 동의합니다.",
        h.expect("ko", "review.urgency.urgent"),
        h.expect("ko", "result.disclaimer"),
    ]


def done(tier: str = "HIGH", reason: str | None = None, lang: str = "en") -> Case:
    return Case(id=9, status=CaseStatus.DONE, tier=tier, tier_reason=reason, label="MEL", language=lang)


@pytest.mark.parametrize(
    ("form", "case", "advice"),
    [
        # Agreeing, nothing changed: the patient hears a clinician confirmed the advice they had.
        (dict(verdict="agree", corrected_label="MEL"), done("HIGH"), ("guidance.HIGH", {})),
        # A near-line UNCERTAIN answer had HIGH's guidance; confirming it repeats that.
        (dict(verdict="agree", corrected_label="MEL"), done("UNCERTAIN", "near_threshold"), ("guidance.HIGH", {})),
        (dict(verdict="agree", corrected_label="MEL", urgency="same_day"), done(), ("review.urgency.same_day", {})),
        (dict(verdict="disagree", corrected_label="NV"), done(), ("guidance.LOW", {})),
        (dict(verdict="disagree", corrected_label="NV", urgency="soon"), done(), ("review.urgency.soon", {})),
        (dict(verdict="cannot_assess"), done(), ("review.cannot_assess_advice", {})),
    ],
)
@pytest.mark.parametrize("lang", ["en", "ko"])
def test_every_verdict_says_a_clinician_looked_what_to_do_and_the_disclaimer(form, case, advice, lang) -> None:
    message = OutboxMessage(id=1, chat_id=1, case_id=case.id, kind="review", text="")
    message.case, message.user = case, User(language=lang)
    message.review = Review(agrees=form["verdict"] == "agree", **form)

    parts = compose_outbox(message, texts=TEXTS).html.split("\n\n")

    assert parts == [
        TEXTS.get(lang, f"review.{form['verdict']}", case_id=9),
        TEXTS.get(lang, advice[0]) if advice[0].startswith("review.") else TEXTS.guidance(lang, advice[0][9:]),
        TEXTS.get(lang, "result.disclaimer"),
    ]
    first = visible(parts[0])
    assert "#9" in first and ("clinician of the service" in first or "서비스 의료진" in first)
    if form["verdict"] == "cannot_assess":
        assert "could not assess" in first or "판단할 수 없었습니다" in first


@pytest.mark.slow
def test_a_clinicians_words_from_the_console_reach_the_patient_framed(start_bot) -> None:
    h = start_bot()
    case_id = answered_case(h, 703, tier="LOW", lang="ko")
    with h.session() as session:
        operator = create_operator(session=session, username="rita", password="reviewer-password-1")
        message = create_followup(
            session=session, case=session.get(Case, case_id), operator=operator, text="내일 전화 주세요."
        )
        session.commit()
        message_id = message.id
    since = h.patient.last_seq()

    assert send_outbox(message_id) == "sent"

    text = h.patient.wait_for(703, lambda e: e["method"] == "sendMessage", since=since)["text"]
    assert text.split("\n\n") == [
        f"접수 번호 #{case_id}: 서비스 의료진이 보낸 메시지",
        "내일 전화 주세요.",
        h.expect("ko", "result.disclaimer"),
    ]


# --- the promise of a clinician's look --------------------------------------------------------


@pytest.mark.parametrize("tier", ["HIGH", "UNCERTAIN", "MEDIUM", "LOW"])
def test_the_promise_is_made_for_high_and_uncertain_answers_only_when_set(tier) -> None:
    case = done(tier, "low_confidence")
    case.image_key = None
    promise = TEXTS.get("en", "result.review_promise", hours=24)
    assert promise not in compose(case, texts=TEXTS).full_text
    assert promise not in compose(case, texts=TEXTS, review_promise_hours=None).full_text
    with_promise = compose(case, texts=TEXTS, review_promise_hours=24).full_text
    assert (visible(promise) in with_promise) is (tier in ("HIGH", "UNCERTAIN"))
    assert with_promise.endswith(visible(TEXTS.get("en", "result.disclaimer")))


@pytest.mark.parametrize("hours", [None, 48])
def test_review_promise_hours_reaches_the_delivered_answer(start_bot, hours) -> None:
    h = start_bot(**({"REVIEW_PROMISE_HOURS": hours} if hours else {}))
    assert h.settings.review_promise_hours == hours
    case_id = answered_case(h, 704, tier="HIGH")
    (case,) = h.cases(704)
    assert case.id == case_id
    promise = "A clinician of the service will look at this photo within 48 hours and write to you here."
    assert (promise in case.reply_text) is (hours is not None)
    assert case.reply_text.endswith(h.expect("en", "result.disclaimer"))


# --- the booking question ---------------------------------------------------------------------


def test_the_booking_question_is_asked_once_after_the_delay_and_the_tapped_answer_is_stored(start_bot) -> None:
    from worker.booking import ask_once

    h = start_bot(BOOKING_QUESTION_DAYS=3)
    case_id = answered_case(h, 705, tier="HIGH")
    now = utcnow()

    assert ask_once(settings=h.settings, now=now + timedelta(days=2)) == 0  # too early
    assert ask_once(settings=h.settings, now=now + timedelta(days=3, minutes=5)) == 1
    assert ask_once(settings=h.settings, now=now + timedelta(days=4)) == 0  # once per case
    with h.session() as session:
        (message,) = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "booking")).all()
        message_id = message.id
    since = h.patient.last_seq()

    assert send_outbox(message_id) == "sent"

    question = h.patient.wait_for(705, lambda e: e["method"] == "sendMessage", since=since)
    assert question["text"].split("\n\n") == [
        visible(TEXTS.get("en", "booking.question", case_id=case_id)),
        h.expect("en", "result.disclaimer"),
    ]
    assert "Have you booked an appointment with a dermatologist?" in question["text"]
    assert buttons(question) == [
        ("Yes, booked", f"booking:{case_id}:booked"),
        ("Not yet", f"booking:{case_id}:not_yet"),
        ("I don't want to", f"booking:{case_id}:declined"),
    ]
    since = h.patient.last_seq()
    h.patient.press_button(705, question["message_id"], f"booking:{case_id}:not_yet")
    h.wait_text(705, "\n\n".join([h.expect("en", "booking.not_yet"), h.expect("en", "result.disclaimer")]), since=since)
    (case,) = h.cases(705)
    assert case.booking_answer == "not_yet" and case.booking_answered_at is not None
    events = h.patient.sent(705, since=since)
    assert any(e["method"] == "editMessageReplyMarkup" and e["reply_markup"] is None for e in events)


def test_a_booking_button_for_someone_elses_case_stores_nothing(start_bot) -> None:
    h = start_bot()
    case_id = answered_case(h, 706, tier="HIGH")
    h.consent(707)
    sticker = h.barrier(707)  # any message of the bot in 707's chat to hang the button on
    since = h.patient.last_seq()
    h.patient.press_button(707, sticker["message_id"], f"booking:{case_id}:booked")
    answer = h.patient.wait_for(707, lambda e: e["method"] == "answerCallbackQuery", since=since)
    assert answer["text"] == h.expect("en", "other.stale_button")
    (case,) = h.cases(706)
    assert case.booking_answer is None


def _high_case_answered_days_ago(session, *, telegram_user_id: int, days: float) -> int:
    user = cases.get_or_create_user(
        session=session, telegram_user_id=telegram_user_id, chat_id=telegram_user_id, language="en"
    )
    session.flush()
    at = utcnow() - timedelta(days=days)
    case = Case(
        user_id=user.id, status=CaseStatus.DONE, tier="HIGH", label="MEL", language="en", image_sha256="0" * 64,
        received_at=at, finished_at=at, delivered_at=at, reply_text="Case #1: High concern",
        quality_flags=[], model_versions={}, timings_ms={},
    )  # fmt: skip
    session.add(case)
    session.flush()
    return case.id


def test_delete_stops_the_booking_question_and_a_routine_review_does_not_ask(db_url, tmp_path) -> None:
    from skintriage.db import session_factory
    from skintriage.storage import LocalImageStore

    with session_factory(db_url)() as session:
        asked = _high_case_answered_days_ago(session, telegram_user_id=801, days=4)
        deleted = _high_case_answered_days_ago(session, telegram_user_id=802, days=4)
        routine = _high_case_answered_days_ago(session, telegram_user_id=803, days=4)
        recent = _high_case_answered_days_ago(session, telegram_user_id=804, days=1)
        long_ago = _high_case_answered_days_ago(session, telegram_user_id=805, days=30)  # e.g. before deployment
        session.add(Review(case_id=routine, agrees=True, verdict="agree", corrected_label="MEL", urgency="routine"))
        session.commit()
        after = timedelta(days=3)
        assert booking.due_cases(session=session, after=after) == [asked, deleted]
        assert booking.queue_question(session=session, case_id=deleted) is not None
        assert booking.queue_question(session=session, case_id=deleted) is None  # once
        session.commit()
        user = cases.get_user(session=session, telegram_user_id=802)
        cases.delete_user_data(session=session, store=LocalImageStore(tmp_path / "images"), user=user)
        session.commit()
        assert booking.due_cases(session=session, after=after) == [asked]
        assert session.scalars(select(OutboxMessage)).all() == []  # the queued question went with the patient
        assert recent not in booking.due_cases(session=session, after=after)
        assert long_ago not in booking.due_cases(session=session, after=after)
