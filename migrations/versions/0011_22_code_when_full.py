"""trust round 2: whether a participant whose study filled up before they answered every trial
gets the completion code (issue 22)

Revision ID: 22_code_when_full
Revises: 24_criteria
Create Date: 2026-12-03 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "22_code_when_full"
down_revision = "24_criteria"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("code_when_full", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    # Not batch mode on SQLite: recreating `studies` drops the old table, and with foreign keys on
    # SQLite would delete its rows' trials and ratings with it (ON DELETE CASCADE).
    op.drop_column("studies", "code_when_full") if op.get_bind().dialect.name != "sqlite" else op.execute(
        sa.text("ALTER TABLE studies DROP COLUMN code_when_full"))
