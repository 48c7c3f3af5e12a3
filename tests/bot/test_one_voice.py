"""Issue 12, one voice: what a patient reads, through the real bot, the local Bot API server and the
worker's real delivery task. Risk in words, why UNCERTAIN, refusals, albums and warning words.
"""

from __future__ import annotations

import pytest

from bot import questions
from bot.answers import visible
from bot.handlers import warning_text
from skintriage import cases
from tests.bot.test_conversation import outline, send_photo_and_wait_ack
from tests.factories import lesion_photo


def finish(h, case_id: int, *, tier: str, probs=(0.03, 0.9, 0.07), reason: str | None = None, retake=None) -> None:
    """Do what the worker's triage task does with a result: claim, store the overlay, save (not deliver)."""
    with h.session() as session:
        claim = cases.claim_for_processing(session=session, case_id=case_id, max_attempts=3, stale_after_s=300)
        if retake:
            result = cases.CaseResult(tier=tier, retake_reason=retake)
        else:
            overlay = outline(h.services.store.get(claim.case.image_key))
            result = cases.CaseResult(
                tier=tier, overlay_key=h.services.store.put(overlay, kind="overlay", ext="jpg").key,
                prob_mel=probs[0], prob_nv=probs[1], prob_other=probs[2], label="NV", tier_reason=reason,
            )  # fmt: skip
        assert cases.save_result(session=session, case_id=case_id, result=result)
        session.commit()


def deliver(case_id: int) -> str:
    """Run the worker's deliver_case task here, as the reply queue would."""
    import worker.celery_app  # noqa: F401 - registers the tasks' app
    from worker.tasks import deliver_case

    return deliver_case.apply(args=[case_id]).result


def answers(h, chat_id: int, since: int) -> list[str]:
    """Everything the patient received since `since`, as the texts or captions they read."""
    events = h.patient.sent(chat_id, since=since)
    return [e.get("text") or e.get("caption") for e in events if e.get("text") or e.get("caption")]


# --- 1. tier, words and numbers never disagree ------------------------------------------------


@pytest.mark.slow
def test_a_low_answer_reads_low_in_words_and_shows_no_percentage_while_the_console_keeps_it(start_bot) -> None:
    h = start_bot()
    h.consent(601)
    send_photo_and_wait_ack(h, 601, lesion_photo(seed=61))
    (case,) = h.cases(601)
    finish(h, case.id, tier="LOW", probs=(0.23, 0.70, 0.07), reason="most_likely")  # the "Melanoma 23%"
    since = h.patient.last_seq()
    assert deliver(case.id) == "sent"
    answer = h.patient.wait_for(601, lambda e: e["method"] == "sendPhoto", since=since)
    assert answer["caption"].split("\n\n")[:2] == ["Case #1: Looks like a common mole", "Risk level: low."]
    assert "%" not in answer["caption"] and "23" not in answer["caption"]
    assert answer["caption"].endswith(h.expect("en", "result.disclaimer"))
    (case,) = h.cases(601)
    assert case.prob_mel == 0.23 and case.reply_text == answer["caption"]


def test_uncertain_close_to_the_melanoma_line_says_why_and_gets_the_high_timeframe_in_korean(start_bot) -> None:
    h = start_bot()
    h.consent(602, "ko")
    send_photo_and_wait_ack(h, 602, lesion_photo(seed=62), lang="ko")
    (case,) = h.cases(602)
    finish(h, case.id, tier="UNCERTAIN", probs=(0.27, 0.63, 0.10), reason="near_threshold")
    since = h.patient.last_seq()
    assert deliver(case.id) == "sent"
    caption = h.patient.wait_for(602, lambda e: e["method"] == "sendPhoto", since=since)["caption"]
    title, risk, guidance = caption.split("\n\n")[:3]
    assert title == "접수 번호 #1: 판단 어려움: 의사 진료 권장"
    assert risk == "위험 수준: 판단 어려움. " + h.expect("ko", "uncertain.near_line")
    assert guidance == h.expect("ko", "guidance.HIGH") and "2주 이내에" in guidance
    assert "몇 주" not in caption and "%" not in caption
    assert caption.endswith(h.expect("ko", "result.disclaimer"))


