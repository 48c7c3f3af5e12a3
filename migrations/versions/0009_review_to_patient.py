"""the clinician's word reaches the patient: outbox messages tied to a review and keeping the text sent;
the booking question after a HIGH answer, asked once per case, and the patient's answer

Revision ID: 0009
Revises: 0011
Create Date: 2026-12-02 14:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import skintriage.models

revision = "0009"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox_messages") as batch:
        batch.add_column(sa.Column("review_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("sent_text", sa.Text(), nullable=True))
        batch.create_foreign_key(
            "fk_outbox_messages_review_id_reviews", "reviews", ["review_id"], ["id"], ondelete="CASCADE"
        )
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("booking_asked_at", skintriage.models.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("booking_answer", sa.String(16), nullable=True))
        batch.add_column(sa.Column("booking_answered_at", skintriage.models.UTCDateTime(timezone=True), nullable=True))
    # Messages sent before this revision went out as the operator's bare words: that is what the patient read.
    op.execute("UPDATE outbox_messages SET sent_text = text WHERE sent_at IS NOT NULL AND error IS NULL")


def downgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("booking_answered_at")
        batch.drop_column("booking_answer")
        batch.drop_column("booking_asked_at")
    with op.batch_alter_table("outbox_messages") as batch:
        batch.drop_constraint("fk_outbox_messages_review_id_reviews", type_="foreignkey")
        batch.drop_column("sent_text")
        batch.drop_column("review_id")
