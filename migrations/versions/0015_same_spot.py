"""the same spot over time: cases.previous_case_id links a photo sent as a reply to an earlier case of that spot

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 15:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Cases received before this revision were never linked: NULL, nothing to fill in.
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("previous_case_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_cases_previous_case_id_cases", "cases", ["previous_case_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.drop_constraint("fk_cases_previous_case_id_cases", type_="foreignkey")
        batch.drop_column("previous_case_id")
