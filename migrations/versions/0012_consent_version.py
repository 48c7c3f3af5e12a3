"""consent version: users.consent_version (the consent text agreed to) and users.pending_photos

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-02 15:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: patients who agreed before this revision agreed to an older text (NULL), so the
    # bot asks them again on their next message.
    with op.batch_alter_table("users", recreate="never") as batch:
        batch.add_column(sa.Column("consent_version", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("pending_photos", sa.JSON(), nullable=True))


def downgrade() -> None:
    # Never recreate `users` on SQLite: dropping the old table would cascade (foreign keys are on) and delete every
    # patient's cases. Plain ALTER TABLE ... DROP COLUMN needs SQLite 3.35 or newer.
    with op.batch_alter_table("users", recreate="never") as batch:
        batch.drop_column("pending_photos")
        batch.drop_column("consent_version")
