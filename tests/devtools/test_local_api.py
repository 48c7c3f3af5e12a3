"""The local Bot API server, driven by the real python-telegram-bot library over HTTP."""

from __future__ import annotations

import asyncio
import io
import time

import pytest
from PIL import Image
from telegram import Bot, BotCommand, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, RetryAfter, TimedOut

from devtools.local_api import LocalBotAPI, LocalBotAPIClient, buttons
from tests.factories import lesion_photo


def run(coro):
    return asyncio.run(coro)


def make_bot(api: LocalBotAPI, token: str | None = None) -> Bot:
    return Bot(token or api.token, base_url=api.api_base_url, base_file_url=api.file_base_url)


def test_get_me_and_wrong_token(local_api: LocalBotAPI) -> None:
    async def go():
        async with make_bot(local_api) as bot:
            me = await bot.get_me()
        assert me.is_bot and me.id == 123456 and me.username
        with pytest.raises(InvalidToken):
            async with make_bot(local_api, "999:wrong-token") as bad:
                await bad.get_me()

    run(go())


def test_patient_photo_arrives_as_several_sizes_and_downloads(
    local_api: LocalBotAPI, patient: LocalBotAPIClient
) -> None:
    original = lesion_photo(1600, 1200, seed=1)
    update_id = patient.send_photo(7, original, caption="on my arm", language_code="ko")

    async def go():
        async with make_bot(local_api) as bot:
            updates = await bot.get_updates(timeout=1)
            message = updates[0].message
            sizes = message.photo
            file = await bot.get_file(sizes[-1].file_id)
            data = bytes(await file.download_as_bytearray())
            return updates, message, sizes, data

    updates, message, sizes, data = run(go())
    assert [u.update_id for u in updates] == [update_id]
    assert message.chat.type == "private" and message.chat.id == 7
    assert message.from_user.language_code == "ko" and message.caption == "on my arm"
    assert [(s.width, s.height) for s in sizes] == [(90, 68), (320, 240), (800, 600), (1280, 960)]
    assert len({s.file_unique_id for s in sizes}) == 4
    assert Image.open(io.BytesIO(data)).size == (1280, 960)  # recompressed like Telegram, not the original
    assert data != original


def test_a_photo_between_telegram_sizes_keeps_its_own_size_as_the_largest(
    local_api: LocalBotAPI, patient: LocalBotAPIClient
) -> None:
    patient.send_photo(7, lesion_photo(600, 450, seed=1))

    async def go():
        async with make_bot(local_api) as bot:
            return (await bot.get_updates(timeout=1))[0].message.photo

    assert [(s.width, s.height) for s in run(go())] == [(90, 68), (320, 240), (600, 450)]


def test_document_keeps_bytes_name_and_mime_type(local_api: LocalBotAPI, patient: LocalBotAPIClient) -> None:
    png = lesion_photo(300, 200, fmt="PNG")
    patient.send_document(8, png, "mole.png", "image/png")

    async def go():
        async with make_bot(local_api) as bot:
            (update,) = await bot.get_updates(timeout=1)
            doc = update.message.document
            data = bytes(await (await bot.get_file(doc.file_id)).download_as_bytearray())
            return doc, data

    doc, data = run(go())
    assert (doc.file_name, doc.mime_type, doc.file_size) == ("mole.png", "image/png", len(png))
    assert data == png


def test_offset_confirms_and_long_poll_wakes_on_new_update(local_api: LocalBotAPI, patient: LocalBotAPIClient) -> None:
    first = patient.send_text(9, "hello")

    async def go():
        async with make_bot(local_api) as bot:
            assert [u.update_id for u in await bot.get_updates(timeout=0)] == [first]
            # Not confirmed yet: the same update comes again.
            assert [u.update_id for u in await bot.get_updates(timeout=0)] == [first]
            poll = asyncio.create_task(bot.get_updates(offset=first + 1, timeout=20))
            await asyncio.sleep(0.2)
            second = await asyncio.to_thread(patient.send_command, 9, "/start")
            updates = await poll
            return second, updates

    second, updates = run(go())
    assert [u.update_id for u in updates] == [second]
    assert updates[0].message.text == "/start"
    assert updates[0].message.entities[0].type == "bot_command"
    assert patient.status()["pending_updates"] == 0


def test_redelivered_update_comes_again_with_the_same_id(local_api: LocalBotAPI, patient: LocalBotAPIClient) -> None:
    first = patient.send_text(10, "hi")

    async def go():
        async with make_bot(local_api) as bot:
            await bot.get_updates(timeout=0)
            assert await bot.get_updates(offset=first + 1, timeout=0) == ()
            await asyncio.to_thread(patient.redeliver, first)
            return await bot.get_updates(offset=first + 1, timeout=1)

    assert [u.update_id for u in run(go())] == [first]


