"""study details for the datasheet: platform, recruitment, eligibility, pay, time, purpose,
consent text, ethics approval (one JSON column, `app.studies.config.StudyAbout`)

Revision ID: 25_datasheet
Revises: 12_trial_study_index
Create Date: 2026-12-03 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "25_datasheet"
down_revision = "12_trial_study_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("about", sa.JSON(), nullable=True))


def downgrade() -> None:
    # Not batch mode on SQLite: recreating `studies` drops the old table, and with foreign keys on
    # SQLite would delete its rows' trials and ratings with it (ON DELETE CASCADE).
    op.drop_column("studies", "about") if op.get_bind().dialect.name != "sqlite" else op.execute(
        sa.text("ALTER TABLE studies DROP COLUMN about"))
