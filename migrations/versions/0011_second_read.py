"""blinded second reads: reviews.blinded marks a review given without seeing the case's earlier reviews

Revision ID: 0011
Revises: 0007
Create Date: 2026-12-02 14:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every review written before this revision was an ordinary (unblinded) read.
    with op.batch_alter_table("reviews") as batch:
        batch.add_column(sa.Column("blinded", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("reviews") as batch:
        batch.alter_column("blinded", existing_type=sa.Boolean(), server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("reviews") as batch:
        batch.drop_column("blinded")
