"""Issue 12, "the same spot over time": a photo sent as a Telegram reply to an earlier case's message is linked to
that case, and its answer compares the two (tiers and measurements, never size), through the real bot, the local
Bot API server and the worker's real delivery task, in English and Korean.
"""

from __future__ import annotations

import pytest
from babel.dates import format_date

from bot.delivery import visible
from devtools.local_api import buttons
from tests.bot.test_conversation import eventually, send_photo_and_wait_ack
from tests.bot.test_one_voice import answers, deliver, finish
from tests.factories import lesion_photo


def measurements(**values) -> dict:
    """Measurements as the worker stores them (ml.triage.measurements.LesionMeasurements.to_dict)."""
    base = {
        "asymmetry_major_axis": 0.08, "asymmetry_minor_axis": 0.05, "compactness": 1.15, "convexity_ratio": 1.01,
        "colour_count": 1, "colours": ["light_brown"], "colour_shares": {"light_brown": 0.97}, "diameter_px": 120.0,
        "diameter_share": 0.3, "area_px": 9000, "area_share": 0.125, "touches_border": False, "version": 1,
    }  # fmt: skip
    base.update(values)
    return base


def measure(h, case_id: int, values: dict) -> None:
    """Store measurements on a finished case, as the worker's triage task does."""
    from skintriage.models import Case

    with h.session() as session:
        session.get(Case, case_id).measurements = values
        session.commit()


def reply_with_photo(h, user_id: int, reply_to: int, photo: bytes, lang: str = "en") -> dict:
    """Send a photo as a reply to one of the chat's messages; wait for its acknowledgement."""
    since = h.patient.last_seq()
    h.patient.send_photo(user_id, photo, reply_to=reply_to)
    prefix = h.expect(lang, "intake.ack", case_id=0).split("#")[0]
    return h.wait_startswith(user_id, prefix, since=since)


def delivered_text(h, chat_id: int, case_id: int) -> str:
    """Run the worker's delivery of a finished case; everything the patient received meanwhile."""
    since = h.patient.last_seq()
    assert deliver(case_id) == "sent"
    return "\n\n".join(answers(h, chat_id, since))


@pytest.mark.slow
def test_a_photo_replying_to_an_earlier_answer_is_the_same_spot_and_its_answer_compares_the_two(start_bot) -> None:
    h = start_bot()
    h.consent(731)
    send_photo_and_wait_ack(h, 731, lesion_photo(seed=31))
    (first,) = h.cases(731)
    finish(h, first.id, tier="LOW", reason="most_likely")
    measure(h, first.id, measurements())
    first_answer = delivered_text(h, 731, first.id)
    assert "Compared with" not in first_answer  # a first photo has nothing to compare with
    (first,) = h.cases(731)

    reply_with_photo(h, 731, first.reply_message_id, lesion_photo(seed=32))
    _, second = h.cases(731)
    assert second.previous_case_id == first.id
    finish(h, second.id, tier="HIGH")
    measure(h, second.id, measurements(
        asymmetry_major_axis=0.40, compactness=1.6, colour_count=3, area_share=0.25,
        colours=["light_brown", "dark_brown", "blue_grey"],
    ))  # fmt: skip
    text = delivered_text(h, 731, second.id)
    section = (
        f"Compared with case #{first.id} ({first.received_at.date().isoformat()}), the same spot:\n"
        "Then: Looks like a common mole. Now: High concern: see a dermatologist soon.\n"
        "Asymmetry: more along its long axis, about the same along its short axis.\n"
        "Uneven border: more.\n"
        "Number of colours: more (1 then, 3 now).\n"
        "The spot fills 12.5% of the earlier photo and 25.0% of this one. Photos taken from different distances "
        "cannot be compared in size, so this does not say whether it grew.\n"
        + visible(h.expect("en", "compare.caution"))
    )
    assert section in text
    assert f"Case #{second.id}: High concern" in text and text.endswith(h.expect("en", "result.disclaimer"))
    assert h.cases(731)[1].reply_text.count(section) == 1

    # A photo sent on its own (no reply) is a new spot: not linked, nothing compared.
    send_photo_and_wait_ack(h, 731, lesion_photo(seed=33))
    third = h.cases(731)[2]
    assert third.previous_case_id is None
    finish(h, third.id, tier="LOW", reason="most_likely")
    assert "Compared with" not in delivered_text(h, 731, third.id)


