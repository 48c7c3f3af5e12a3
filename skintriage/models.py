"""SQLAlchemy 2 models: the only description of the schema (migrations are generated from it)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from skintriage.vocabulary import Label, OutboxKind, ReviewVerdict

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Aware current time in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC; always returns aware datetimes (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use skintriage.models.utcnow()")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base with a naming convention so migrations get stable constraint names."""

    metadata = MetaData(naming_convention=NAMING)


class CaseStatus(StrEnum):
    """Life of a case: queued -> processing -> done | rejected | failed."""

    RECEIVED = "received"  # stored, not yet handed to the broker (broker down): the sweeper enqueues it
    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    REJECTED = "rejected"  # the photo was unusable (RETAKE); the patient got the reason
    FAILED = "failed"  # gave up (attempt cap, model missing); the patient was told


class OperatorRole(StrEnum):
    """What an operator may do in the console."""

    REVIEWER = "reviewer"
    ADMIN = "admin"


class User(Base):
    """A patient, known by Telegram ids; deleted with all their cases on /delete."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    telegram_user_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    language: Mapped[str] = mapped_column(String(8), default="en")
    consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The version (a short hash) of the consent text the patient agreed to; an older one is asked again.
    consent_version: Mapped[str | None] = mapped_column(String(16))
    # Photos (Telegram file references, never bytes) sent while their consent was outdated, analysed once they
    # agree again: [{"file_id", "file_unique_id", "file_size", "message_id", "update_id", "media_group_id"}].
    pending_photos: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    cases: Mapped[list[Case]] = relationship(back_populates="user", cascade="all, delete-orphan", passive_deletes=True)


class Case(Base):
    """One photo and everything that happened to it."""

    __tablename__ = "cases"
    __table_args__ = (
        Index("ix_cases_status_queued_at", "status", "queued_at"),
        Index("ix_cases_user_received", "user_id", "received_at"),
        Index("ix_cases_user_sha", "user_id", "image_sha256"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default=CaseStatus.RECEIVED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The models failing on this case (worker.failures: infrastructure), on whichever workers. They do not use
    # up attempts, but a case that keeps hitting them ends at MAX_CASE_INFRA_FAILURES and the patient is told.
    infra_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    language: Mapped[str] = mapped_column(String(8), default="en")

    # Where the photo came from (for dedupe) and where it lies (content-addressed key, never bytes).
    source_update_id: Mapped[int | None] = mapped_column(BigInteger)
    source_message_id: Mapped[int | None] = mapped_column(BigInteger)
    telegram_file_unique_id: Mapped[str | None] = mapped_column(String(128))
    # Telegram's album id: photos sent together are one spot and get one answer (the most urgent tier).
    media_group_id: Mapped[str | None] = mapped_column(String(64))
    image_key: Mapped[str | None] = mapped_column(String(128))
    image_sha256: Mapped[str] = mapped_column(String(64))
    image_bytes: Mapped[int | None] = mapped_column(Integer)
    image_width: Mapped[int | None] = mapped_column(Integer)
    image_height: Mapped[int | None] = mapped_column(Integer)
    images_deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    # Timeline.
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    processing_owner: Mapped[str | None] = mapped_column(String(128))  # "host:pid" of the worker holding it
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delivery_claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Telegram's flood control (429 RetryAfter) said to wait: no send, by the retry or the sweeper, before this.
    delivery_not_before: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delay_notice_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    # Result.
    tier: Mapped[str | None] = mapped_column(String(16))  # vocabulary.Tier
    label: Mapped[str | None] = mapped_column(String(16))  # vocabulary.Label
    # ml.triage.policy REASON_*: why this tier, put into words.
    tier_reason: Mapped[str | None] = mapped_column(String(32))
    prob_mel: Mapped[float | None] = mapped_column(Float)
    prob_nv: Mapped[float | None] = mapped_column(Float)
    prob_other: Mapped[float | None] = mapped_column(Float)
    mel_threshold: Mapped[float | None] = mapped_column(Float)
    lesion_area_px: Mapped[int | None] = mapped_column(Integer)
    lesion_diameter_px: Mapped[float | None] = mapped_column(Float)
    quality_flags: Mapped[list[str]] = mapped_column(JSON, default=list)
    retake_reason: Mapped[str | None] = mapped_column(String(32))  # vocabulary.RetakeReason
    mask_key: Mapped[str | None] = mapped_column(String(128))
    overlay_key: Mapped[str | None] = mapped_column(String(128))
    heatmap_key: Mapped[str | None] = mapped_column(String(128))
    model_versions: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    timings_ms: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    # Lesion asymmetry, border, colours and size from the mask (ml.triage.measurements.LesionMeasurements.to_dict).
    measurements: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The kind of photo judged (vocabulary.Modality: dermoscopic, clinical, unknown); None before this was checked.
    modality: Mapped[str | None] = mapped_column(String(16))
    demo_model: Mapped[bool] = mapped_column(Boolean, default=False)
    error_code: Mapped[str | None] = mapped_column(String(64))

    # The patient's taps on the questions asked with a new spot (ml.triage.red_flags.QUESTIONS): question -> option or
    # "skip"; None before any answer. Photos of one album share them.
    patient_answers: Mapped[dict[str, str] | None] = mapped_column(JSON)
    # The tier the patient was told, their answers included (ml.triage.red_flags.answered_tier), set when the answer
    # is sent and raised when a later answer made it more urgent and a follow-up message said so.
    told_tier: Mapped[str | None] = mapped_column(String(16))

    # What the patient was told, exactly, and the Telegram ids of those messages.
    ack_message_id: Mapped[int | None] = mapped_column(BigInteger)
    reply_message_id: Mapped[int | None] = mapped_column(BigInteger)
    reply_text: Mapped[str | None] = mapped_column(Text)

    # The same spot photographed earlier: the patient sent this photo as a Telegram reply to that case's
    # acknowledgement, answer or photo (cases.find_replied_case). Its answer compares the two (ml.triage.lesion_change).
    previous_case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="SET NULL"))

    # The console reviewer who opened this case to review it; the claim lapses at claimed_until (UTC).
    claimed_by_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="SET NULL"))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())

    # After a HIGH answer the bot asks whether the patient booked a dermatologist (skintriage.booking): when it
    # queued the question, and the button the patient tapped (vocabulary.BookingAnswer) and when.
    booking_asked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    booking_answer: Mapped[str | None] = mapped_column(String(16))
    booking_answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship(back_populates="cases")
    claimed_by: Mapped[Operator | None] = relationship(foreign_keys=[claimed_by_id])
    previous_case: Mapped[Case | None] = relationship(remote_side=[id], foreign_keys=[previous_case_id])
    reviews: Mapped[list[Review]] = relationship(
        back_populates="case", cascade="all, delete-orphan", passive_deletes=True, order_by="Review.created_at"
    )

    @property
    def probabilities(self) -> dict[str, float]:
        """Per-class probabilities keyed by label, empty when not classified."""
        if self.prob_mel is None:
            return {}
        return {Label.MEL: self.prob_mel, Label.NV: self.prob_nv or 0.0, Label.OTHER: self.prob_other or 0.0}


class Operator(Base):
    """A clinician who uses the console."""

    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default=OperatorRole.REVIEWER)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


def _verdict_from_agrees(context: Any) -> str:
    """Default verdict for rows built with `agrees` alone (written before verdicts, or by tests)."""
    return ReviewVerdict.AGREE if context.get_current_parameters().get("agrees") else ReviewVerdict.DISAGREE


class Review(Base):
    """An operator's verdict on a case."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="SET NULL"))
    agrees: Mapped[bool] = mapped_column(Boolean)  # False for "cannot_assess" too: read `verdict` to tell them apart
    verdict: Mapped[str] = mapped_column(String(16), default=_verdict_from_agrees)  # vocabulary.ReviewVerdict
    corrected_label: Mapped[str | None] = mapped_column(String(16))
    urgency: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    # A blinded second read: given by a reviewer who was not shown the case's earlier reviews (console/safety.py
    # compares it with the first read); it is never the reference verdict the model is measured against.
    blinded: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    case: Mapped[Case] = relationship(back_populates="reviews")
    operator: Mapped[Operator | None] = relationship()


