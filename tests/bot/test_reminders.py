"""Issue 12 §4, opt-in re-check reminders: offered after a LOW or MEDIUM answer, set with a tap, listed and stopped
with /reminders, sent by the periodic job when due, ended by /delete. Through the real bot, the local Bot API
server and the worker's real tasks (deliver_case, send_outbox, send_reminders), in English and Korean.
"""

from __future__ import annotations

from datetime import timedelta

from babel.dates import format_date
from sqlalchemy import select

from devtools.local_api import buttons
from skintriage.models import OutboxMessage, RecheckReminder, utcnow
from skintriage.reminders import add_months
from tests.bot.test_review_reply import answered_case, send_outbox


def outbox(h, kind: str) -> list[OutboxMessage]:
    """The queued or sent outbox messages of a kind, oldest first."""
    with h.session() as session:
        return list(session.scalars(select(OutboxMessage).where(OutboxMessage.kind == kind).order_by(OutboxMessage.id)))


def reminder_rows(h) -> list[RecheckReminder]:
    """Every re-check reminder stored, oldest first."""
    with h.session() as session:
        return list(session.scalars(select(RecheckReminder).order_by(RecheckReminder.id)))


def run_reminder_job() -> int:
    """Run the periodic job's task here, as beat would."""
    import worker.celery_app  # noqa: F401 - registers the tasks' app
    from worker.tasks import send_reminders

    return send_reminders.apply().result


def offer_reaches(h, user_id: int, lang: str) -> dict:
    """Send the queued offer with the worker's outbox task; the message the patient receives."""
    (offer,) = outbox(h, "reminder_offer")
    since = h.patient.last_seq()
    assert send_outbox(offer.id) == "sent"
    return h.patient.wait_for(user_id, lambda e: e["method"] == "sendMessage", since=since)


def press(h, user_id: int, message: dict, data: str, lang: str = "en") -> dict:
    """Press a button of a message; the bot's next text message."""
    since = h.patient.last_seq()
    h.patient.press_button(user_id, message["message_id"], data, language_code=lang)
    return h.patient.wait_for(user_id, lambda e: e["method"] == "sendMessage", since=since)


def command(h, user_id: int, text: str, lang: str = "en") -> dict:
    """Send a command; the bot's answer."""
    since = h.patient.last_seq()
    h.patient.send_command(user_id, text, language_code=lang)
    return h.patient.wait_for(user_id, lambda e: e["method"] == "sendMessage", since=since)


def test_a_low_answer_offers_a_reminder_which_reminders_lists_and_stops(start_bot) -> None:
    h = start_bot()
    case_id = answered_case(h, 741, tier="LOW", reason="most_likely")
    offer = offer_reaches(h, 741, "en")
    assert offer["text"].split("\n\n") == [
        h.expect("en", "reminder.offer", case_id=case_id, months=3),
        h.expect("en", "result.disclaimer"),
    ]
    assert "every 3 months" in offer["text"]
    assert buttons(offer) == [
        ("Yes, remind me every 3 months", f"reminder:yes:{case_id}"),
        ("No, thanks", f"reminder:no:{case_id}"),
    ]

    before = utcnow()
    confirmation = press(h, 741, offer, f"reminder:yes:{case_id}")
    (reminder,) = reminder_rows(h)
    assert reminder.case_id == case_id and reminder.every_months == 3 and reminder.stopped_at is None
    assert add_months(before, 3) - timedelta(minutes=1) <= reminder.next_at <= add_months(utcnow(), 3)
    date = format_date(reminder.next_at, format="medium", locale="en")
    assert confirmation["text"] == h.expect("en", "reminder.set", case_id=case_id, months=3, date=date)

    listing = command(h, 741, "/reminders")
    (case,) = h.cases(741)
    photo = format_date(case.received_at, format="medium", locale="en")
    assert listing["text"] == "\n".join([
        h.expect("en", "reminders.title"),
        f"Case #{case_id} ({photo}): every 3 months, next around {date}",
    ])  # fmt: skip
    assert buttons(listing) == [(f"Stop #{case_id}", f"reminder:stop:{case_id}")]

    stopped = press(h, 741, listing, f"reminder:stop:{case_id}")
    assert stopped["text"] == h.expect("en", "reminders.stopped", case_id=case_id)
    assert reminder_rows(h)[0].stopped_at is not None
    assert command(h, 741, "/reminders")["text"] == h.expect("en", "reminders.empty")
    assert run_reminder_job() == 0  # a stopped reminder is never sent, even when due
    with h.session() as session:
        session.get(RecheckReminder, reminder.id).next_at = utcnow() - timedelta(days=1)
        session.commit()
    assert run_reminder_job() == 0