def test_bot_messages_are_recorded_with_buttons_edits_and_photos(
    local_api: LocalBotAPI, patient: LocalBotAPIClient
) -> None:
    patient.send_text(11, "hi")
    photo = lesion_photo(seed=3)
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Yes", callback_data="consent:yes")]])

    async def go():
        async with make_bot(local_api) as bot:
            msg = await bot.send_message(11, "<b>Hello</b> &amp; welcome", parse_mode="HTML", reply_markup=keyboard)
            await bot.send_chat_action(11, "upload_photo")
            sent_photo = await bot.send_photo(11, photo, caption="result")
            again = await bot.send_photo(11, sent_photo.photo[-1].file_id)
            await bot.edit_message_text("Thanks", chat_id=11, message_id=msg.message_id)
            await bot.send_document(11, b"%PDF-1.4", filename="report.pdf")
            return msg, sent_photo, again

    msg, sent_photo, again = run(go())
    events = patient.sent(11)
    assert [e["method"] for e in events] == [
        "sendMessage", "sendChatAction", "sendPhoto", "sendPhoto", "editMessageText", "sendDocument",
    ]  # fmt: skip
    assert events[0]["text"] == "Hello & welcome" and events[0]["raw_text"] == "<b>Hello</b> &amp; welcome"
    assert buttons(events[0]) == [("Yes", "consent:yes")]
    assert events[1]["action"] == "upload_photo"
    assert patient.file_bytes(events[2]["photo"]) == photo
    assert events[3]["photo"] == events[2]["photo"]
    assert events[4]["text"] == "Thanks" and events[4]["message_id"] == msg.message_id
    assert msg.message_id == 2  # message ids are per chat, shared with the patient's own message
    assert [e["method"] for e in patient.messages(11)] == ["sendMessage", "sendPhoto", "sendPhoto", "sendDocument"]


def test_button_press_reaches_the_bot_and_is_answered_once(local_api: LocalBotAPI, patient: LocalBotAPIClient) -> None:
    patient.send_text(12, "hi")
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Delete", callback_data="delete:yes")]])

    async def go():
        async with make_bot(local_api) as bot:
            updates = await bot.get_updates(timeout=0)
            msg = await bot.send_message(12, "Sure?", reply_markup=keyboard)
            await asyncio.to_thread(patient.press_button, 12, msg.message_id, "delete:yes")
            (update,) = await bot.get_updates(offset=updates[-1].update_id + 1, timeout=1)
            query = update.callback_query
            await query.answer("Deleted")
            with pytest.raises(BadRequest, match="Query is too old"):
                await query.answer("again")
            await query.edit_message_reply_markup(None)
            return query

    query = run(go())
    assert query.data == "delete:yes" and query.from_user.id == 12 and query.message.text == "Sure?"
    answers = [e for e in patient.sent(12) if e["method"] == "answerCallbackQuery"]
    assert [a["text"] for a in answers] == ["Deleted"]
    assert patient.sent(12)[-1]["method"] == "editMessageReplyMarkup"


def test_telegram_limits_are_enforced(local_api: LocalBotAPI, patient: LocalBotAPIClient) -> None:
    patient.send_text(13, "hi")

    async def go():
        async with make_bot(local_api) as bot:
            with pytest.raises(BadRequest, match="caption is too long"):
                await bot.send_photo(13, lesion_photo(), caption="x" * 1025)
            await bot.send_photo(13, lesion_photo(), caption="가" * 1024)
            with pytest.raises(BadRequest, match="too long"):
                await bot.send_message(13, "x" * 4097)
            with pytest.raises(BadRequest, match="parse entities"):
                await bot.send_message(13, "<blink>x</blink>", parse_mode="HTML")
            with pytest.raises(BadRequest, match="Chat not found"):
                await bot.send_message(999, "nobody here")
            with pytest.raises(BadRequest, match="(?i)button_data_invalid"):
                markup = InlineKeyboardMarkup([[InlineKeyboardButton("x", callback_data="y" * 65)]])
                await bot.send_message(13, "x", reply_markup=markup)
            with pytest.raises(BadRequest, match="(?i)image_process_failed"):
                await bot.send_photo(13, b"not an image")
            await bot.set_my_commands([BotCommand("start", "Start"), BotCommand("help", "Help")], language_code="ko")
            return await bot.get_my_commands(language_code="ko")

    commands = run(go())
    assert [c.command for c in commands] == ["start", "help"]


