"""patient answers: the questions asked with a new spot (where, changed, symptoms, age) and the tier the
patient was told with them taken into account

Revision ID: 0008
Revises: 0009
Create Date: 2026-12-02 14:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("patient_answers", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("told_tier", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("told_tier")
        batch.drop_column("patient_answers")