def test_in_korean_the_periodic_job_sends_a_due_reminder_once_and_its_button_stops_it(start_bot) -> None:
    h = start_bot()
    case_id = answered_case(h, 742, tier="MEDIUM", lang="ko")
    offer = offer_reaches(h, 742, "ko")
    assert offer["text"].startswith(f"접수 번호 #{case_id}: 3개월마다 이 점을 다시 찍으라고 알려 드릴까요?")
    assert buttons(offer)[0] == ("네, 3개월마다 알려 주세요", f"reminder:yes:{case_id}")
    press(h, 742, offer, f"reminder:yes:{case_id}", "ko")
    (reminder,) = reminder_rows(h)
    assert run_reminder_job() == 0  # not due yet

    with h.session() as session:  # three months later
        session.get(RecheckReminder, reminder.id).next_at = utcnow() - timedelta(minutes=1)
        session.commit()
    assert run_reminder_job() == 1
    assert run_reminder_job() == 0  # once per period: the next time moved on
    (due,) = outbox(h, "reminder")
    (row,) = reminder_rows(h)
    assert row.sent_count == 1 and row.next_at > utcnow() + timedelta(days=80)

    since = h.patient.last_seq()
    assert send_outbox(due.id) == "sent"
    message = h.patient.wait_for(742, lambda e: e["method"] == "sendMessage", since=since)
    (case,) = h.cases(742)
    photo = format_date(case.received_at, format="medium", locale="ko")
    assert message["text"].split("\n\n") == [
        h.expect("ko", "reminder.due", case_id=case_id, date=photo),
        h.expect("ko", "result.disclaimer"),
    ]
    assert message["text"].startswith(f"다시 찍기 알림, 접수 번호 #{case_id}: 이 점을 다시 찍을 때가 되었습니다")
    assert buttons(message) == [("이 알림 끄기", f"reminder:stop:{case_id}")]
    stopped = press(h, 742, message, f"reminder:stop:{case_id}", "ko")
    assert stopped["text"] == f"접수 번호 #{case_id}의 알림을 껐습니다. 이 점에 대해 더는 알려 드리지 않습니다."
    assert command(h, 742, "/reminders", "ko")["text"] == h.expect("ko", "reminders.empty")


def test_no_offer_after_high_nor_when_off_and_delete_ends_the_reminders(start_bot) -> None:
    h = start_bot()
    answered_case(h, 743, tier="HIGH")
    assert outbox(h, "reminder_offer") == []  # told to see a dermatologist: no reminder months away

    case_id = answered_case(h, 744, tier="LOW", reason="most_likely")
    offer = offer_reaches(h, 744, "en")
    press(h, 744, offer, f"reminder:yes:{case_id}")
    with h.session() as session:
        session.get(RecheckReminder, reminder_rows(h)[0].id).next_at = utcnow() - timedelta(minutes=1)
        session.commit()
    since = h.patient.last_seq()
    h.patient.send_command(744, "/delete")
    confirm = h.patient.wait_for(744, lambda e: bool(e.get("reply_markup")), since=since)
    h.patient.press_button(744, confirm["message_id"], "delete:yes")
    h.patient.wait_for(744, lambda e: e["method"] == "editMessageText", since=since)
    assert reminder_rows(h) == []
    assert run_reminder_job() == 0  # nothing due is left to send after /delete


def test_recheck_reminder_months_zero_offers_nothing(start_bot) -> None:
    h = start_bot(RECHECK_REMINDER_MONTHS=0)
    answered_case(h, 745, tier="LOW", reason="most_likely")
    assert outbox(h, "reminder_offer") == []


def test_beat_runs_the_reminder_job_on_the_replies_queue(settings_env) -> None:
    from skintriage.settings import get_settings
    from worker.celery_app import REMINDER_TASK, REPLIES_QUEUE, ROUTES, beat_schedule

    entry = beat_schedule(get_settings())["send-recheck-reminders"]
    assert entry["task"] == REMINDER_TASK == "worker.tasks.send_reminders"
    assert entry["options"]["queue"] == REPLIES_QUEUE == ROUTES[REMINDER_TASK]["queue"]


def test_months_are_calendar_months_with_the_day_clamped() -> None:
    from datetime import UTC, datetime

    assert add_months(datetime(2026, 11, 30, 9, tzinfo=UTC), 3) == datetime(2027, 2, 28, 9, tzinfo=UTC)
    assert add_months(datetime(2026, 12, 3, tzinfo=UTC), 3) == datetime(2027, 3, 3, tzinfo=UTC)
    assert add_months(datetime(2026, 1, 31, tzinfo=UTC), 13) == datetime(2027, 2, 28, tzinfo=UTC)
