"""Re-check reminders: after a LOW or MEDIUM answer, the offer to remind the patient to photograph the spot again.

Opt-in. The offer is an outbox message queued with the answer's delivery (worker.tasks.deliver_case); a tap on
"Yes" stores a RecheckReminder for that case, due every RECHECK_REMINDER_MONTHS. The periodic job
(worker.reminders) queues each due reminder as an outbox message and moves its next time on in the same
conditional UPDATE, so two runs never send it twice. `/reminders` lists and stops them; `/delete` removes them
with the cases.

One spot has one reminder: a later photo of a spot (linked by previous_case_id, a reply or the "same spot"
button) restarts the clock of the spot's reminder instead of offering another. After HIGH and UNCERTAIN
answers nothing is offered: those patients are told to see a doctor, and a reminder months away would read
as permission to wait.
"""

from __future__ import annotations

import calendar
import logging
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from skintriage.cases import album_of, audit, get_user, get_user_case
from skintriage.exceptions import CaseNotFound
from skintriage.models import Case, CaseStatus, OutboxMessage, RecheckReminder, User, utcnow
from skintriage.vocabulary import OutboxKind, Tier

log = logging.getLogger(__name__)

OFFER_TIERS = frozenset({Tier.LOW, Tier.MEDIUM})
DEFAULT_MONTHS = 3  # RECHECK_REMINDER_MONTHS' default; used for an offer sent after the setting was turned off
MAX_CHAIN = 50  # previous_case_id links followed at most (a spot photographed more often is still one spot)


def add_months(when: datetime, months: int) -> datetime:
    """`when` plus calendar months, the day clamped to the month's length (31 Jan + 1 month = 28/29 Feb)."""
    index = when.month - 1 + months
    year, month = when.year + index // 12, index % 12 + 1
    return when.replace(year=year, month=month, day=min(when.day, calendar.monthrange(year, month)[1]))


def spot_case_ids(*, session: Session, case: Case) -> list[int]:
    """The case and its earlier photos of the same spot (previous_case_id links), newest first."""
    ids, current = [case.id], case
    while current.previous_case_id is not None and len(ids) < MAX_CHAIN:
        current = session.get(Case, current.previous_case_id)
        if current is None or current.id in ids:
            break
        ids.append(current.id)
    return ids


def spot_reminder(*, session: Session, case: Case) -> RecheckReminder | None:
    """The active reminder of the case's spot (set after this photo or an earlier one), if any."""
    return session.scalar(
        select(RecheckReminder)
        .where(
            RecheckReminder.case_id.in_(spot_case_ids(session=session, case=case)),
            RecheckReminder.stopped_at.is_(None),
        )
        .limit(1)
    )


def queue_offer(*, session: Session, case: Case, told_tier: str | None, every_months: int) -> OutboxMessage | None:
    """After an answer is delivered: queue the reminder offer (LOW or MEDIUM, first photo of the spot's album).

    When the spot already has a reminder, its clock restarts from now and nothing is offered. Returns the
    message to enqueue once the caller has committed, or None. Called in the transaction that marks the answer
    delivered, so a delivery that runs twice never offers twice.
    """
    if every_months <= 0 or case.status != CaseStatus.DONE or told_tier not in OFFER_TIERS:
        return None
    first = album_of(session=session, case=case)[0]
    existing = spot_reminder(session=session, case=first)
    if existing is not None:
        existing.next_at = add_months(utcnow(), existing.every_months)
        audit(session=session, actor="system", action="reminder.restarted", case_id=existing.case_id)
        return None
    user = case.user
    message = OutboxMessage(
        user_id=user.id, case_id=first.id, chat_id=user.chat_id, kind=OutboxKind.REMINDER_OFFER, text=""
    )
    session.add(message)
    session.flush()
    audit(session=session, actor="system", action="reminder.offered", case_id=first.id)
    return message


def _own_case(session: Session, telegram_user_id: int, case_id: int) -> tuple[User, Case] | None:
    user = get_user(session=session, telegram_user_id=telegram_user_id)
    if user is None:
        return None
    try:
        return user, get_user_case(session=session, user=user, case_id=case_id)
    except CaseNotFound:
        return None


