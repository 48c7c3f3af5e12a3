"""Sending the patient's answer (composed by bot.answers) and outbox messages through Telegram.

Called by the worker's reply queue (`deliver_case`, `send_outbox_message`, `make_bot`) and by /history
to show a case again. When Telegram refuses an answer's photo or formatting (BadRequest), the same answer
goes out as plain text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from telegram import Bot
from telegram.constants import ParseMode
from telegram.error import BadRequest
from telegram.request import HTTPXRequest

from bot.answers import TEXT_LIMIT, Reply, compose, visible
from bot.i18n import Texts, load_texts
from skintriage.exceptions import AnswerWithdrawn, ImageNotFound
from skintriage.models import Case, OutboxMessage
from skintriage.settings import Settings, get_settings
from skintriage.storage import ImageStore

log = logging.getLogger(__name__)


async def send_reply(
    bot: Bot,
    *,
    chat_id: int,
    reply: Reply,
    store: ImageStore,
    note: str | None = None,
    first_sent: int | None = None,
    on_first_sent: Callable[[int], None] | None = None,
    still_wanted: Callable[[], bool] | None = None,
) -> int | None:
    """Send a composed answer (photo + caption, then the follow-up); returns the first message's id.

    A two-part answer can fail between its parts. `on_first_sent(message_id)` is called once the photo is out
    and before the follow-up, so the caller can record it; a later attempt passes that id as `first_sent` and
    only the follow-up is sent, instead of the photo a second time. `still_wanted()` is asked right before the
    first message goes out (the photo read): False raises AnswerWithdrawn and nothing is sent.
    """

    def check() -> None:
        if still_wanted is not None and not still_wanted():
            raise AnswerWithdrawn("the answer's case was deleted before it went out")

    if first_sent is not None:
        if reply.follow_up:
            check()
            await bot.send_message(chat_id, reply.follow_up, parse_mode=ParseMode.HTML)
        return first_sent
    photo = None
    if reply.image_key:
        try:
            photo = store.get(reply.image_key)
        except ImageNotFound:
            log.info("image of an answer is gone (retention or deletion); sending the text only")
    check()
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
    still_wanted: Callable[[], bool] | None = None,
) -> tuple[int | None, str]:
    """Compose and send a finished case's answer; returns (message id, full text). Raises telegram.error.* on failure.

    `chat_id` defaults to case.user.chat_id (the case must then be attached to a session or have its user loaded).
    An undelivered case with a reply_message_id but no reply_text had its photo sent by an earlier attempt
    (cases.mark_reply_started): only the rest goes out. `refused_before` and `album`: see compose.
    `still_wanted()` is asked right before the first message goes out (see send_reply); False raises
    AnswerWithdrawn and nothing is sent (the patient deleted their data meanwhile). `on_first_sent` may raise
    AnswerWithdrawn too, to stop the rest of a two-part answer.
    """
    settings = get_settings()
    texts = texts or load_texts(settings.guidance_file)
    # Only a linked case loads its earlier one (a detached case without a link never touches the database).
    previous = case.previous_case if case.previous_case_id is not None else None
    reply = compose(
        case, texts=texts, refused_before=refused_before, album=album,
        review_promise_hours=settings.review_promise_hours, previous=previous,
    )  # fmt: skip
    if chat_id is None:
        if case.user is None:  # deleted since the case was read (the patient's /delete)
            raise AnswerWithdrawn(f"case {case.id} was deleted before its answer went out")
        chat_id = case.user.chat_id
    started = [case.reply_message_id] if case.delivered_at is None and case.reply_text is None else []
    started = [m for m in started if m is not None]

    def first_out(message_id: int) -> None:
        started.append(message_id)
        if on_first_sent is not None:
            on_first_sent(message_id)

    try:
        message_id = await send_reply(
            bot, chat_id=chat_id, reply=reply, store=store, first_sent=started[0] if started else None,
            on_first_sent=first_out, still_wanted=still_wanted,
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


async def send_outbox_message(
    bot: Bot,
    *,
    message: OutboxMessage,
    texts: Texts | None = None,
    still_wanted: Callable[[], bool] | None = None,
) -> tuple[int, str]:
    """Compose an outbox message in the patient's language (bot.followups) and send it; returns (id, text read).

    The message's user, case and review must be loadable (attached to a session) or set. When Telegram refuses
    the formatting (BadRequest), the same words go out as plain text; when that fails too, the error goes up.
    `still_wanted()` is asked once composed, right before sending: False raises AnswerWithdrawn (deleted meanwhile).
    """
    from bot.followups import compose as compose_followup

    outgoing = compose_followup(message, texts=texts or load_texts(get_settings().guidance_file))
    if still_wanted is not None and not still_wanted():
        raise AnswerWithdrawn(f"outbox message {message.id} was deleted before it went out")
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
