"""The patient's answer: composed from a finished case in their language, then sent.

Called by the worker's reply queue (`deliver_case`, `send_outbox_message`, `make_bot`) and by /history
to show a case again. Telegram shows at most 1024 characters under a photo, so a long answer keeps the
tier and the risk level in the caption and continues in a following message. Every answer carries
the disclaimer; answers from demo models say so first. When Telegram refuses an answer's photo or
formatting (BadRequest), the same answer goes out as plain text.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session
from telegram import Bot
from telegram.constants import MessageLimit, ParseMode
from telegram.error import BadRequest
from telegram.request import HTTPXRequest

from bot.i18n import Html, Texts, load_texts
from ml.labels import Tier
from ml.lesion_change import Direction, LesionChange, compare, measurable
from ml.red_flags import REASON_ACRAL, REASON_CHECKLIST, REASON_OUT_OF_SCOPE, AnsweredTier, answered_tier, urgency_index
from skintriage import cases
from skintriage.exceptions import ImageNotFound
from skintriage.models import Case, CaseStatus, OutboxMessage
from skintriage.settings import Settings, get_settings
from skintriage.storage import ImageStore

log = logging.getLogger(__name__)

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


# Why an UNCERTAIN case is uncertain (ml.policy REASON_*) -> the words the patient reads.
UNCERTAIN_WHY = {
    "near_threshold": "uncertain.near_line",
    "mel_most_likely": "uncertain.near_line",  # melanoma the likeliest class, though below the line
    "low_confidence": "uncertain.cannot_decide",
    "gate_unsure": "uncertain.borderline_photo",
    "clinical_photo": "uncertain.ordinary_photo",  # an ordinary photo is never told LOW (ml.policy)
}
# The kind of photo the models judged (ml.modality.Modality) -> the line that says so.
PHOTO_KIND = {"dermoscopic": "result.kind_dermoscopic", "clinical": "result.kind_clinical"}
# Near the melanoma line an UNCERTAIN answer takes HIGH's guidance: the same timeframe, in the same words.
NEAR_LINE_REASONS = frozenset({"near_threshold", "mel_most_likely"})
# Answers after which the deployment may promise a clinician's look (REVIEW_PROMISE_HOURS).
PROMISE_TIERS = frozenset({Tier.HIGH, Tier.UNCERTAIN})
# The most urgent first: a spot sent as several photos is answered with the first of these among them.
URGENCY: tuple[str, ...] = (Tier.HIGH, Tier.UNCERTAIN, Tier.MEDIUM, Tier.LOW)


def answered(case: Case) -> AnsweredTier:
    """The case's tier with the patient's answers applied (ml.red_flags); RETAKE for a refused photo, None failed."""
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

    The tier then and now, and which way the measurements moved (ml.lesion_change) in plain words, with the
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
    previous: Case | None = None,
) -> Reply:
    """The answer for a finished case (done, rejected or failed), in the case's language.

    Patients read the risk level in words, never the model's percentages (those come from dermoscopy data
    with another prevalence, and the console keeps them). `refused_before`: the patient's previous photo was
    refused too, so the answer sends them to a doctor instead of asking for a third photo. `album`: the case
    numbers of photos sent together with this one, whose most urgent answer this is. `review_promise_hours`
    (REVIEW_PROMISE_HOURS): HIGH and UNCERTAIN answers say a clinician looks within that time; None says nothing.
    `previous`: the patient's earlier case of the same spot (case.previous_case); a measured answer compares the two.
    """
    lang = case.language
    demo = [texts.get(lang, "result.demo_warning")] if case.demo_model else []
    disclaimer = texts.get(lang, "result.disclaimer")
    album_note = (
        [texts.get(lang, "result.album", count=len(album), cases=", ".join(f"#{i}" for i in album))]
        if len(album) > 1
        else []
    )
    result = answered(case)
    # The patient's answers may send a spot to a doctor whatever the photo could show (ml.red_flags).
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


async def send_reply(
    bot: Bot,
    *,
    chat_id: int,
    reply: Reply,
    store: ImageStore,
    note: str | None = None,
    first_sent: int | None = None,
    on_first_sent: Callable[[int], None] | None = None,
) -> int | None:
    """Send a composed answer (photo + caption, then the follow-up); returns the first message's id.

    A two-part answer can fail between its parts. `on_first_sent(message_id)` is called once the photo is out
    and before the follow-up, so the caller can record it; a later attempt passes that id as `first_sent` and
    only the follow-up is sent, instead of the photo a second time.
    """
    if first_sent is not None:
        if reply.follow_up:
            await bot.send_message(chat_id, reply.follow_up, parse_mode=ParseMode.HTML)
        return first_sent
    photo = None
    if reply.image_key:
        try:
            photo = store.get(reply.image_key)
        except ImageNotFound:
            log.info("image of an answer is gone (retention or deletion); sending the text only")
    if photo is None:
        text = "\n\n".join([reply.caption] + [p for p in (reply.follow_up, note) if p])
        message = await bot.send_message(chat_id, text[:TEXT_LIMIT], parse_mode=ParseMode.HTML)
        return message.message_id
    message = await bot.send_photo(chat_id, photo=photo, caption=reply.caption, parse_mode=ParseMode.HTML)
    if reply.follow_up:
        if on_first_sent is not None:
            on_first_sent(message.message_id)
        await bot.send_message(chat_id, reply.follow_up, parse_mode=ParseMode.HTML)
    return message.message_id


async def deliver_case(
    bot: Bot,
    *,
    case: Case,
    store: ImageStore,
    chat_id: int | None = None,
    texts: Texts | None = None,
    on_first_sent: Callable[[int], None] | None = None,
    refused_before: bool = False,
    album: Sequence[int] = (),
) -> tuple[int | None, str]:
    """Compose and send a finished case's answer; returns (message id, full text). Raises telegram.error.* on failure.

    `chat_id` defaults to case.user.chat_id (the case must then be attached to a session or have its user loaded).
    An undelivered case with a reply_message_id but no reply_text had its photo sent by an earlier attempt
    (cases.mark_reply_started): only the rest goes out. `refused_before` and `album`: see compose.
    """
    settings = get_settings()
    texts = texts or load_texts(settings.guidance_file)
    # Only a linked case loads its earlier one (a detached case without a link never touches the database).
    previous = case.previous_case if case.previous_case_id is not None else None
    reply = compose(
        case, texts=texts, refused_before=refused_before, album=album,
        review_promise_hours=settings.review_promise_hours, previous=previous,
    )  # fmt: skip
    chat_id = chat_id or case.user.chat_id
    started = [case.reply_message_id] if case.delivered_at is None and case.reply_text is None else []
    started = [m for m in started if m is not None]

    def first_out(message_id: int) -> None:
        started.append(message_id)
        if on_first_sent is not None:
            on_first_sent(message_id)

    try:
        message_id = await send_reply(
            bot, chat_id=chat_id, reply=reply, store=store, first_sent=started[0] if started else None,
            on_first_sent=first_out,
        )  # fmt: skip
    except BadRequest as exc:
        # Telegram refused the photo or the formatting (a bad upload, an entity it cannot parse). The patient
        # must still get the answer: the same words, disclaimer and guidance included, as plain text. When this
        # fails too (the chat is gone), the BadRequest goes up and the caller gives up on the answer.
        log.warning("case %d: Telegram refused the answer (%s); sending it as plain text", case.id, exc.message)
        rest = visible(reply.follow_up) if started and reply.follow_up else None
        text = rest if started else reply.full_text
        first = None
        for part in plain_parts(text or ""):
            sent = await bot.send_message(chat_id, part)
            first = first or sent.message_id
        return (started[0] if started else first), reply.full_text
    return message_id, reply.full_text


def plain_parts(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """Plain text in messages of at most `limit` characters, split between paragraphs so none is cut off."""
    parts: list[str] = []
    for paragraph in text.split("\n\n"):
        while len(paragraph) > limit:  # a single paragraph longer than a message (never in our texts)
            parts.append(paragraph[:limit])
            paragraph = paragraph[limit:]
        if parts and len(parts[-1]) + 2 + len(paragraph) <= limit:
            parts[-1] = f"{parts[-1]}\n\n{paragraph}"
        else:
            parts.append(paragraph)
    return [p for p in parts if p.strip()]


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
    return cases.queue_patient_message(session=session, case=answer, kind="answers", text=text).id


async def send_outbox_message(bot: Bot, *, message: OutboxMessage, texts: Texts | None = None) -> tuple[int, str]:
    """Compose an outbox message in the patient's language (bot.followups) and send it; returns (id, text read).

    The message's user, case and review must be loadable (attached to a session) or set. When Telegram refuses
    the formatting (BadRequest), the same words go out as plain text; when that fails too, the error goes up.
    """
    from bot.followups import compose as compose_followup

    outgoing = compose_followup(message, texts=texts or load_texts(get_settings().guidance_file))
    try:
        sent = await bot.send_message(
            message.chat_id, outgoing.html, parse_mode=ParseMode.HTML, reply_markup=outgoing.markup
        )
    except BadRequest as exc:
        log.warning("outbox message %s: Telegram refused it (%s); sending it as plain text", message.id, exc.message)
        plain = visible(outgoing.html)[:TEXT_LIMIT]
        sent = await bot.send_message(message.chat_id, plain, reply_markup=outgoing.markup)
    return sent.message_id, visible(outgoing.html)


def make_request(*, pool_size: int = 16) -> HTTPXRequest:
    """The HTTP client for Bot API calls: generous upload time for photos, quick failure on a dead connection."""
    return HTTPXRequest(
        connection_pool_size=pool_size,
        connect_timeout=5.0,
        read_timeout=15.0,
        write_timeout=15.0,
        media_write_timeout=60.0,
        pool_timeout=5.0,
    )


def make_bot(settings: Settings) -> Bot:
    """A telegram.Bot with the configured token and base URLs (the worker's reply queue uses it)."""
    return Bot(
        settings.telegram_bot_token.get_secret_value(),
        base_url=settings.telegram_api_base_url,
        base_file_url=settings.telegram_file_base_url,
        request=make_request(),
    )