def accept(
    *, session: Session, telegram_user_id: int, case_id: int, every_months: int, now: datetime | None = None
) -> tuple[str, RecheckReminder] | None:
    """The patient tapped "Yes": store (or restart) the reminder of their own case; (language, reminder) or None."""
    found = _own_case(session, telegram_user_id, case_id)
    if found is None:
        return None
    user, case = found
    now = now or utcnow()
    reminder = session.scalar(select(RecheckReminder).where(RecheckReminder.case_id == case.id))
    if reminder is None:
        reminder = RecheckReminder(user_id=user.id, case_id=case.id, every_months=every_months, sent_count=0)
        session.add(reminder)
    reminder.every_months = every_months
    reminder.next_at = add_months(now, every_months)
    reminder.stopped_at = None
    session.flush()
    audit(session=session, actor="patient", action="reminder.set", case_id=case.id, detail={"months": every_months})
    return user.language, reminder


def language_of_case(*, session: Session, telegram_user_id: int, case_id: int) -> str | None:
    """The patient's language when the case is theirs (a "No" tap stores nothing), else None."""
    found = _own_case(session, telegram_user_id, case_id)
    return found[0].language if found else None


def active(*, session: Session, user: User) -> list[RecheckReminder]:
    """The patient's reminders that still run, soonest first."""
    return list(
        session.scalars(
            select(RecheckReminder)
            .where(RecheckReminder.user_id == user.id, RecheckReminder.stopped_at.is_(None))
            .order_by(RecheckReminder.next_at, RecheckReminder.id)
        )
    )


def stop(*, session: Session, telegram_user_id: int, case_id: int) -> tuple[str, bool] | None:
    """Stop the reminder of the patient's own case; (language, it was running) or None when not theirs."""
    found = _own_case(session, telegram_user_id, case_id)
    if found is None:
        return None
    user, case = found
    stopped = session.execute(
        update(RecheckReminder)
        .where(RecheckReminder.case_id == case.id, RecheckReminder.stopped_at.is_(None))
        .values(stopped_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if stopped.rowcount:
        audit(session=session, actor="patient", action="reminder.stopped", case_id=case.id)
    return user.language, bool(stopped.rowcount)


def due(*, session: Session, now: datetime | None = None) -> list[int]:
    """Ids of the running reminders whose time has come, oldest due first."""
    now = now or utcnow()
    return list(
        session.scalars(
            select(RecheckReminder.id)
            .where(RecheckReminder.stopped_at.is_(None), RecheckReminder.next_at <= now)
            .order_by(RecheckReminder.next_at, RecheckReminder.id)
        )
    )


def queue_due(*, session: Session, reminder_id: int, now: datetime | None = None) -> OutboxMessage | None:
    """Queue one due reminder and move its next time on (past `now`); None when sent meanwhile or stopped.

    The caller commits, then enqueues the message; the sweeper sends it otherwise.
    """
    now = now or utcnow()
    reminder = session.get(RecheckReminder, reminder_id)
    if reminder is None or reminder.stopped_at is not None or reminder.next_at > now:
        return None
    was = reminder.next_at
    following = was
    while following <= now:  # after an outage: one reminder, not one per missed period
        following = add_months(following, reminder.every_months)
    taken = session.execute(
        update(RecheckReminder)
        .where(RecheckReminder.id == reminder_id, RecheckReminder.next_at == was, RecheckReminder.stopped_at.is_(None))
        .values(next_at=following, last_sent_at=now, sent_count=RecheckReminder.sent_count + 1)
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:
        return None
    user = session.get(User, reminder.user_id)
    message = OutboxMessage(
        user_id=user.id, case_id=reminder.case_id, chat_id=user.chat_id, kind=OutboxKind.REMINDER, text=""
    )
    session.add(message)
    session.flush()
    audit(session=session, actor="system", action="reminder.sent", case_id=reminder.case_id)
    return message
