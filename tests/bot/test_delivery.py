"""The patient's answer: composition in both languages, Telegram's caption limit, and sending it for real."""

from __future__ import annotations

import asyncio

import pytest
from telegram.error import NetworkError

from bot.answers import compose, telegram_length, urgency_rank, visible
from bot.delivery import deliver_case, make_bot, send_outbox_message
from bot.i18n import Texts
from skintriage import cases
from skintriage.models import Case, CaseStatus, OutboxMessage
from skintriage.settings import Settings
from skintriage.storage import LocalImageStore
from skintriage.vocabulary import RetakeReason, Tier
from tests.factories import lesion_photo

TEXTS = Texts.load()


def done_case(tier: str, lang: str = "en", *, demo: bool = False, overlay_key: str | None = "overlay-key") -> Case:
    return Case(
        id=42,
        language=lang,
        status=CaseStatus.DONE,
        tier=tier,
        prob_mel=0.004 if tier == "LOW" else 0.62,
        prob_nv=0.9 if tier == "LOW" else 0.3,
        prob_other=0.096 if tier == "LOW" else 0.08,
        overlay_key=overlay_key,
        image_key="photo-key",
        demo_model=demo,
    )


@pytest.mark.parametrize("lang", ["en", "ko"])
@pytest.mark.parametrize("tier", ["HIGH", "MEDIUM", "LOW", "UNCERTAIN"])
def test_result_caption_fits_under_the_photo_with_tier_risk_words_guidance_and_disclaimer(tier, lang) -> None:
    reply = compose(done_case(tier, lang), texts=TEXTS)
    assert reply.image_key == "overlay-key"
    assert telegram_length(reply.caption) <= 1024
    full = reply.full_text
    assert full.startswith(visible(TEXTS.get(lang, "result.title", case_id=42, tier=TEXTS.get(lang, f"tier.{tier}"))))
    assert visible(TEXTS.guidance(lang, tier)) in full
    assert full.endswith(visible(TEXTS.get(lang, "result.disclaimer")))
    assert "DEMO" not in full and "데모" not in full


@pytest.mark.parametrize("lang", ["en", "ko"])
@pytest.mark.parametrize("tier", ["HIGH", "MEDIUM", "LOW", "UNCERTAIN"])
def test_patients_read_the_risk_level_in_words_and_never_a_percentage(tier, lang) -> None:
    full = compose(done_case(tier, lang), texts=TEXTS).full_text
    assert "%" not in full
    assert "62" not in full and "90" not in full  # the probabilities stay in the console
    levels = {
        "en": {"HIGH": "high", "MEDIUM": "medium", "LOW": "low", "UNCERTAIN": "uncertain"},
        "ko": {"HIGH": "높음", "MEDIUM": "중간", "LOW": "낮음", "UNCERTAIN": "판단 어려움"},
    }
    level = levels[lang][tier]
    assert full.split("\n\n")[1].startswith(("Risk level: " if lang == "en" else "위험 수준: ") + level)


def test_low_tier_in_plain_words_exactly() -> None:
    reply = compose(done_case("LOW"), texts=TEXTS)
    assert reply.follow_up is None
    assert reply.full_text.split("\n\n")[:3] == [
        "Case #42: Looks like a common mole",
        "Risk level: low.",
        "What to do: it looks like a common mole; no appointment is needed because of this photo. Check it "
        "yourself once a month with ABCDE: Asymmetry, uneven Border, several Colours, Diameter over 6 mm, "
        "Evolving (changing). Take a new photo in three months to compare. See a doctor anyway if it grows, "
        "changes shape or colour, bleeds, itches or a sore does not heal.",
    ]


