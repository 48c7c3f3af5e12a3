"""What the patient is told: the answer composed from a finished case in a language, and the follow-up when
their answers to the questions raise its urgency. No sending here (bot.delivery sends), so the console can show
an answer in the reviewer's language without Telegram's client library.

Telegram shows at most 1024 characters under a photo, so a long answer keeps the tier and the risk level in the
caption and continues in a following message. Every answer carries the disclaimer; answers from demo models say
so first.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session
from telegram.constants import MessageLimit  # Telegram's length limits: constants only, no client

from bot.i18n import Html, Texts
from ml.triage.lesion_change import Direction, LesionChange, compare, measurable
from ml.triage.red_flags import (
    REASON_ACRAL,
    REASON_CHECKLIST,
    REASON_OUT_OF_SCOPE,
    AnsweredTier,
    answered_tier,
    urgency_index,
)
from skintriage import cases
from skintriage.models import Case, CaseStatus
from skintriage.vocabulary import Modality, OutboxKind, Tier

CAPTION_LIMIT = MessageLimit.CAPTION_LENGTH
TEXT_LIMIT = MessageLimit.MAX_TEXT_LENGTH
_TAG = re.compile(r"<[^>]+>")


def visible(text: str) -> str:
    """What a Telegram client shows for an HTML text."""
    return html.unescape(_TAG.sub("", text))


def telegram_length(text: str) -> int:
    """Length of an HTML text as Telegram counts it (UTF-16 code units of the visible text)."""
    return len(visible(text).encode("utf-16-le")) // 2


@dataclass(frozen=True)
class Reply:
    """A composed answer: an optional image key, the caption (or the text) and a follow-up message."""

    image_key: str | None
    caption: str
    follow_up: str | None = None

    @property
    def full_text(self) -> str:
        """Everything the patient reads, as plain text (stored as the case's reply_text)."""
        parts = [self.caption] + ([self.follow_up] if self.follow_up else [])
        return "\n\n".join(visible(p) for p in parts)


def _split(head: list[str], tail: list[str], texts: Texts, lang: str) -> tuple[str, str | None]:
    """Caption = head + tail when it fits under a photo; otherwise head in the caption, tail below."""
    whole = "\n\n".join(head + tail)
    if telegram_length(whole) <= CAPTION_LIMIT:
        return whole, None
    caption = "\n\n".join([*head, texts.get(lang, "result.continued")])
    if telegram_length(caption) > CAPTION_LIMIT:
        caption, tail = head[0], head[1:] + tail
    return caption, "\n\n".join(tail)


# Why an UNCERTAIN case is uncertain (ml.triage.policy REASON_*) -> the words the patient reads.
UNCERTAIN_WHY = {
    "near_threshold": "uncertain.near_line",
    "mel_most_likely": "uncertain.near_line",  # melanoma the likeliest class, though below the line
    "low_confidence": "uncertain.cannot_decide",
    "gate_unsure": "uncertain.borderline_photo",
    "clinical_photo": "uncertain.ordinary_photo",  # an ordinary photo is never told LOW (ml.triage.policy)
}
# The kind of photo the models judged -> the line that says so.
PHOTO_KIND = {Modality.DERMOSCOPIC: "result.kind_dermoscopic", Modality.CLINICAL: "result.kind_clinical"}
# Near the melanoma line an UNCERTAIN answer takes HIGH's guidance: the same timeframe, in the same words.
NEAR_LINE_REASONS = frozenset({"near_threshold", "mel_most_likely"})
# Answers after which the deployment may promise a clinician's look (REVIEW_PROMISE_HOURS).
PROMISE_TIERS = frozenset({Tier.HIGH, Tier.UNCERTAIN})
# The most urgent first: a spot sent as several photos is answered with the first of these among them.
URGENCY: tuple[str, ...] = (Tier.HIGH, Tier.UNCERTAIN, Tier.MEDIUM, Tier.LOW)


def answered(case: Case) -> AnsweredTier:
    """The case's tier with the patient's answers applied (ml.triage.red_flags); RETAKE if refused, None if failed."""
    photo_tier = {CaseStatus.DONE: case.tier or Tier.UNCERTAIN, CaseStatus.REJECTED: Tier.RETAKE}.get(case.status)
    if photo_tier is not None and photo_tier not in URGENCY and photo_tier != Tier.RETAKE:
        photo_tier = Tier.UNCERTAIN  # a missing or unknown stored tier is answered as UNCERTAIN (compose)
    return answered_tier(str(photo_tier) if photo_tier else None, case.patient_answers)


def told_tier(case: Case) -> str | None:
    """The tier the composed answer tells the patient (answers included): cases.told_tier when it is sent."""
    tier = answered(case).tier
    return str(tier) if tier is not None else None


def urgency_rank(case: Case) -> tuple[int, int]:
    """Sort key, most urgent first: by tier with the patient's answers (a near-line UNCERTAIN ranks with HIGH),
    then refusals, then failures."""
    if case.status == CaseStatus.DONE and case.tier in URGENCY:
        result = answered(case)
        rank = URGENCY.index(result.tier)
        if result.tier == Tier.UNCERTAIN and not result.raised and case.tier_reason in NEAR_LINE_REASONS:
            rank = 0
        return rank, 0 if result.tier == Tier.HIGH else 1
    return (len(URGENCY), 0) if case.status == CaseStatus.REJECTED else (len(URGENCY) + 1, 0)


def _option(texts: Texts, lang: str, answer: str) -> str:
    """A "question:option" answer as the button the patient tapped, in quotes."""
    question, _, option = answer.partition(":")
    return texts.get(lang, "answers.quoted", option=texts.get(lang, f"option.{question}.{option}"))


def answers_raised(texts: Texts, lang: str, result: AnsweredTier) -> Html:
    """Which answers raised the urgency, and why (empty when they did not)."""
    if not result.raised:
        return Html("")
    named = ", ".join(_option(texts, lang, a) for a in result.raised_by)
    if result.reason == REASON_CHECKLIST:
        why = texts.get(lang, "answers.why.checklist", points=result.checklist.points)
    elif result.reason == REASON_OUT_OF_SCOPE:
        why = Html(" ".join(texts.get(lang, f"answers.scope.{s}") for s in result.scope if s != "acral"))
    else:
        why = texts.get(lang, f"answers.why.{result.reason}")
    return texts.get(lang, "answers.raised", answers=Html(named), why=why)


def _scope_notes(texts: Texts, lang: str, result: AnsweredTier) -> list[Html]:
    """Why the models may not fit this spot (a child, a nail, ...), when the raise did not already say so."""
    if result.reason == REASON_OUT_OF_SCOPE:
        said = {s for s in result.scope if s != "acral"}
    else:
        said = {"acral"} if result.reason == REASON_ACRAL else set()
    return [texts.get(lang, f"answers.scope.{s}") for s in result.scope if s not in said]


def _risk(texts: Texts, lang: str, tier: str, reason: str | None) -> Html:
    if tier != Tier.UNCERTAIN:
        return texts.get(lang, f"risk.{tier}")
    return texts.get(lang, "risk.UNCERTAIN", why=texts.get(lang, UNCERTAIN_WHY.get(reason or "", "uncertain.unknown")))


def _percent(share: float) -> str:
    return f"{share * 100:.1f}"


def _change_lines(texts: Texts, lang: str, change: LesionChange) -> list[Html]:
    word = {d: texts.get(lang, f"compare.{d}") for d in Direction}
    after = change.colours_after
    return [
        texts.get(
            lang, "compare.asymmetry", major=word[change.asymmetry_major_axis], minor=word[change.asymmetry_minor_axis]
        ),
        texts.get(lang, "compare.border", change=word[change.border]),
        texts.get(lang, "compare.colours", change=word[change.colours], before=change.colours_before, after=after),
        texts.get(
            lang, "compare.size", before=_percent(change.area_share_before), after=_percent(change.area_share_after)
        ),
    ]


def comparison(texts: Texts, lang: str, case: Case, previous: Case | None) -> list[Html]:
    """The section comparing a case with the patient's earlier photo of the same spot (empty when none).

    The tier then and now, and which way the measurements moved (ml.triage.lesion_change) in plain words, with the
    caveat that a difference between two photos is no diagnosis; size is never compared across photos.
    """
    if previous is None:
        return []
    then = previous.told_tier or told_tier(previous)  # a refused photo: RETAKE; a failed one: no answer
    before = texts.get(lang, f"tier.{then}") if then else texts.get(lang, "compare.no_tier")
    lines = [
        texts.get(lang, "compare.title", case_id=previous.id, date=previous.received_at.date().isoformat()),
        texts.get(lang, "compare.tiers", before=before, after=texts.get(lang, f"tier.{answered(case).tier}")),
    ]
    change = compare(previous.measurements, case.measurements)
    if change is not None:
        lines.extend(_change_lines(texts, lang, change))
    elif not measurable(previous.measurements):
        lines.append(texts.get(lang, "compare.no_earlier_measurements"))
    else:
        lines.append(texts.get(lang, "compare.no_measurements"))
    lines.append(texts.get(lang, "compare.caution"))
    return [Html("\n".join(lines))]


def compose(
    case: Case,
    *,
    texts: Texts,
    refused_before: bool = False,
    album: Sequence[int] = (),
    review_promise_hours: int | None = None,
    lang: str | None = None,
    previous: Case | None = None,
) -> Reply:
    """The answer for a finished case (done, rejected or failed), in the case's language (or `lang`).

    Patients read the risk level in words, never the model's percentages (those come from dermoscopy data
    with another prevalence, and the console keeps them). `refused_before`: the patient's previous photo was
    refused too, so the answer sends them to a doctor instead of asking for a third photo. `album`: the case
    numbers of photos sent together with this one, whose most urgent answer this is. `review_promise_hours`
    (REVIEW_PROMISE_HOURS): HIGH and UNCERTAIN answers say a clinician looks within that time; None says nothing.
    `lang`: another language than the patient's, for the console to show the answer to a reviewer (retell).
    `previous`: the patient's earlier case of the same spot (case.previous_case); a measured answer compares the two.
    """
    lang = lang or case.language
    demo = [texts.get(lang, "result.demo_warning")] if case.demo_model else []
    disclaimer = texts.get(lang, "result.disclaimer")
    album_note = (
        [texts.get(lang, "result.album", count=len(album), cases=", ".join(f"#{i}" for i in album))]
        if len(album) > 1
        else []
    )
    result = answered(case)
    # The patient's answers may send a spot to a doctor whatever the photo could show (ml.triage.red_flags).
    by_answers = [answers_raised(texts, lang, result), texts.guidance(lang, result.tier)] if result.raised else []
    if case.status == CaseStatus.FAILED:
        failed = texts.get(lang, "result.failed", case_id=case.id)
        return Reply(None, "\n\n".join([failed, *by_answers, *album_note, disclaimer]))
    if case.status == CaseStatus.REJECTED or case.tier == Tier.RETAKE:
        advice = texts.get(lang, "result.retake_again") if refused_before else texts.guidance(lang, Tier.RETAKE)
        body = [
            *demo,
            texts.get(lang, "result.retake_title", case_id=case.id),
            texts.retake_reason(lang, case.retake_reason),
            advice,
            *by_answers,
            *album_note,
            disclaimer,
        ]
        return Reply(None, "\n\n".join(body))
    photo_tier = case.tier if case.tier in {t.value for t in Tier} else Tier.UNCERTAIN
    tier = result.tier
    kind = [texts.get(lang, PHOTO_KIND[case.modality])] if case.modality in PHOTO_KIND else []
    if result.raised:
        why = [by_answers[0], texts.get(lang, "answers.photo_alone", tier=texts.get(lang, f"tier.{photo_tier}"))]
    else:
        why = [_risk(texts, lang, tier, case.tier_reason)]
    head = [
        *demo,
        texts.get(lang, "result.title", case_id=case.id, tier=texts.get(lang, f"tier.{tier}")),
        *why,
        *kind,
    ]
    near_line = tier == Tier.UNCERTAIN and not result.raised and case.tier_reason in NEAR_LINE_REASONS
    tail = [*_scope_notes(texts, lang, result), texts.guidance(lang, Tier.HIGH if near_line else tier)]
    tail.extend(comparison(texts, lang, case, previous))
    if review_promise_hours and tier in PROMISE_TIERS:
        tail.append(texts.get(lang, "result.review_promise", hours=review_promise_hours))
    tail.extend(album_note)
    image_key = case.overlay_key or case.image_key
    if case.overlay_key:
        tail.append(texts.get(lang, "result.outline_note"))
    if not case.demo_model:
        tail.append(texts.get(lang, "result.research_notice"))
    tail.append(disclaimer)
    caption, follow_up = _split(head, tail, texts, lang)
    if image_key is None:
        return Reply(None, "\n\n".join([caption] + ([follow_up] if follow_up else [])))
    return Reply(image_key, caption, follow_up)


def answer_plan(*, session: Session, case: Case) -> tuple[Case, list[int], bool]:
    """How a case's album is answered: (the case whose answer is sent, the album's case ids, refused before).

    Photos sent together (one Telegram album) are one spot answered once, with its most urgent photo's answer
    naming the others (ids empty for a photo sent alone). The answer to a refused photo says to see a doctor
    when the patient's previous photo was refused too (or two photos of the album were). Reads only.
    """
    album = cases.album_of(session=session, case=case)
    answer = min(album, key=lambda c: (urgency_rank(c), c.id))
    previous = cases.previous_case(session=session, case=album[0])
    refused = sum(c.status == CaseStatus.REJECTED for c in album)
    refused_before = answer.status == CaseStatus.REJECTED and (
        refused >= 2 or (previous is not None and previous.status == CaseStatus.REJECTED)
    )
    return answer, [c.id for c in album] if len(album) > 1 else [], refused_before


def retell(*, session: Session, case: Case, lang: str, texts: Texts, review_promise_hours: int | None) -> str:
    """The answer the patient got for this case (its album's answer), composed again in `lang`, as plain text.

    For the console: a reviewer reads a Korean patient's answer in English beside what was sent. It is
    composed from the case as it is now, so answers the patient gave after it was sent (which send a
    follow-up of their own) and a changed REVIEW_PROMISE_HOURS or GUIDANCE_FILE show here and not in reply_text.
    """
    answer, album, refused_before = answer_plan(session=session, case=case)
    reply = compose(
        answer, texts=texts, refused_before=refused_before, album=album,
        review_promise_hours=review_promise_hours, lang=lang,
        previous=answer.previous_case if answer.previous_case_id is not None else None,
    )  # fmt: skip
    return reply.full_text


def answers_followup(case: Case, *, texts: Texts) -> tuple[str, str] | None:
    """(new tier, plain text) of a follow-up when the patient's answers make a sent answer more urgent; else None."""
    result = answered(case)
    if not result.raised or urgency_index(result.tier) >= urgency_index(case.told_tier):
        return None
    lang = case.language
    body = [
        texts.get(lang, "answers.followup", case_id=case.id),
        answers_raised(texts, lang, result),
        texts.get(lang, "answers.now", tier=texts.get(lang, f"tier.{result.tier}")),
        texts.guidance(lang, result.tier),
        texts.get(lang, "result.disclaimer"),
    ]
    return str(result.tier), visible("\n\n".join(body))


def queue_answers_followup(*, session: Session, case: Case, texts: Texts) -> int | None:
    """Queue one follow-up (an outbox message) when answers given after the answer was sent raise its urgency.

    Returns the message id to send once the caller has committed, or None. Called by the bot after a tap and by
    the reply queue after sending an answer (a tap may land while the answer is on its way); cases.raise_told_tier
    lets only one of them queue it.
    """
    album = cases.album_of(session=session, case=case)
    answer = min(album, key=lambda c: (urgency_rank(c), c.id))
    if answer.delivered_at is None or answer.reply_text is None:
        return None  # not sent yet (its answer will use the answers), or undeliverable
    found = answers_followup(answer, texts=texts)
    if found is None:
        return None
    tier, text = found
    if not cases.raise_told_tier(session=session, case_ids=[c.id for c in album], was=answer.told_tier, tier=tier):
        return None
    return cases.queue_patient_message(session=session, case=answer, kind=OutboxKind.ANSWERS, text=text).id
