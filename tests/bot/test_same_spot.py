"""Issue 12, "the same spot over time": a photo sent as a Telegram reply to an earlier case's message is linked to
that case, and its answer compares the two (tiers and measurements, never size), through the real bot, the local
Bot API server and the worker's real delivery task, in English and Korean.
"""

from __future__ import annotations

import pytest

from bot.delivery import visible
from tests.bot.test_conversation import send_photo_and_wait_ack
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
