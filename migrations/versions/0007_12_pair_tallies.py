"""pair tallies: answered main trials per (study, pair), and an index of the holds

Revision ID: 12_pair_tallies
Revises: 10_evaluator_view
Create Date: 2026-11-28 16:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "12_pair_tallies"
down_revision = "10_evaluator_view"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pair_tallies",
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("pair_id", sa.Integer(), sa.ForeignKey("pairs.id"), nullable=False),
        sa.Column("answered", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("study_id", "pair_id"),
    )
    # Studies already running start from what they have.
    op.execute(
        "INSERT INTO pair_tallies (study_id, pair_id, answered) "
        "SELECT study_id, pair_id, count(*) FROM trials WHERE kind = 'main' AND state = 'answered' "
        "GROUP BY study_id, pair_id"
    )
    op.create_index("ix_trials_holds", "trials", ["study_id", "pair_id"],
                    sqlite_where=sa.text("state = 'assigned'"), postgresql_where=sa.text("state = 'assigned'"))


def downgrade() -> None:
    op.drop_index("ix_trials_holds", table_name="trials")
    op.drop_table("pair_tallies")