class PendingReview(Base):
    """A review form that arrived after its operator's session ended, kept until they log in again."""

    __tablename__ = "pending_reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # SHA-256 of the random token held in the browser's session cookie; the token itself is not stored.
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"))
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    form: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)  # the fields as submitted, "then" included
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class OutboxMessage(Base):
    """A message to a patient that is not a case result, sent by the reply queue.

    Kinds (vocabulary.OutboxKind): "followup" (an operator's own words in `text`), "review" (what a review
    changes for the patient; `text` holds the reviewer's optional words), "booking" (the question whether the
    patient booked a dermatologist), "answers" (the patient's answers raised a sent answer's urgency; the bot
    composed `text`, disclaimer included), "reminder_offer" (whether to remind the patient to photograph the
    spot again) and "reminder" (that re-check reminder). The patient's text is composed in their language when
    it is sent (bot.followups) and kept in `sent_text`.
    """

    __tablename__ = "outbox_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="SET NULL"))
    chat_id: Mapped[int] = mapped_column(BigInteger)
    review_id: Mapped[int | None] = mapped_column(ForeignKey("reviews.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32), default=OutboxKind.FOLLOWUP)
    text: Mapped[str] = mapped_column(Text)  # the operator's own words ("" when none)
    sent_text: Mapped[str | None] = mapped_column(Text)  # what the patient read, exactly (set once sent)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime())  # flood control: no send before this
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(255))

    user: Mapped[User | None] = relationship()
    case: Mapped[Case | None] = relationship()
    review: Mapped[Review | None] = relationship()


class RecheckReminder(Base):
    """A patient's opt-in reminder to photograph a spot again every few months (skintriage.reminders).

    `case_id` is the answer the reminder was offered after; a later photo of the same spot (linked by
    previous_case_id) restarts the clock instead of adding a reminder. Stopped ones are kept (stopped_at) until
    the patient's /delete, which removes them with the cases.
    """

    __tablename__ = "recheck_reminders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), unique=True)
    every_months: Mapped[int] = mapped_column(Integer)
    next_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sent_count: Mapped[int] = mapped_column(Integer, default=0)

    case: Mapped[Case] = relationship()


class AuditEvent(Base):
    """Who did what, when; kept when a patient deletes their data (ids only, no personal data)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(16))  # operator | patient | system
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(64), index=True)
    case_id: Mapped[int | None] = mapped_column(Integer, index=True)  # no FK: survives deletion
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class PendingIntake(Base):
    """A photo message whose handling began (checks passed, download next) and has not answered yet.

    Written before the download and removed once the patient has been answered (case saved, or told why not).
    A row left behind means the bot stopped in between (killed, restarted, crashed): at its next start the bot
    tells that patient the photo was not saved and asks for it again (bot.intake.recover_interrupted).
    """

    __tablename__ = "pending_intakes"
    __table_args__ = (UniqueConstraint("chat_id", "message_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ProcessedUpdate(Base):
    """Telegram messages already handled, by (chat id, message id), so a redelivered update does nothing twice.

    Not by update id: Telegram may start update ids again (e.g. after a webhook was set and removed), while a
    message id never repeats within a chat. Rows older than a week are pruned (cases.prune_processed_updates).
    """

    __tablename__ = "processed_updates"
    __table_args__ = (UniqueConstraint("chat_id", "message_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    update_id: Mapped[int | None] = mapped_column(BigInteger)  # for the record only; never checked
    chat_id: Mapped[int | None] = mapped_column(BigInteger)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class ServiceLease(Base):
    """Who runs a role that must run once per deployment ("bot", "beat"), renewed while it runs (skintriage.leases)."""

    __tablename__ = "service_leases"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))  # host:pid of the process
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
