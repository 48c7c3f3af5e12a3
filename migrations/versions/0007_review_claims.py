"""review claims and verdicts: a reviewer claims a case while reviewing it; "cannot assess" is a verdict;
reviews submitted after the session ended wait in pending_reviews

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 10:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import skintriage.models

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("claimed_by_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("claimed_until", skintriage.models.UTCDateTime(timezone=True), nullable=True))
        batch.create_foreign_key(
            "fk_cases_claimed_by_id_operators", "operators", ["claimed_by_id"], ["id"], ondelete="SET NULL"
        )
    with op.batch_alter_table("reviews") as batch:
        batch.add_column(sa.Column("verdict", sa.String(16), nullable=False, server_default="agree"))
    # Reviews written before verdicts were either agreements or disagreements.
    op.execute("UPDATE reviews SET verdict = CASE WHEN agrees THEN 'agree' ELSE 'disagree' END")
    with op.batch_alter_table("reviews") as batch:
        batch.alter_column("verdict", existing_type=sa.String(16), server_default=None)
    op.create_table(
        "pending_reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("operator_id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("form", sa.JSON(), nullable=False),
        sa.Column("created_at", skintriage.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_pending_reviews_case_id_cases"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name=op.f("fk_pending_reviews_operator_id_operators"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_reviews")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_pending_reviews_token_sha256")),
    )


def downgrade() -> None:
    op.drop_table("pending_reviews")
    with op.batch_alter_table("reviews") as batch:
        batch.drop_column("verdict")
    with op.batch_alter_table("cases") as batch:
        batch.drop_constraint("fk_cases_claimed_by_id_operators", type_="foreignkey")
        batch.drop_column("claimed_until")
        batch.drop_column("claimed_by_id")
