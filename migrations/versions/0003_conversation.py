"""conversation: why a tier was chosen, and the album a photo came in

Revision ID: 0003
Revises: 0001
Create Date: 2026-12-02 09:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("media_group_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("tier_reason", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_column("tier_reason")
        batch_op.drop_column("media_group_id")