# --- 3. refusals ------------------------------------------------------------------------------


def test_two_refused_photos_in_a_row_the_second_answer_says_show_it_to_a_doctor(start_bot) -> None:
    h = start_bot()
    h.consent(603)
    since = h.patient.last_seq()
    for seed in (63, 64):
        send_photo_and_wait_ack(h, 603, lesion_photo(seed=seed))
        case = h.cases(603)[-1]
        finish(h, case.id, tier="RETAKE", retake="not_skin")
        assert deliver(case.id) == "sent"
    first, second = (t for t in answers(h, 603, since) if "I can't judge this photo" in t)
    assert first.startswith("Case #1: I can't judge this photo.\n\nI couldn't find a skin spot that I can judge")
    assert "doesn't look like" not in first
    assert h.expect("en", "guidance.RETAKE") in first
    assert second.startswith("Case #2: I can't judge this photo.")
    assert h.expect("en", "guidance.RETAKE") not in second  # no third photo asked for
    assert h.expect("en", "result.retake_again") in second and "please show the spot to a doctor" in second
    assert second.endswith(h.expect("en", "result.disclaimer"))


@pytest.mark.slow
def test_photos_that_were_not_kept_are_told_so_in_both_languages(start_bot) -> None:
    h = start_bot(RATE_LIMIT_PHOTOS=2, MAX_IN_FLIGHT=1)
    for user, lang, code in ((604, "en", "en"), (605, "ko", "ko-KR")):
        h.consent(user, code)
        send_photo_and_wait_ack(h, user, lesion_photo(seed=user), lang=lang)
        since = h.patient.last_seq()
        h.patient.send_photo(user, lesion_photo(seed=user + 100), language_code=code)
        in_flight = h.wait_text(user, h.expect(lang, "intake.in_flight", count=1), since=since)["text"]
        finish(h, h.cases(user)[0].id, tier="LOW")
        send_photo_and_wait_ack(h, user, lesion_photo(seed=user + 200), lang=lang)
        finish(h, h.cases(user)[1].id, tier="LOW")
        since = h.patient.last_seq()
        h.patient.send_photo(user, lesion_photo(seed=user + 300), language_code=code)
        limited = h.wait_text(user, h.expect(lang, "intake.rate_limited", minutes=60), since=since)["text"]
        not_kept = {"en": "I did not keep this photo.", "ko": "이 사진은 저장하지 않았습니다."}[lang]
        assert in_flight.startswith(not_kept) and limited.startswith(not_kept)
        assert len(h.cases(user)) == 2


# --- 4. several photos sent together ----------------------------------------------------------


