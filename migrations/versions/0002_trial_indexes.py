"""indexes for per-pair claims and per-participant trial lookups

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 23:35:00
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.create_index("ix_trials_study_pair", ["study_id", "pair_id"], unique=False)
        batch_op.create_index("ix_trials_participant", ["participant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.drop_index("ix_trials_participant")
        batch_op.drop_index("ix_trials_study_pair")