@pytest.mark.parametrize(
    ("reason", "en_why", "ko_why"),
    [
        ("near_threshold", "close to the line at which I call a spot high risk for melanoma", "기준선에 가깝습니다"),
        ("mel_most_likely", "close to the line at which I call a spot high risk for melanoma", "기준선에 가깝습니다"),
        ("low_confidence", "The model cannot decide", "정하지 못했습니다"),
        ("gate_unsure", "The photo was borderline", "사진 상태가 애매해서"),
        (None, "I can't judge this spot reliably.", "신뢰할 만하게 판단할 수 없습니다"),
    ],
)
def test_uncertain_says_why_and_close_to_the_melanoma_line_gets_the_high_timeframe(reason, en_why, ko_why) -> None:
    for lang, why in (("en", en_why), ("ko", ko_why)):
        case = done_case("UNCERTAIN", lang)
        case.tier_reason = reason
        full = compose(case, texts=TEXTS).full_text
        risk = full.split("\n\n")[1]
        assert why in risk, risk
        near = reason in ("near_threshold", "mel_most_likely")
        # Near the line: HIGH's timeframe, in HIGH's words; otherwise the "few weeks" of UNCERTAIN.
        assert (visible(TEXTS.guidance(lang, "HIGH")) in full) is near
        assert (visible(TEXTS.guidance(lang, "UNCERTAIN")) in full) is not near
        assert ("within two weeks" in full or "2주 이내에" in full) is near
        assert ("within the next few weeks" in full or "앞으로 몇 주 이내에" in full) is not near
        assert full.endswith(visible(TEXTS.get(lang, "result.disclaimer")))


def test_demo_model_answers_say_so_first() -> None:
    for lang, word in (("en", "DEMO MODEL"), ("ko", "데모 모델")):
        reply = compose(done_case("HIGH", lang, demo=True), texts=TEXTS)
        assert word in reply.caption.split("\n\n")[0]
        retake = Case(
            id=1, language=lang, status=CaseStatus.REJECTED, tier="RETAKE", retake_reason="blurry", demo_model=True
        )
        assert word in compose(retake, texts=TEXTS).caption


def test_long_guidance_continues_in_a_following_message(tmp_path) -> None:
    path = tmp_path / "guidance.toml"
    long_text = "Please see a dermatologist within two weeks. " * 30
    path.write_text(f'[HIGH]\nen = "{long_text}"\n', encoding="utf-8")
    texts = Texts.load(guidance_file=path)
    reply = compose(done_case("HIGH", demo=True), texts=texts)
    assert telegram_length(reply.caption) <= 1024
    assert reply.caption.endswith(TEXTS.get("en", "result.continued"))
    assert "Risk level: high." in visible(reply.caption) and "DEMO MODEL" in reply.caption
    assert long_text.strip() in visible(reply.follow_up)
    assert visible(reply.follow_up).endswith(visible(TEXTS.get("en", "result.disclaimer")))


@pytest.mark.parametrize("lang", ["en", "ko"])
@pytest.mark.parametrize("reason", [r.value for r in RetakeReason] + [None])
def test_retake_answers_give_the_specific_reason_and_how_to_take_a_better_photo(reason, lang) -> None:
    case = Case(id=5, language=lang, status=CaseStatus.REJECTED, tier=Tier.RETAKE, retake_reason=reason)
    reply = compose(case, texts=TEXTS)
    assert reply.image_key is None
    assert visible(TEXTS.retake_reason(lang, reason)) in reply.full_text
    assert visible(TEXTS.guidance(lang, "RETAKE")) in reply.full_text
    assert reply.full_text.endswith(visible(TEXTS.get(lang, "result.disclaimer")))


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_a_refused_spot_is_told_i_cant_judge_this_photo_not_that_it_is_not_skin(lang) -> None:
    case = Case(id=5, language=lang, status=CaseStatus.REJECTED, tier=Tier.RETAKE, retake_reason="not_skin")
    full = compose(case, texts=TEXTS).full_text
    title, reason, advice = full.split("\n\n")[:3]
    titles = {"en": "Case #5: I can't judge this photo.", "ko": "접수 번호 #5: 이 사진으로는 판단할 수 없습니다."}
    assert title == titles[lang]
    assert "doesn't look like" not in full and "피부 사진이 아닌" not in full
    assert ("close up, in focus and in daylight" in reason) if lang == "en" else ("자연광" in reason)
    assert advice == visible(TEXTS.guidance(lang, "RETAKE"))