@pytest.mark.slow
def test_an_album_gets_one_answer_with_its_most_urgent_tier(start_bot) -> None:
    h = start_bot()
    h.consent(606)
    since = h.patient.last_seq()
    for seed in (66, 67, 68):
        h.patient.send_photo(606, lesion_photo(seed=seed), extra={"media_group_id": "13572468"})
    ack = h.expect("en", "intake.ack", case_id=0).split("#")[0]
    h.patient.wait_for(606, lambda e: len([t for t in answers(h, 606, since) if t.startswith(ack)]) == 3, since=since)
    ids = [c.id for c in h.cases(606)]
    assert [c.media_group_id for c in h.cases(606)] == ["13572468"] * 3
    finish(h, ids[0], tier="LOW")
    assert deliver(ids[0]) == "waiting_for_album"  # the other photos are still being analysed
    finish(h, ids[1], tier="HIGH", probs=(0.62, 0.30, 0.08), reason="above_threshold")
    finish(h, ids[2], tier="MEDIUM", probs=(0.1, 0.2, 0.7))
    since = h.patient.last_seq()
    assert sorted(deliver(i) for i in ids) == ["sent", "skipped", "skipped"]
    (answer,) = h.patient.sent(606, since=since)
    caption = answer["caption"]
    assert answer["method"] == "sendPhoto"
    assert caption.startswith(f"Case #{ids[1]}: High concern: see a dermatologist soon\n\nRisk level: high.")
    assert f"You sent 3 photos together (cases #{ids[0]}, #{ids[1]}, #{ids[2]})" in caption
    assert caption.endswith(h.expect("en", "result.disclaimer"))
    finished = h.cases(606)
    assert all(c.delivered_at is not None and c.reply_text == caption for c in finished)
    assert deliver(ids[0]) == "skipped"  # a redelivered job sends nothing again

    # /history shows the album's one answer again, also from the photo that alone was LOW.
    since = h.patient.last_seq()
    h.patient.send_command(606, "/history")
    listing = h.wait_startswith(606, "Your latest cases", since=since)
    h.patient.press_button(606, listing["message_id"], f"case:{ids[0]}")
    again = h.patient.wait_for(606, lambda e: e["method"] == "sendPhoto", since=since)
    assert again["caption"] == caption


# --- 5. warning words in captions and free text -----------------------------------------------


@pytest.mark.parametrize(
    ("code", "lang", "words", "signs"),
    [
        ("en", "en", "My mole has been bleeding and it grew this summer", ["bleeding", "growing"]),
        ("ko-KR", "ko", "점에서 피가 나고 가려워요", ["bleeding", "itching"]),
        ("ko-KR", "ko", "출혈", ["bleeding"]),
        ("ko-KR", "ko", "점이 커짐, 색 변화", ["growing", "changed"]),
    ],
)
def test_warning_words_in_free_text_are_answered_with_see_a_doctor_soon(start_bot, code, lang, words, signs) -> None:
    h = start_bot()
    since = h.patient.last_seq()
    h.patient.send_text(607, words, language_code=code)
    expected = visible(warning_text(h.texts, lang, signs, with_photo=False))
    reply = h.wait_text(607, expected, since=since)
    assert reply["text"].endswith(h.expect(lang, "result.disclaimer"))
    assert ("within two weeks" in reply["text"]) if lang == "en" else ("2주 이내에" in reply["text"])
    assert h.expect(lang, "other.text") not in answers(h, 607, since)


def test_text_without_warning_words_still_gets_send_a_photo(start_bot) -> None:
    h = start_bot()
    since = h.patient.last_seq()
    h.patient.send_text(608, "is it cancer?")
    h.wait_text(608, h.expect("en", "other.text"), since=since)
    h.patient.send_text(608, "피부가 건조해요", language_code="ko")  # 피부 (skin) is not 피 (blood)
    h.wait_text(608, h.expect("ko", "other.text"), since=since)


