"""pending intakes: photo messages whose handling began and has not answered yet (durable intake)

Revision ID: 0014
Revises: 0012
Create Date: 2026-12-02 15:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from skintriage.models import UTCDateTime

revision = "0014"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pending_intakes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("received_at", UTCDateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("chat_id", "message_id"),
    )
    op.create_index("ix_pending_intakes_user_id", "pending_intakes", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_pending_intakes_user_id", table_name="pending_intakes")
    op.drop_table("pending_intakes")
