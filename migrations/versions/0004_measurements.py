"""lesion measurements on the case (asymmetry, border, colours, diameter, area; a JSON object)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 09:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: cases triaged before this revision (and RETAKE cases) have none.
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("measurements", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_column("measurements")
