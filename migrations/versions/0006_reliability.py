"""reliability: flood-control waits on deliveries and outbox messages; updates de-duplicated by chat and message

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 09:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import skintriage.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("delivery_not_before", skintriage.models.UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table("outbox_messages") as batch:
        batch.add_column(sa.Column("not_before", skintriage.models.UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table("processed_updates") as batch:
        batch.add_column(sa.Column("chat_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("message_id", sa.BigInteger(), nullable=True))
        batch.drop_constraint("uq_processed_updates_update_id", type_="unique")
        batch.alter_column("update_id", existing_type=sa.BigInteger(), nullable=True)
        batch.create_unique_constraint("uq_processed_updates_chat_id", ["chat_id", "message_id"])
        batch.create_index("ix_processed_updates_at", ["at"])
    # Rows written before this revision learn their chat and message from the case their photo started;
    # the others (updates that reused a case) stay without and are pruned after a week.
    op.execute(
        """
        UPDATE processed_updates SET
          chat_id = (SELECT users.chat_id FROM cases JOIN users ON users.id = cases.user_id
                     WHERE cases.source_update_id = processed_updates.update_id
                     ORDER BY cases.id LIMIT 1),
          message_id = (SELECT cases.source_message_id FROM cases
                        WHERE cases.source_update_id = processed_updates.update_id
                        ORDER BY cases.id LIMIT 1)
        """
    )


def downgrade() -> None:
    # Update ids may repeat after this revision; keep one row per update id so the old constraint holds.
    op.execute(
        "DELETE FROM processed_updates WHERE update_id IS NULL OR id NOT IN "
        "(SELECT MIN(id) FROM processed_updates WHERE update_id IS NOT NULL GROUP BY update_id)"
    )
    with op.batch_alter_table("processed_updates") as batch:
        batch.drop_index("ix_processed_updates_at")
        batch.drop_constraint("uq_processed_updates_chat_id", type_="unique")
        batch.alter_column("update_id", existing_type=sa.BigInteger(), nullable=False)
        batch.create_unique_constraint("uq_processed_updates_update_id", ["update_id"])
        batch.drop_column("message_id")
        batch.drop_column("chat_id")
    with op.batch_alter_table("outbox_messages") as batch:
        batch.drop_column("not_before")
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("delivery_not_before")