def test_a_caption_with_warning_words_gets_the_advice_after_the_acknowledgement(start_bot) -> None:
    h = start_bot()
    h.consent(609)
    since = h.patient.last_seq()
    h.patient.send_photo(609, lesion_photo(seed=69), caption="it itches and has changed colour")
    h.wait_startswith(609, visible(h.texts.get("en", "warning.signs", signs="x")).split(":")[0], since=since)
    (case,) = h.cases(609)
    # Stored as the answers of the photo's case, as taps would be (a changed colour: 2 points, itching: 1).
    assert case.patient_answers == {"change": "colour", "symptoms": "itches"}
    noted = questions.Noted(case.id, {"change": "colour", "symptoms": "itches"})
    expected = visible(warning_text(h.texts, "en", ["itching", "changed"], with_photo=True, noted=noted))
    assert f"I have noted this with case #{case.id} as your answers: “Changed colour”, “Itches”." in expected
    got = answers(h, 609, since)
    questions_screen = "\n\n".join(
        [h.expect("en", "questions.intro", case_id=case.id), h.expect("en", "question.site")]
    )  # the questions of a new spot come with the acknowledgement (tests/bot/test_questions.py)
    assert got[-3:] == [h.expect("en", "intake.ack", case_id=case.id), questions_screen, expected]
    assert "don't wait for my answer" in expected and expected.endswith(h.expect("en", "result.disclaimer"))

    # The red flags count them: 3 points on the 7-point checklist, so a LOW photo is answered HIGH.
    finish(h, case.id, tier="LOW", reason="most_likely")
    since = h.patient.last_seq()
    assert deliver(case.id) == "sent"
    caption = h.patient.wait_for(609, lambda e: e["method"] == "sendPhoto", since=since)["caption"]
    assert caption.startswith(f"Case #{case.id}: High concern")
    assert "“Changed colour”, “Itches”" in caption
    since = h.patient.last_seq()
    h.patient.send_command(609, "/history")  # shows the tier the patient was told, not the photo's alone
    listing = h.wait_startswith(609, "Your latest cases", since=since)
    assert listing["text"].split("\n")[1].endswith(" · High concern: see a dermatologist soon")


def test_warning_words_written_after_an_answer_are_stored_with_that_case_and_raise_it_in_korean(start_bot) -> None:
    h = start_bot()
    h.consent(610, "ko")
    send_photo_and_wait_ack(h, 610, lesion_photo(seed=70), lang="ko")
    (case,) = h.cases(610)
    finish(h, case.id, tier="LOW", reason="most_likely")
    assert deliver(case.id) == "sent"
    since = h.patient.last_seq()
    h.patient.send_text(610, "그런데 점에서 피가 나요", language_code="ko")
    follow = h.wait_startswith(610, h.expect("ko", "answers.followup", case_id=case.id), since=since)
    (case,) = h.cases(610)
    assert case.patient_answers == {"symptoms": "bleeds"} and case.told_tier == "UNCERTAIN"
    assert "‘피가 나요’" in follow["text"]
    noted = questions.Noted(case.id, {"symptoms": "bleeds"})
    expected = visible(warning_text(h.texts, "ko", ["bleeding"], with_photo=False, noted=noted))
    assert expected in answers(h, 610, since)
    assert f"접수 번호 #{case.id}에 답하신 내용으로 적어 두었습니다" in expected

    # The same words again add nothing new: no second follow-up, the plain advice only.
    since = h.patient.last_seq()
    h.patient.send_text(610, "피가 나요", language_code="ko")
    h.wait_text(610, visible(warning_text(h.texts, "ko", ["bleeding"], with_photo=False)), since=since)
    h.patient.send_sticker(610)  # its answer comes after everything the text made the bot send
    h.wait_text(610, h.expect("ko", "other.sticker"), since=since)
    assert not any(t.startswith(h.expect("ko", "answers.followup", case_id=case.id)) for t in answers(h, 610, since))


@pytest.mark.parametrize(
    ("words", "given", "stored"),
    [
        ("it grew", {}, {"change": "size"}),
        ("it changed", {}, {"change": "shape"}),  # an unnamed change counts as one major feature
        ("it got darker and grew", {}, {"change": "several"}),
        ("색이 변했어요", {}, {"change": "colour"}),
        ("it bleeds", {"symptoms": "itches"}, {"symptoms": "itches_and_more"}),  # words add to a tap
        ("it itches", {"symptoms": "itches"}, {}),  # nothing new
        ("it grew", {"change": "colour"}, {"change": "several"}),
        ("진물이 나요", {"symptoms": "none"}, {"symptoms": "crusts"}),  # later words win over "none"
    ],
)
def test_warning_words_become_the_answers_a_tap_would_give(words, given, stored) -> None:
    from bot.warning_signs import as_answers, find_warning_signs

    assert as_answers(words, find_warning_signs(words), given) == stored
