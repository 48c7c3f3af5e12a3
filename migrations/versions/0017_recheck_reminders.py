"""re-check reminders: a patient's opt-in reminder to photograph a spot again every few months

Revision ID: 0017
Revises: 0015
Create Date: 2026-12-03 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from skintriage.models import UTCDateTime

revision = "0017"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recheck_reminders",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id", ondelete="CASCADE"), nullable=False),
        sa.Column("every_months", sa.Integer(), nullable=False),
        sa.Column("next_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_sent_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("sent_count", sa.Integer(), nullable=False),
        sa.UniqueConstraint("case_id", name="uq_recheck_reminders_case_id"),
    )
    op.create_index("ix_recheck_reminders_user_id", "recheck_reminders", ["user_id"])
    op.create_index("ix_recheck_reminders_next_at", "recheck_reminders", ["next_at"])


def downgrade() -> None:
    op.drop_index("ix_recheck_reminders_next_at", table_name="recheck_reminders")
    op.drop_index("ix_recheck_reminders_user_id", table_name="recheck_reminders")
    op.drop_table("recheck_reminders")
