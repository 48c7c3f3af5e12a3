"""The consent text (what it promises, in both languages) and asking again when it changes.

The patient is scripted against the real bot and the local Bot API server, as in test_conversation.py.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.consent import CONSENT_KEYS, consent_text, consent_version
from bot.i18n import Texts
from devtools.local_api import buttons
from skintriage.models import AuditEvent, CaseStatus
from skintriage.settings import Settings
from tests.factories import lesion_photo

OPERATOR = "Skin clinic Seoul, triage@example.org"

# What the consent must say, as the patient reads it (the operator and 21 days come from the settings).
MUST_SAY = {
    "en": ["not validated on phone photos", "fair skin", "HAM10000", "Europe and Australia",
           "clinicians of the service may look at your photos", "may send you messages here",
           "Photos are deleted after 21 days", "kept until you delete them", f"Who runs this service: {OPERATOR}.",
           "aged 18 and over", "under 18", "parent or guardian"],
    "ko": ["휴대폰 사진에서는 검증되지 않았고", "밝은 피부", "HAM10000",
           "유럽과 호주", "서비스 의료진이 보내 주신 사진",
           "이곳으로 메시지를 보낼 수 있습니다", "사진은 21일 후 삭제되며",
           "직접 삭제하실 때까지 보관됩니다", f"운영자: {OPERATOR}.",
           "만 18세 이상", "18세 미만", "부모님이나 보호자"],
}  # fmt: skip


@pytest.mark.parametrize(("lang", "code"), [("en", "en-GB"), ("ko", "ko-KR")])
def test_the_consent_says_the_limits_who_sees_the_photos_how_long_they_are_kept_who_runs_it_and_adults_only(
    start_bot, lang: str, code: str
) -> None:
    h = start_bot(RETENTION_DAYS=21, SERVICE_OPERATOR=OPERATOR)
    h.patient.send_command(140, "/start", language_code=code)
    intro = h.patient.wait_for(140, lambda e: e["method"] == "sendMessage")
    assert intro["text"] == "\n\n".join(h.expect(lang, k, days=21, operator=OPERATOR) for k in CONSENT_KEYS)
    for words in MUST_SAY[lang]:
        assert words in intro["text"], words
    assert buttons(intro)[0][1] == "consent:yes"


def test_the_version_changes_with_the_wording_in_either_language_and_with_the_values_the_text_states() -> None:
    texts, settings = Texts.load(), Settings()
    version = consent_version(texts, settings)
    assert len(version) == 12 and version == consent_version(Texts.load(), Settings())
    assert consent_version(texts, settings.model_copy(update={"service_operator": "someone else"})) != version
    assert consent_version(texts, settings.model_copy(update={"retention_days": 7})) != version
    for lang in ("en", "ko"):
        reworded = {k: dict(v) for k, v in texts.catalogues.items()}
        reworded[lang]["start.adults"] += " "
        assert consent_version(Texts(reworded), settings) != version, lang
    # A text outside the consent does not ask anyone again.
    reworded = {k: dict(v) for k, v in texts.catalogues.items()}
    reworded["ko"]["tips.photo"] += " "
    assert consent_version(Texts(reworded), settings) == version
    assert consent_text(texts, "ko", settings) != consent_text(texts, "en", settings)


def test_after_the_consent_text_changes_the_next_photo_asks_again_and_is_analysed_once_the_patient_agrees(
    start_bot, sqlite_url: str
) -> None:
    first = start_bot(database_url=sqlite_url, SERVICE_OPERATOR="the old operator")
    first.consent(150, "ko")
    agreed_to = first.user(150).consent_version
    assert agreed_to == first.services.consent_version
    first.runner.stop()

    # The operator changed, so the consent text changed: the same database, a new bot.
    h = start_bot(database_url=sqlite_url, SERVICE_OPERATOR=OPERATOR)
    assert h.services.consent_version != agreed_to
    since = h.patient.last_seq()
    update_id = h.patient.send_photo(150, lesion_photo(seed=15), caption="피가 나요")
    prompt = h.wait_startswith(150, h.expect("ko", "consent.changed"), since=since)
    intro = "\n\n".join(h.expect("ko", k, days=h.settings.retention_days, operator=OPERATOR) for k in CONSENT_KEYS)
    lead = [h.expect("ko", "consent.changed"), h.expect("ko", "consent.photo_kept")]
    assert prompt["text"] == "\n\n".join([*lead, intro])
    assert buttons(prompt)[0] == ("동의합니다", "consent:yes")
    h.wait_startswith(150, h.expect("ko", "warning.signs", signs="출혈"), since=since)  # the caption's bleeding
    assert h.cases(150) == []
    assert not list((h.settings.data_dir / "images").rglob("*.jpg"))  # only Telegram's reference is held
    held = h.user(150).pending_photos
    assert [p["update_id"] for p in held] == [update_id]
    assert h.user(150).consent_version == agreed_to

    # Agreeing again records the new version and analyses the photo they sent before.
    h.patient.press_button(150, prompt["message_id"], "consent:yes", language_code="ko-KR")
    h.wait_text(150, h.expect("ko", "consent.thanks_pending"), since=since)
    ack = h.wait_startswith(150, h.expect("ko", "intake.ack", case_id=0).split("#")[0], since=since)
    (case,) = h.cases(150)
    assert ack["text"] == h.expect("ko", "intake.ack", case_id=case.id)
    assert case.source_update_id == update_id and case.language == "ko"
    h.wait_startswith(150, h.expect("ko", "questions.intro", case_id=case.id), since=since)
    assert h.cases(150)[0].status == CaseStatus.QUEUED  # recorded after the acknowledgement, before the questions
    user = h.user(150)
    assert user.consent_version == h.services.consent_version and user.pending_photos is None
    with h.session() as session:
        given = select(AuditEvent).where(AuditEvent.action == "consent.given").order_by(AuditEvent.id)
        events = session.scalars(given).all()
    assert [e.detail["previous_version"] for e in events] == [None, agreed_to]
    assert events[-1].detail["pending_photos"] == 1

    # Now current: the next photo is analysed at once, and pressing the old button again only says so.
    since = h.patient.last_seq()
    h.patient.press_button(150, prompt["message_id"], "consent:yes", language_code="ko-KR")
    h.wait_startswith(150, h.expect("ko", "consent.already"), since=since)
    h.patient.send_photo(150, lesion_photo(seed=16))
    h.wait_startswith(150, h.expect("ko", "intake.ack", case_id=0).split("#")[0], since=since)
    assert len(h.cases(150)) == 2


def test_a_patient_with_an_outdated_consent_is_asked_again_on_start_and_on_text(start_bot) -> None:
    h = start_bot()
    h.consent(160)
    with h.session() as session:
        from skintriage.models import User

        session.scalar(select(User).where(User.telegram_user_id == 160)).consent_version = "older-text"
        session.commit()
    intro = "\n\n".join(
        h.expect("en", k, days=h.settings.retention_days, operator=h.settings.service_operator) for k in CONSENT_KEYS
    )
    since = h.patient.last_seq()
    h.patient.send_text(160, "hello")
    h.wait_text(160, "\n\n".join([h.expect("en", "consent.changed"), intro]), since=since)
    since = h.patient.last_seq()
    h.patient.send_command(160, "/start")
    prompt = h.wait_text(160, "\n\n".join([h.expect("en", "consent.changed"), intro]), since=since)
    h.patient.press_button(160, prompt["message_id"], "consent:yes")
    h.wait_text(160, "\n\n".join([h.expect("en", "consent.thanks"), h.expect("en", "tips.photo")]), since=since)
    since = h.patient.last_seq()
    h.patient.send_text(160, "hello")
    h.wait_text(160, h.expect("en", "other.text"), since=since)