def test_faults_are_injected_per_method_in_order(local_api: LocalBotAPI, patient: LocalBotAPIClient) -> None:
    patient.send_text(14, "hi")
    patient.set_faults("sendMessage", ["429:3", "500", "502", "timeout:1"])

    async def go():
        async with make_bot(local_api) as bot:
            with pytest.raises(RetryAfter) as retry:
                await bot.send_message(14, "a")
            with pytest.raises(NetworkError, match="Internal Server Error"):
                await bot.send_message(14, "b")
            with pytest.raises(NetworkError, match="Bad Gateway"):
                await bot.send_message(14, "c")
            with pytest.raises(TimedOut):
                await bot.send_message(14, "d", read_timeout=0.3)
            await bot.send_chat_action(14, "typing")  # other methods are unaffected
            await bot.send_message(14, "e")
            return retry.value

    retry = run(go())
    seconds = retry.retry_after  # an int in PTB 22 by default, a timedelta when opted in
    assert getattr(seconds, "total_seconds", lambda: seconds)() == 3
    assert [e.get("text") for e in patient.messages(14)] == ["e"]


def test_timeout_after_applies_the_call_but_loses_the_answer(
    local_api: LocalBotAPI, patient: LocalBotAPIClient
) -> None:
    patient.send_text(15, "hi")
    patient.set_faults("sendMessage", ["timeout-after:1"])

    async def go():
        async with make_bot(local_api) as bot:
            with pytest.raises(TimedOut):
                await bot.send_message(15, "result", read_timeout=0.3)

    run(go())
    assert [e["text"] for e in patient.messages(15)] == ["result"]


def test_delay_makes_a_call_slow_but_successful(local_api: LocalBotAPI, patient: LocalBotAPIClient) -> None:
    patient.send_text(18, "hi")
    patient.set_faults("sendMessage", ["delay:0.5"])

    async def go():
        async with make_bot(local_api) as bot:
            started = time.monotonic()
            await bot.send_message(18, "slow")
            slow = time.monotonic() - started
            await bot.send_message(18, "quick")
            return slow

    assert run(go()) >= 0.5
    assert [e["text"] for e in patient.messages(18)] == ["slow", "quick"]


def test_blocked_patient_gives_forbidden(local_api: LocalBotAPI, patient: LocalBotAPIClient) -> None:
    patient.send_text(16, "hi")
    patient.block(16)

    async def go():
        async with make_bot(local_api) as bot:
            with pytest.raises(Forbidden, match="blocked"):
                await bot.send_message(16, "hello")

    run(go())


def test_group_chat_edited_message_and_sticker_updates(local_api: LocalBotAPI, patient: LocalBotAPIClient) -> None:
    patient.send_text(17, "in a group", chat_type="group")
    first = patient.send_message(17, text="helo")
    patient.edit_message(17, first["message_id"], "hello")
    patient.send_sticker(17)

    async def go():
        async with make_bot(local_api) as bot:
            return await bot.get_updates(timeout=0)

    group, plain, edited, sticker = run(go())
    assert group.message.chat.type == "group" and group.message.chat.id < 0
    assert plain.message.text == "helo"
    assert edited.edited_message.text == "hello" and edited.edited_message.message_id == first["message_id"]
    assert sticker.message.sticker.emoji


@pytest.mark.slow
def test_delete_webhook_can_drop_pending_updates(local_api: LocalBotAPI, patient: LocalBotAPIClient) -> None:
    patient.send_text(18, "old")

    async def go():
        async with make_bot(local_api) as bot:
            await bot.delete_webhook(drop_pending_updates=True)
            return await bot.get_updates(timeout=0)

    assert run(go()) == ()


def test_cli_serves_and_prints_the_base_urls(tmp_path) -> None:
    import os
    import subprocess
    import sys

    import httpx

    env = {**os.environ, "TELEGRAM_BOT_TOKEN": "4242:CLI-test-token-abcdefghijklmnop", "DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "skintriage.cli", "local-bot-api", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        api_line = proc.stdout.readline().strip()
        file_line = proc.stdout.readline().strip()
        assert api_line.startswith("TELEGRAM_API_BASE_URL=http://127.0.0.1:")
        assert file_line.startswith("TELEGRAM_FILE_BASE_URL=http://127.0.0.1:")
        base = api_line.split("=", 1)[1]
        me = httpx.get(f"{base}4242:CLI-test-token-abcdefghijklmnop/getMe").json()
        assert me["ok"] and me["result"]["id"] == 4242
        assert httpx.get(f"{base}1:wrong/getMe").status_code == 401
    finally:
        proc.terminate()
        proc.wait(10)


def test_delay_after_applies_the_call_at_once_and_answers_late(
    local_api: LocalBotAPI, patient: LocalBotAPIClient
) -> None:
    patient.send_text(16, "hi")
    patient.set_faults("sendMessage", ["delay-after:1.5"])

    async def go() -> tuple[float, float]:
        async with make_bot(local_api) as bot:
            started = time.monotonic()
            task = asyncio.ensure_future(bot.send_message(16, "result"))
            while not patient.messages(16):  # in the chat before its answer came back
                await asyncio.sleep(0.05)
            seen = time.monotonic() - started
            await task
            return seen, time.monotonic() - started

    seen_s, answered_s = run(go())
    assert [e["text"] for e in patient.messages(16)] == ["result"]
    assert answered_s >= 1.5 and seen_s < answered_s