def test_in_korean_a_reply_to_the_acknowledgement_of_a_refused_photo_says_it_could_not_be_measured(start_bot) -> None:
    h = start_bot()
    # Another patient's earlier case, acknowledged under the same message number in their own chat: never linked.
    h.consent(733, "ko")
    send_photo_and_wait_ack(h, 733, lesion_photo(seed=35), lang="ko")
    h.consent(732, "ko")
    send_photo_and_wait_ack(h, 732, lesion_photo(seed=34), lang="ko")
    # The acknowledgement's message id is stored just after it is sent.
    eventually(lambda: h.cases(732)[0].ack_message_id is not None and h.cases(733)[0].ack_message_id is not None)
    (first,), (other,) = h.cases(732), h.cases(733)
    assert other.id < first.id and other.ack_message_id == first.ack_message_id
    finish(h, first.id, tier="RETAKE", retake="blurry")
    delivered_text(h, 732, first.id)

    reply_with_photo(h, 732, first.ack_message_id, lesion_photo(seed=36), lang="ko")
    _, second = h.cases(732)
    assert second.previous_case_id == first.id
    finish(h, second.id, tier="MEDIUM")
    measure(h, second.id, measurements())
    text = delivered_text(h, 732, second.id)
    section = (
        f"같은 점의 이전 사진(접수 번호 #{first.id}, {first.received_at.date().isoformat()})과 비교:\n"
        "이전: 사용할 수 없는 사진. 지금: 피부과 전문의 진료 권장.\n"
        "이전 사진은 측정할 수 없었으므로, 모양과 색을 이번 사진과 비교할 수 없습니다.\n"
        "두 사진의 차이만으로는 진단할 수 없습니다. 빛, 각도, 초점에 따라서도 측정값이 달라집니다. "
        "점이 변하는 것 같으면 피부과 전문의에게 보여 주세요."
    )
    assert section in text
    assert "병변" not in text and text.endswith(h.expect("ko", "result.disclaimer"))


# --- "same spot as case #N" and /history by spot ----------------------------------------------


def spot_question(h, user_id: int, since: int) -> dict:
    """The bot's "same spot?" question after a photo's acknowledgement."""
    return h.patient.wait_for(user_id, lambda e: any(d and d.startswith("spot:") for _, d in buttons(e)), since=since)


def test_a_same_spot_tap_links_a_new_photo_its_answer_compares_and_history_groups_the_spot(start_bot) -> None:
    h = start_bot()
    h.consent(751)
    send_photo_and_wait_ack(h, 751, lesion_photo(seed=51))
    (first,) = h.cases(751)
    assert not any(d and d.startswith("spot:") for e in h.patient.sent(751) for _, d in buttons(e))  # nothing earlier
    finish(h, first.id, tier="LOW", reason="most_likely")
    measure(h, first.id, measurements())
    delivered_text(h, 751, first.id)

    since = h.patient.last_seq()
    send_photo_and_wait_ack(h, 751, lesion_photo(seed=52))
    second = h.cases(751)[1]
    question = spot_question(h, 751, since)
    date = format_date(first.received_at, format="medium", locale="en")
    assert question["text"] == h.expect("en", "spot.ask", case_id=second.id)
    assert buttons(question) == [
        (f"Same spot as case #{first.id} ({date})", f"spot:{second.id}:{first.id}"),
        ("A new spot", f"spot:{second.id}:new"),
    ]
    since = h.patient.last_seq()
    h.patient.press_button(751, question["message_id"], f"spot:{second.id}:{first.id}")
    edited = h.patient.wait_for(751, lambda e: e["method"] == "editMessageText", since=since)
    assert edited["text"] == h.expect("en", "spot.linked", case_id=second.id, previous_id=first.id)
    assert h.cases(751)[1].previous_case_id == first.id

    finish(h, second.id, tier="MEDIUM")
    measure(h, second.id, measurements(asymmetry_major_axis=0.40, colour_count=3))
    text = delivered_text(h, 751, second.id)
    assert f"Compared with case #{first.id} ({first.received_at.date().isoformat()}), the same spot:" in text
    assert "Number of colours: more (1 then, 3 now)." in text

    send_photo_and_wait_ack(h, 751, lesion_photo(seed=53))  # a third photo, tapped as a new spot
    third = h.cases(751)[2]
    since = h.patient.last_seq()
    h.barrier(751)
    question = [e for e in h.patient.sent(751) if any(d == f"spot:{third.id}:new" for _, d in buttons(e))][-1]
    assert [d for _, d in buttons(question)] == [f"spot:{third.id}:{second.id}", f"spot:{third.id}:new"]  # one spot
    h.patient.press_button(751, question["message_id"], f"spot:{third.id}:new")
    edited = h.patient.wait_for(751, lambda e: e["method"] == "editMessageText", since=since)
    assert edited["text"] == h.expect("en", "spot.new", case_id=third.id)
    assert h.cases(751)[2].previous_case_id is None

    since = h.patient.last_seq()
    h.patient.send_command(751, "/history")
    listing = h.wait_startswith(751, "Your latest cases", since=since)
    lines = listing["text"].split("\n")
    assert lines[1].startswith(f"#{third.id} · ") and lines[1].endswith(" · being analysed")
    assert lines[2] == "One spot, 2 photos:"
    assert lines[3].startswith(f"#{second.id} · ") and lines[3].endswith(" · A dermatologist should look at it")
    assert lines[4] == f"   ↳ since #{first.id}: asymmetry more, uneven border about the same, colours 1 → 3"
    assert lines[5].startswith(f"#{first.id} · ") and lines[5].endswith(" · Looks like a common mole")
    assert len(lines) == 6
    assert [d for _, d in buttons(listing)] == [f"case:{third.id}", f"case:{second.id}", f"case:{first.id}"]