@pytest.mark.parametrize("lang", ["en", "ko"])
@pytest.mark.parametrize("reason", ["blurry", "not_skin", "too_dark"])
def test_second_refused_photo_in_a_row_sends_the_patient_to_a_doctor_instead_of_retaking(lang, reason) -> None:
    case = Case(id=6, language=lang, status=CaseStatus.REJECTED, tier=Tier.RETAKE, retake_reason=reason)
    full = compose(case, texts=TEXTS, refused_before=True).full_text
    assert visible(TEXTS.retake_reason(lang, reason)) in full  # still says what was wrong with it
    assert visible(TEXTS.guidance(lang, "RETAKE")) not in full  # no third retake
    assert visible(TEXTS.get(lang, "result.retake_again")) in full
    words = {"en": "please show the spot to a doctor", "ko": "의사에게 점을 직접 보여 주세요"}
    assert words[lang] in full
    assert full.endswith(visible(TEXTS.get(lang, "result.disclaimer")))


def test_album_answer_names_the_photos_it_covers() -> None:
    full = compose(done_case("HIGH"), texts=TEXTS, album=[41, 42, 43]).full_text
    assert "You sent 3 photos together (cases #41, #42, #43)" in full and "most urgent" in full
    assert full.endswith(visible(TEXTS.get("en", "result.disclaimer")))
    korean = compose(done_case("LOW", "ko"), texts=TEXTS, album=[41, 42]).full_text
    assert "함께 보내셨습니다(접수 번호 #41, #42)" in korean


def test_urgency_rank_puts_high_and_near_line_first_then_uncertain_medium_low_refused_failed() -> None:
    def case(tier, status=CaseStatus.DONE, reason=None):
        return Case(id=1, status=status, tier=tier, tier_reason=reason)

    order = [
        case("HIGH"), case("UNCERTAIN", reason="near_threshold"), case("UNCERTAIN", reason="low_confidence"),
        case("MEDIUM"), case("LOW"), case("RETAKE", CaseStatus.REJECTED), case(None, CaseStatus.FAILED),
    ]  # fmt: skip
    assert sorted(reversed(order), key=urgency_rank) == order


def test_failed_case_apologises_and_says_to_see_a_doctor() -> None:
    reply = compose(Case(id=9, language="en", status=CaseStatus.FAILED, error_code="attempts_exhausted"), texts=TEXTS)
    assert reply.full_text.startswith("Case #9: I'm sorry")
    assert "please see a doctor" in reply.full_text
    assert reply.full_text.endswith(visible(TEXTS.get("en", "result.disclaimer")))


# --- the patient's answers (ml.triage.red_flags) ----------------------------------------------------


def test_a_refused_or_failed_photo_with_red_flags_still_sends_the_patient_to_a_doctor_soon() -> None:
    answers = {"change": "several"}
    for lang in ("en", "ko"):
        refused = Case(id=7, language=lang, status=CaseStatus.REJECTED, tier=Tier.RETAKE, retake_reason="blurry",
                       patient_answers=answers)  # fmt: skip
        failed = Case(id=8, language=lang, status=CaseStatus.FAILED, error_code="pipeline_error",
                      patient_answers=answers)  # fmt: skip
        for case in (refused, failed):
            full = compose(case, texts=TEXTS).full_text
            assert visible(TEXTS.get(lang, "answers.why.checklist", points=4)) in full
            assert visible(TEXTS.guidance(lang, Tier.HIGH)) in full
            assert full.endswith(visible(TEXTS.get(lang, "result.disclaimer")))
    # Without red flags a refused photo only asks for a better one.
    plain = Case(id=7, language="en", status=CaseStatus.REJECTED, tier=Tier.RETAKE, retake_reason="blurry",
                 patient_answers={"site": "palm_sole", "change": "size"})  # fmt: skip
    assert "raise the urgency" not in compose(plain, texts=TEXTS).full_text


def test_a_high_photo_of_a_nail_stays_high_and_says_the_models_are_not_made_for_nails() -> None:
    case = done_case("HIGH")
    case.patient_answers = {"site": "nail"}
    full = compose(case, texts=TEXTS).full_text
    assert full.startswith("Case #42: High concern") and "Risk level: high." in full
    assert visible(TEXTS.get("en", "answers.scope.nail")) in full and "raise the urgency" not in full
    assert visible(TEXTS.guidance("en", Tier.HIGH)) in full


