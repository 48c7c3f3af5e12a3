"""per-case infrastructure failures: cases.infra_failures counts the models failing on a case, whatever the worker

Revision ID: 0016
Revises: 0017
Create Date: 2026-12-03 08:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Failures before this revision were not counted per case: every case starts at 0.
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("infra_failures", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("infra_failures")