def test_in_korean_a_tap_after_the_answer_sends_the_comparison_and_forged_taps_change_nothing(start_bot) -> None:
    h = start_bot()
    h.consent(752, "ko")
    h.consent(753, "ko")
    send_photo_and_wait_ack(h, 753, lesion_photo(seed=50), lang="ko")  # another patient's case
    (other,) = h.cases(753)
    send_photo_and_wait_ack(h, 752, lesion_photo(seed=54), lang="ko")
    (first,) = h.cases(752)
    finish(h, first.id, tier="LOW", reason="most_likely")
    delivered_text(h, 752, first.id)
    since = h.patient.last_seq()
    send_photo_and_wait_ack(h, 752, lesion_photo(seed=55), lang="ko")
    second = h.cases(752)[1]
    question = spot_question(h, 752, since)
    assert question["text"] == h.expect("ko", "spot.ask", case_id=second.id)
    assert buttons(question)[-1] == ("새로운 점", f"spot:{second.id}:new")
    finish(h, second.id, tier="LOW", reason="most_likely")
    delivered_text(h, 752, second.id)  # the answer went out before the tap: nothing to compare in it

    # Another patient's case, and a photo that is not theirs, are never linked.
    since = h.patient.last_seq()
    h.patient.press_button(752, question["message_id"], f"spot:{second.id}:{other.id}", language_code="ko")
    refused = h.patient.wait_for(752, lambda e: e["method"] == "editMessageText", since=since)
    assert refused["text"] == h.expect("ko", "spot.not_linked", case_id=second.id, previous_id=other.id)
    h.patient.press_button(752, question["message_id"], f"spot:{other.id}:{first.id}", language_code="ko")
    stale = h.patient.wait_for(752, lambda e: e["method"] == "answerCallbackQuery", since=refused["seq"])
    assert stale["text"] == h.expect("ko", "other.stale_button")
    assert h.cases(752)[1].previous_case_id is None and h.cases(753)[0].previous_case_id is None

    since = h.patient.last_seq()
    h.patient.press_button(752, question["message_id"], f"spot:{second.id}:{first.id}", language_code="ko")
    comparison = h.patient.wait_for(752, lambda e: e["method"] == "sendMessage", since=since)
    assert comparison["text"].startswith(
        f"같은 점의 이전 사진(접수 번호 #{first.id}, {first.received_at.date().isoformat()})과 비교:"
    )
    assert comparison["text"].endswith(h.expect("ko", "result.disclaimer"))
    assert h.cases(752)[1].previous_case_id == first.id

    # A photo sent as a reply is linked already: no question.
    (first,) = [c for c in h.cases(752) if c.id == first.id]
    since = h.patient.last_seq()
    reply_with_photo(h, 752, first.reply_message_id, lesion_photo(seed=56), lang="ko")
    third = h.cases(752)[2]
    intro = h.expect("ko", "questions.intro", case_id=third.id)
    h.wait_startswith(752, intro, since=since)  # the questions come after the spot question, if any
    assert not any(d and d.startswith("spot:") for e in h.patient.sent(752, since=since) for _, d in buttons(e))
    assert third.previous_case_id == first.id