def test_answers_rank_an_album_photo_by_the_tier_they_give() -> None:
    low_child = Case(id=1, status=CaseStatus.DONE, tier="LOW", patient_answers={"age": "child"})
    medium = Case(id=2, status=CaseStatus.DONE, tier="MEDIUM")
    assert sorted([medium, low_child], key=urgency_rank) == [low_child, medium]  # UNCERTAIN before MEDIUM


def _settings(local_api) -> Settings:
    return Settings(
        TELEGRAM_BOT_TOKEN=local_api.token,
        TELEGRAM_API_BASE_URL=local_api.api_base_url,
        TELEGRAM_FILE_BASE_URL=local_api.file_base_url,
    )


def test_deliver_case_sends_the_outlined_photo_with_caption_to_the_patient(
    local_api, patient, sqlite_url, tmp_path
) -> None:
    from skintriage.db import session_factory

    store = LocalImageStore(tmp_path / "images")
    photo, overlay = lesion_photo(seed=1), lesion_photo(seed=2)
    patient.send_text(301, "hi")
    with session_factory(sqlite_url).begin() as session:
        user = cases.get_or_create_user(session=session, telegram_user_id=301, chat_id=301, language="ko")
        case = cases.create_case(session=session, user=user, image=store.put(photo))
        case.status, case.tier = CaseStatus.DONE, "MEDIUM"
        case.prob_mel, case.prob_nv, case.prob_other = 0.2, 0.1, 0.7
        case.overlay_key = store.put(overlay, kind="overlay").key

        async def go():
            async with make_bot(_settings(local_api)) as bot:
                return await deliver_case(bot, case=case, store=store, texts=TEXTS)

        message_id, text = asyncio.run(go())  # chat id from case.user while the session is open
    (sent,) = patient.messages(301)
    assert sent["method"] == "sendPhoto" and sent["message_id"] == message_id
    assert patient.file_bytes(sent["photo"]) == overlay
    assert sent["caption"] == text and text.startswith(f"접수 번호 #{case.id}: 피부과 전문의 진료 권장")


def test_deliver_case_falls_back_to_text_when_the_image_is_gone_and_raises_on_telegram_errors(
    local_api, patient, tmp_path
) -> None:
    store = LocalImageStore(tmp_path / "images")
    patient.send_text(302, "hi")
    case = done_case("HIGH", overlay_key="overlay/ab/" + "ab" * 32 + ".jpg")
    case.image_key = None

    async def go():
        async with make_bot(_settings(local_api)) as bot:
            result = await deliver_case(bot, case=case, store=store, chat_id=302, texts=TEXTS)
            patient.set_faults("sendMessage", ["500"])
            with pytest.raises(NetworkError):
                await deliver_case(bot, case=case, store=store, chat_id=302, texts=TEXTS)
            return result

    message_id, text = asyncio.run(go())
    (sent,) = patient.messages(302)
    assert sent["method"] == "sendMessage" and sent["text"] == text and sent["message_id"] == message_id


def test_two_part_answer_resumes_after_its_first_message_without_sending_it_again(local_api, patient, tmp_path) -> None:
    path = tmp_path / "guidance.toml"
    path.write_text(f'[HIGH]\nen = "{"Please see a dermatologist within two weeks. " * 30}"\n', encoding="utf-8")
    texts = Texts.load(guidance_file=path)
    store = LocalImageStore(tmp_path / "images")
    patient.send_text(304, "hi")
    case = done_case("HIGH", overlay_key=store.put(lesion_photo(seed=4), kind="overlay").key)
    recorded: list[int] = []

    async def go():
        async with make_bot(_settings(local_api)) as bot:
            patient.set_faults("sendMessage", ["500"])  # the follow-up fails after the photo went out
            with pytest.raises(NetworkError):
                await deliver_case(bot, case=case, store=store, chat_id=304, texts=texts, on_first_sent=recorded.append)
            case.reply_message_id = recorded[0]  # what the worker stores through on_first_sent
            return await deliver_case(bot, case=case, store=store, chat_id=304, texts=texts)

    message_id, text = asyncio.run(go())
    photo, follow_up = patient.messages(304)
    assert photo["method"] == "sendPhoto" and follow_up["method"] == "sendMessage"
    assert message_id == photo["message_id"] == recorded[0]
    assert f"{photo['caption']}\n\n{follow_up['text']}" == text


