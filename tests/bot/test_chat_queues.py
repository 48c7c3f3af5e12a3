"""One chat's queue of updates cannot hold up other patients: the real bot against the local Bot API server.

A chat's updates run one at a time and in order; a chat that is busy (its photo downloads slowly and more
messages queue up behind it) holds one of the bot's shared slots (BOT_CONCURRENT_CHATS), never more.
"""

from __future__ import annotations

import time

import pytest

from tests.factories import lesion_photo

SLOW_DOWNLOAD_S = 12.0


@pytest.mark.slow
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
    # The busy chat's own updates ran in order: the photo's acknowledgement and the questions of a new spot,
    # then the four stickers' answers.
    h.patient.wait_for(busy, lambda e: len(_replies(h, busy, since)) >= 6, since=since, timeout=30)
    replies = _replies(h, busy, since)
    (case,) = h.cases(busy)
    assert replies[0].startswith(ack_prefix)
    assert replies[1].startswith(h.expect("en", "questions.intro", case_id=case.id))
    assert replies[2:] == [sticker_answer] * 4
    assert len(h.cases(busy)) == 1 and len(h.cases(other)) == 1


def _replies(h, chat_id: int, since: int) -> list[str]:  # h: the conftest's Harness
    return [e.get("text") or "" for e in h.patient.messages(chat_id, since=since) if e.get("text")]


def test_the_processor_runs_a_chats_updates_in_order_past_a_failure_and_frees_waiting_slots() -> None:
    import asyncio

    from telegram import Chat, Message, Update

    from bot.app import PerChatUpdateProcessor

    def update(update_id: int, chat_id: int) -> Update:
        chat = Chat(chat_id, Chat.PRIVATE)
        return Update(update_id, message=Message(update_id, None, chat))  # type: ignore[arg-type]

    async def scenario() -> tuple[list[str], int]:
        processor = PerChatUpdateProcessor(2)
        done: list[str] = []
        release = asyncio.Event()

        async def handle(name: str, *, wait: bool = False, fail: bool = False) -> None:
            if wait:
                await release.wait()
            if fail:
                raise RuntimeError("a handler failed (the error handler has seen it)")
            done.append(name)

        busy = [
            asyncio.create_task(processor.process_update(update(1, 10), handle("a1", wait=True))),
            asyncio.create_task(processor.process_update(update(2, 10), handle("a2", fail=True))),
            asyncio.create_task(processor.process_update(update(3, 10), handle("a3"))),
        ]
        await asyncio.sleep(0.05)
        used = processor.current_concurrent_updates  # the busy chat holds one of the two slots
        await asyncio.wait_for(processor.process_update(update(4, 20), handle("b1")), 1)
        release.set()
        await asyncio.gather(*busy)
        return done, used

    done, used = asyncio.run(scenario())
    assert used == 1
    assert done == ["b1", "a1", "a3"]
