"""drop ix_trials_study_id: ix_trials_study_pair covers it, and PostgreSQL's generic plan for a
per-pair count sometimes chose it (made while the table was small) and scanned the whole study

Revision ID: 12_trial_study_index
Revises: 12_pair_tallies
Create Date: 2026-11-28 21:00:00
"""

from __future__ import annotations

from alembic import op

revision = "12_trial_study_index"
down_revision = "12_pair_tallies"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_trials_study_id", table_name="trials")


def downgrade() -> None:
    op.create_index("ix_trials_study_id", "trials", ["study_id"], unique=False)
