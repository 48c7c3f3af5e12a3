"""One chat's queue of updates cannot hold up other patients: the real bot against the local Bot API server.

A chat's updates run one at a time and in order; a chat that is busy (its photo downloads slowly and more
messages queue up behind it) holds one of the bot's shared slots (BOT_CONCURRENT_CHATS), never more.
"""

from __future__ import annotations

import time

from tests.factories import lesion_photo

SLOW_DOWNLOAD_S = 12.0


def test_a_chat_stuck_on_a_slow_download_does_not_hold_up_another_patients_photo(start_bot) -> None:
    h = start_bot(BOT_CONCURRENT_CHATS=3)
    busy, other = 6101, 6102
    h.consent(busy)
    h.consent(other)
    since = h.patient.last_seq()
    ack_prefix = h.expect("en", "intake.ack", case_id=0).split("#")[0]
    sticker_answer = h.expect("en", "other.sticker")

    h.patient.send_photo(busy, lesion_photo(seed=1), download_delay_s=SLOW_DOWNLOAD_S)
    for _ in range(4):  # more than the slots left: queued behind the download, they must not take them
        h.patient.send_sticker(busy)
    h.patient.wait_consumed()  # the bot holds all five of the busy chat's updates

    started = time.monotonic()
    h.patient.send_photo(other, lesion_photo(seed=2))
    other_ack = h.wait_startswith(other, ack_prefix, since=since, timeout=60)
    took = time.monotonic() - started

    busy_ack = h.wait_startswith(busy, ack_prefix, since=since, timeout=60)
    assert other_ack["seq"] < busy_ack["seq"], "the other patient waited for the busy chat's download"
    assert took < SLOW_DOWNLOAD_S / 2, f"the other patient's photo took {took:.1f} s to be acknowledged"
    # The busy chat's own updates ran in order: the photo's acknowledgement, then the four stickers' answers.
    h.patient.wait_for(busy, lambda e: len(_replies(h, busy, since)) >= 5, since=since, timeout=30)
    replies = _replies(h, busy, since)
    assert replies[0].startswith(ack_prefix)
    assert replies[1:] == [sticker_answer] * 4
    assert len(h.cases(busy)) == 1 and len(h.cases(other)) == 1


def _replies(h, chat_id: int, since: int) -> list[str]:  # noqa: ANN001 - the conftest's Harness
    return [e.get("text") or "" for e in h.patient.messages(chat_id, since=since) if e.get("text")]
