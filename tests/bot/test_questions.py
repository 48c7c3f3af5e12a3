"""Issue 12, "ask what a doctor would ask": tap-to-answer questions with a new spot, through the real bot, the
local Bot API server and the worker's real delivery task. The answers are stored with the case, the answer's
tier takes them in, and a late answer that raises the urgency gets a follow-up, in English and Korean.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.answers import queue_answers_followup, visible
from devtools.local_api import buttons
from skintriage import cases
from skintriage.models import Case, CaseStatus, OutboxMessage
from tests.bot.test_conversation import eventually, send_photo_and_wait_ack
from tests.bot.test_one_voice import deliver, finish
from tests.factories import lesion_photo


def question_message(h, chat_id: int, since: int) -> dict:
    """The message with the question buttons sent after the acknowledgement."""
    return h.patient.wait_for(
        chat_id, lambda e: e["method"] == "sendMessage" and any(
            (d or "").startswith("q:") for _, d in buttons(e)), since=since,
    )  # fmt: skip


def tap(h, chat_id: int, message: dict, data: str, language_code: str = "en") -> dict:
    """Press a question button and wait for the message to change (or the button's answer): the edit event."""
    since = h.patient.last_seq()
    h.patient.press_button(chat_id, message["message_id"], data, language_code=language_code)
    h.patient.wait_for(chat_id, lambda e: e["method"] == "answerCallbackQuery", since=since)
    return h.patient.wait_for(chat_id, lambda e: e["method"] == "editMessageText", since=since)


@pytest.mark.slow
def test_four_taps_are_stored_with_the_case_and_red_flags_make_a_low_photo_high(start_bot) -> None:
    h = start_bot()
    h.consent(701)
    since = h.patient.last_seq()
    ack = send_photo_and_wait_ack(h, 701, lesion_photo(seed=71))
    first = question_message(h, 701, since)
    (case,) = h.cases(701)
    assert first["seq"] > ack["seq"]
    # The analysis does not wait: the case was queued when the questions were asked.
    assert case.status == CaseStatus.QUEUED and case.patient_answers is None
    assert first["text"] == "\n\n".join(
        [h.expect("en", "questions.intro", case_id=case.id), h.expect("en", "question.site")]
    )
    assert buttons(first) == [
        ("Face", f"q:{case.id}:site:face"), ("Palm or sole", f"q:{case.id}:site:palm_sole"),
        ("Nail", f"q:{case.id}:site:nail"), ("Mouth or genitals", f"q:{case.id}:site:mouth_genitals"),
        ("Elsewhere on the skin", f"q:{case.id}:site:other"), ("Skip", f"q:{case.id}:site:skip"),
    ]  # fmt: skip

    second = tap(h, 701, first, f"q:{case.id}:site:other")
    assert second["text"] == h.expect("en", "question.change") and second["message_id"] == first["message_id"]
    assert ("Grown bigger", f"q:{case.id}:change:size") in buttons(second)
    third = tap(h, 701, first, f"q:{case.id}:change:size")
    assert third["text"] == h.expect("en", "question.symptoms")
    fourth = tap(h, 701, first, f"q:{case.id}:symptoms:itches")
    assert fourth["text"] == h.expect("en", "question.age")
    done = tap(h, 701, first, f"q:{case.id}:age:adult")
    assert done["text"] == (
        f"Thank you. Your answers are kept with case #{case.id}: “Elsewhere on the skin”, “Grown bigger”, "
        "“Itches”, “18 or older”. If they change my advice, I'll say so."
    )
    assert not done["reply_markup"]
    (case,) = h.cases(701)
    assert case.patient_answers == {"site": "other", "change": "size", "symptoms": "itches", "age": "adult"}

    # The photo alone is LOW; growth (2 points) + itch (1 point) reach the checklist's line of 3: HIGH.
    finish(h, case.id, tier="LOW", reason="most_likely")
    since = h.patient.last_seq()
    assert deliver(case.id) == "sent"
    caption = h.patient.wait_for(701, lambda e: e["method"] == "sendPhoto", since=since)["caption"]
    follow = h.patient.messages(701, since=since)
    text = "\n\n".join(e.get("caption") or e.get("text") for e in follow)
    title, raised, alone = text.split("\n\n")[:3]
    assert title == f"Case #{case.id}: High concern: see a dermatologist soon"
    assert raised == (
        "Your answers raise the urgency: “Grown bigger”, “Itches”. " + h.expect("en", "answers.why.checklist", points=3)
    )
    assert alone == "The photo alone was rated: Looks like a common mole."
    assert h.expect("en", "guidance.HIGH") in text and text.endswith(h.expect("en", "result.disclaimer"))
    assert caption.startswith(title)
    (case,) = h.cases(701)
    assert case.tier == "LOW" and case.told_tier == "HIGH"  # the model's tier is kept; the told one is not LOW
    # Nothing more to say: a repeated tap raises nothing and sends no follow-up.
    since = h.patient.last_seq()
    h.patient.press_button(701, first["message_id"], f"q:{case.id}:age:adult")
    h.barrier(701)
    assert [e["method"] for e in h.patient.sent(701, since=since)][0] == "answerCallbackQuery"
    with h.session() as session:
        assert session.scalars(select(OutboxMessage)).all() == []


@pytest.mark.slow
def test_a_late_answer_in_korean_raises_the_urgency_with_a_follow_up(start_bot) -> None:
    h = start_bot()
    h.consent(702, "ko")
    since = h.patient.last_seq()
    send_photo_and_wait_ack(h, 702, lesion_photo(seed=72), lang="ko")
    (case,) = h.cases(702)
    first = question_message(h, 702, since)
    assert first["text"].startswith("사진을 보는 동안") and f"접수 번호 #{case.id}" in first["text"]
    assert buttons(first)[-1] == ("건너뛰기", f"q:{case.id}:site:skip")
    tap(h, 702, first, f"q:{case.id}:site:skip", "ko")
    tap(h, 702, first, f"q:{case.id}:change:no", "ko")
    tap(h, 702, first, f"q:{case.id}:symptoms:none", "ko")

    # The answer goes out before the last question is answered: LOW.
    finish(h, case.id, tier="LOW", reason="most_likely")
    assert deliver(case.id) == "sent"
    (case,) = h.cases(702)
    assert case.told_tier == "LOW"

    # "Under 18": the models are not made for children; the patient is told at once, in Korean.
    since = h.patient.last_seq()
    done = tap(h, 702, first, f"q:{case.id}:age:child", "ko")
    assert done["text"].startswith("감사합니다.") and "‘18세 미만’" in done["text"]
    follow = h.patient.wait_for(702, lambda e: e["method"] == "sendMessage", since=since)
    assert follow["text"] == "\n\n".join([
        f"접수 번호 #{case.id}: 답하신 내용 때문에 안내가 바뀌었습니다.",
        "답하신 내용 때문에 더 서둘러야 합니다: ‘18세 미만’. " + h.expect("ko", "answers.scope.child"),
        "지금의 안내: 판단 어려움: 의사 진료 권장.",
        h.expect("ko", "guidance.UNCERTAIN"),
        h.expect("ko", "result.disclaimer"),
    ])  # fmt: skip
    (case,) = h.cases(702)
    assert case.patient_answers == {"site": "skip", "change": "no", "symptoms": "none", "age": "child"}
    assert case.told_tier == "UNCERTAIN"

    def sent_follow_ups() -> list[OutboxMessage]:  # marked sent just after Telegram took it
        with h.session() as session:
            # (a LOW or MEDIUM answer also queues the re-check reminder's offer: tests/bot/test_reminders.py)
            query = select(OutboxMessage).where(OutboxMessage.kind != "reminder_offer")
            return [m for m in session.scalars(query) if m.sent_at is not None]

    eventually(sent_follow_ups)
    with h.session() as session:
        (message,) = session.scalars(select(OutboxMessage).where(OutboxMessage.kind != "reminder_offer")).all()
        assert message.kind == "answers" and message.sent_at is not None and message.error is None
        assert message.case_id == case.id and message.text == follow["text"]

    # /history shows the answer as it reads now, the answers included.
    since = h.patient.last_seq()
    h.patient.send_command(702, "/history", language_code="ko")
    listing = h.patient.wait_for(702, lambda e: bool(buttons(e)) and e["method"] == "sendMessage", since=since)
    h.patient.press_button(702, listing["message_id"], f"case:{case.id}", language_code="ko")
    again = h.patient.wait_for(702, lambda e: e["method"] == "sendPhoto", since=since)
    assert again["caption"].startswith(f"접수 번호 #{case.id}: 판단 어려움: 의사 진료 권장")


@pytest.mark.slow
def test_palm_or_sole_is_never_low_and_says_why_in_english(start_bot) -> None:
    h = start_bot()
    h.consent(703)
    since = h.patient.last_seq()
    send_photo_and_wait_ack(h, 703, lesion_photo(seed=73))
    (case,) = h.cases(703)
    first = question_message(h, 703, since)
    tap(h, 703, first, f"q:{case.id}:site:palm_sole")
    finish(h, case.id, tier="LOW", reason="most_likely")
    since = h.patient.last_seq()
    assert deliver(case.id) == "sent"
    text = "\n\n".join(e.get("caption") or e.get("text") for e in h.patient.messages(703, since=since))
    assert text.startswith(f"Case #{case.id}: Uncertain: a doctor should look at it")
    assert "Your answers raise the urgency: “Palm or sole”. " + h.expect("en", "answers.why.acral") in text
    assert "Looks like a common mole" in text  # said as what the photo alone showed, never as the advice
    assert h.expect("en", "guidance.UNCERTAIN") in text and h.expect("en", "guidance.LOW") not in text


def test_forged_taps_and_other_patients_cases_change_nothing(start_bot) -> None:
    h = start_bot()
    h.consent(704)
    h.consent(705)
    since = h.patient.last_seq()
    send_photo_and_wait_ack(h, 704, lesion_photo(seed=74))
    (mine,) = h.cases(704)
    first = question_message(h, 704, since)
    for data in (f"q:{mine.id}:site:elbow", f"q:{mine.id}:weight:80"):
        since = h.patient.last_seq()
        h.patient.press_button(704, first["message_id"], data)
        answer = h.patient.wait_for(704, lambda e: e["method"] == "answerCallbackQuery", since=since)
        assert answer["text"] == h.expect("en", "other.stale_button")
    # Another patient forging a button with this case's number under a message of their own chat.
    since = h.patient.last_seq()
    h.patient.press_button(705, h.patient.messages(705)[-1]["message_id"], f"q:{mine.id}:age:child")
    answer = h.patient.wait_for(705, lambda e: e["method"] == "answerCallbackQuery", since=since)
    assert answer["text"] == h.expect("en", "other.stale_button")
    h.barrier(704)
    assert h.cases(704)[0].patient_answers is None


def test_an_album_is_asked_once_and_its_photos_share_the_answers(start_bot) -> None:
    h = start_bot()
    h.consent(706)
    since = h.patient.last_seq()
    for seed in (75, 76):
        h.patient.send_photo(706, lesion_photo(seed=seed), extra={"media_group_id": "24681357"})
    ack = h.expect("en", "intake.ack", case_id=0).split("#")[0]
    h.patient.wait_for(
        706, lambda e: len([m for m in h.patient.messages(706, since=since) if m["text"].startswith(ack)]) == 2,
        since=since,
    )  # fmt: skip
    h.barrier(706)
    asked = [m for m in h.patient.messages(706, since=since) if any((d or "").startswith("q:") for _, d in buttons(m))]
    ids = [c.id for c in h.cases(706)]
    assert len(asked) == 1 and f"case #{ids[0]}" in asked[0]["text"]
    tap(h, 706, asked[0], f"q:{ids[0]}:site:nail")
    assert [c.patient_answers for c in h.cases(706)] == [{"site": "nail"}] * 2


def test_a_follow_up_is_queued_once_whoever_finds_the_raise_first(start_bot) -> None:
    """The bot (after a tap) and the reply queue (after sending) may both look: one follow-up only."""
    h = start_bot()
    h.consent(707)
    send_photo_and_wait_ack(h, 707, lesion_photo(seed=77))
    (case,) = h.cases(707)
    finish(h, case.id, tier="MEDIUM", probs=(0.1, 0.2, 0.7), reason="most_likely")
    assert deliver(case.id) == "sent"
    with h.session() as session:
        case = session.get(Case, case.id)
        assert case.told_tier == "MEDIUM"
        cases.record_answer(session=session, case=case, question="change", option="several")
        first = queue_answers_followup(session=session, case=case, texts=h.texts)
        second = queue_answers_followup(session=session, case=case, texts=h.texts)
        session.commit()
        assert first is not None and second is None
        message = session.get(OutboxMessage, first)
        assert message.text.startswith(f"Case #{case.id}: your answers change my advice.")
        assert visible(h.texts.get("en", "guidance.HIGH")) in message.text
        assert message.text.endswith(visible(h.texts.get("en", "result.disclaimer")))
        session.expire_all()
        assert session.get(Case, case.id).told_tier == "HIGH"


def test_the_korean_question_and_answer_texts_use_the_plain_words() -> None:
    """접수 번호, not 사례; plain words, not 병변; 피부과 전문의, not 피부과 alone."""
    from bot.i18n import Texts

    texts = Texts.load()
    prefixes = {"question", "questions", "option", "answers"}
    own = {k: v for k, v in texts.catalogues["ko"].items() if k.split(".")[0] in prefixes}
    assert len(own) == 38 and set(own) == {k for k in texts.catalogues["en"] if k.split(".")[0] in prefixes}
    for key, text in own.items():
        assert "사례" not in text and "병변" not in text, key
        assert text.count("피부과") == text.count("피부과 전문의"), key


@pytest.mark.slow
def test_an_answer_tapped_while_the_reply_is_on_its_way_gets_its_follow_up_from_the_reply_queue(start_bot) -> None:
    """The bot sees no sent answer yet, the answer went out without the tap: the reply queue finds the raise."""
    import threading

    import worker.celery_app  # noqa: F401 - registers the tasks' app
    from worker.tasks import send_outbox

    h = start_bot()
    h.consent(708)
    since = h.patient.last_seq()
    send_photo_and_wait_ack(h, 708, lesion_photo(seed=78))
    (case,) = h.cases(708)
    first = question_message(h, 708, since)
    finish(h, case.id, tier="LOW", reason="most_likely")
    h.patient.set_faults("sendPhoto", ["delay:3"])
    calls = h.patient.status()["calls"].get("sendPhoto", 0)
    result: list[str] = []
    sending = threading.Thread(target=lambda: result.append(deliver(case.id)))
    sending.start()
    eventually(lambda: h.patient.status()["calls"].get("sendPhoto", 0) > calls)  # the answer's photo is on its way
    tap(h, 708, first, f"q:{case.id}:site:nail")
    assert h.cases(708)[0].delivered_at is None  # the bot found nothing sent: no follow-up from it
    sending.join(timeout=30)
    assert result == ["sent"]
    (case,) = h.cases(708)
    assert case.told_tier == "UNCERTAIN"  # raised by the reply queue's follow-up
    with h.session() as session:
        # (a LOW or MEDIUM answer also queues the re-check reminder's offer: tests/bot/test_reminders.py)
        (message,) = session.scalars(select(OutboxMessage).where(OutboxMessage.kind != "reminder_offer")).all()
    assert message.kind == "answers" and message.sent_at is None
    since = h.patient.last_seq()
    assert send_outbox.apply(args=[message.id]).result == "sent"
    follow = h.patient.wait_for(708, lambda e: e["method"] == "sendMessage", since=since)
    assert follow["text"].startswith(f"Case #{case.id}: your answers change my advice.")
    assert "“Nail”. " + h.expect("en", "answers.scope.nail") in follow["text"]
    assert follow["text"].endswith(h.expect("en", "result.disclaimer"))


@pytest.mark.slow
def test_every_question_can_be_skipped_and_the_answer_then_relies_on_the_photo(start_bot) -> None:
    h = start_bot()
    h.consent(709, "ko")
    since = h.patient.last_seq()
    send_photo_and_wait_ack(h, 709, lesion_photo(seed=79), lang="ko")
    (case,) = h.cases(709)
    first = question_message(h, 709, since)
    for question in ("site", "change", "symptoms", "age"):
        last = tap(h, 709, first, f"q:{case.id}:{question}:skip", "ko")
    assert last["text"] == h.expect("ko", "questions.done_none", case_id=case.id) and not last["reply_markup"]
    finish(h, case.id, tier="LOW", reason="most_likely")
    since = h.patient.last_seq()
    assert deliver(case.id) == "sent"
    caption = h.patient.wait_for(709, lambda e: e["method"] == "sendPhoto", since=since)["caption"]
    assert caption.split("\n\n")[:2] == [f"접수 번호 #{case.id}: 일반 점으로 보임", "위험 수준: 낮음."]
    (case,) = h.cases(709)
    assert case.patient_answers == dict.fromkeys(("site", "change", "symptoms", "age"), "skip")
    assert case.told_tier == "LOW"


def test_a_repeated_delivery_job_still_finds_a_raise_the_first_run_missed(start_bot) -> None:
    """The first run sent the answer and failed before looking at the answers; its retry queues the follow-up."""
    h = start_bot()
    h.consent(710)
    send_photo_and_wait_ack(h, 710, lesion_photo(seed=80))
    (case,) = h.cases(710)
    finish(h, case.id, tier="MEDIUM", probs=(0.1, 0.2, 0.7), reason="most_likely")
    assert deliver(case.id) == "sent"
    with h.session() as session:  # stored as the bot stores a tap, no follow-up looked for
        cases.record_answer(session=session, case=session.get(Case, case.id), question="site", option="mouth_genitals")
        session.commit()
    assert deliver(case.id) == "skipped"
    assert deliver(case.id) == "skipped"
    with h.session() as session:
        # (a LOW or MEDIUM answer also queues the re-check reminder's offer: tests/bot/test_reminders.py)
        (message,) = session.scalars(select(OutboxMessage).where(OutboxMessage.kind != "reminder_offer")).all()
        assert message.kind == "answers" and "“Mouth or genitals”" in message.text
        assert session.get(Case, case.id).told_tier == "UNCERTAIN"


@pytest.mark.slow
def test_answers_and_a_follow_up_on_postgres(start_bot, pg_url: str) -> None:
    h = start_bot(database_url=pg_url)
    h.consent(711)
    since = h.patient.last_seq()
    send_photo_and_wait_ack(h, 711, lesion_photo(seed=81))
    (case,) = h.cases(711)
    first = question_message(h, 711, since)
    finish(h, case.id, tier="LOW", reason="most_likely")
    assert deliver(case.id) == "sent"
    tap(h, 711, first, f"q:{case.id}:site:other")
    since = h.patient.last_seq()
    tap(h, 711, first, f"q:{case.id}:change:several")
    follow = h.patient.wait_for(711, lambda e: e["method"] == "sendMessage", since=since)
    assert "“Two or more of these”. " + h.expect("en", "answers.why.checklist", points=4) in follow["text"]
    (case,) = h.cases(711)
    assert case.patient_answers == {"site": "other", "change": "several"} and case.told_tier == "HIGH"