def test_follow_up_telegram_refuses_is_sent_as_plain_text_after_the_photo(local_api, patient, tmp_path) -> None:
    path = tmp_path / "guidance.toml"
    path.write_text(f'[HIGH]\nen = "{"Please see a dermatologist within two weeks. " * 30}"\n', encoding="utf-8")
    texts = Texts.load(guidance_file=path)
    store = LocalImageStore(tmp_path / "images")
    patient.send_text(305, "hi")
    case = done_case("HIGH", overlay_key=store.put(lesion_photo(seed=5), kind="overlay").key)
    recorded: list[int] = []

    async def go():
        async with make_bot(_settings(local_api)) as bot:
            patient.set_faults("sendMessage", ["400"])  # Telegram refuses the follow-up's formatting
            return await deliver_case(
                bot, case=case, store=store, chat_id=305, texts=texts, on_first_sent=recorded.append
            )

    message_id, text = asyncio.run(go())
    photo, follow_up = patient.messages(305)
    assert photo["method"] == "sendPhoto" and message_id == photo["message_id"] == recorded[0]
    assert follow_up["method"] == "sendMessage" and follow_up["parse_mode"] is None
    assert follow_up["text"].endswith(visible(texts.get("en", "result.disclaimer")))
    assert f"{photo['caption']}\n\n{follow_up['text']}" == text


def test_plain_text_is_split_between_paragraphs_keeping_the_disclaimer_whole() -> None:
    from bot.delivery import plain_parts

    disclaimer = visible(TEXTS.get("en", "result.disclaimer"))
    text = "\n\n".join(["x" * 3000, "y" * 3000, disclaimer])
    parts = plain_parts(text)
    assert all(len(p) <= 4096 for p in parts) and "\n\n".join(parts) == text
    assert parts[-1].endswith(disclaimer)


@pytest.mark.parametrize(
    ("lang", "title", "disclaimer_start"),
    [
        ("en", "Case #77: a message from a clinician of the service", "This is not a diagnosis"),
        ("ko", "접수 번호 #77: 서비스 의료진이 보낸 메시지", "이 결과는 진단이 아니며"),
    ],
)
def test_a_clinicians_words_arrive_with_the_case_number_who_writes_and_the_disclaimer(
    local_api, patient, lang, title, disclaimer_start
) -> None:
    from skintriage.models import User

    patient.send_text(303, "hi")
    message = OutboxMessage(chat_id=303, case_id=77, kind="followup", text="  Dr. Kim: <please> call us & book  ")
    message.user = User(language=lang)

    async def go():
        async with make_bot(_settings(local_api)) as bot:
            return await send_outbox_message(bot, message=message, texts=TEXTS)

    message_id, text = asyncio.run(go())
    (sent,) = patient.messages(303)
    assert sent["message_id"] == message_id and sent["parse_mode"] == "HTML"
    # The words as written (markup-like characters shown, not parsed), between the header and the disclaimer.
    disclaimer = visible(TEXTS.get(lang, "result.disclaimer"))
    assert sent["text"].split("\n\n") == [title, "Dr. Kim: <please> call us & book", disclaimer]
    assert sent["text"].split("\n\n")[-1].startswith(disclaimer_start)
    assert text == sent["text"]


def test_a_follow_up_without_a_case_still_says_who_writes_and_carries_the_disclaimer(local_api, patient) -> None:
    patient.send_text(304, "hi")

    async def go():
        async with make_bot(_settings(local_api)) as bot:
            message = OutboxMessage(chat_id=304, text="Please call us.")
            return await send_outbox_message(bot, message=message, texts=TEXTS)

    _, text = asyncio.run(go())
    assert text == "\n\n".join(
        ["A message from a clinician of the service", "Please call us.", visible(TEXTS.get("en", "result.disclaimer"))]
    )
