"""the evaluator's view: per-study compare tools and answer pacing, per-rating compare logs

Revision ID: 10_evaluator_view
Revises: 11_explorer
Create Date: 2026-11-28 10:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "10_evaluator_view"
down_revision = "11_explorer"
branch_labels = None
depends_on = None

STUDY_COLUMNS = (
    ("compare_tools", lambda: sa.Column("compare_tools", sa.Boolean(), nullable=False, server_default=sa.true())),
    ("max_upscale", lambda: sa.Column("max_upscale", sa.Float(), nullable=False, server_default="4")),
    ("fast_answers", lambda: sa.Column("fast_answers", sa.String(length=8), nullable=False, server_default="warn")),
    ("fast_share_limit", lambda: sa.Column("fast_share_limit", sa.Float(), nullable=True)),
    ("returned_message", lambda: sa.Column("returned_message", sa.Text(), nullable=True)),
    ("gold_instruction", lambda: sa.Column("gold_instruction", sa.Text(), nullable=True)),
)
RATING_COLUMNS = (
    ("used_zoom", sa.Boolean), ("used_flicker", sa.Boolean), ("max_zoom", sa.Float),
    ("compare_view_ms", sa.Integer), ("flicker_ms", sa.Integer), ("unlock_ms", sa.Integer),
)


def upgrade() -> None:
    with op.batch_alter_table("studies", schema=None) as batch_op:
        for _, column in STUDY_COLUMNS:
            batch_op.add_column(column())
    with op.batch_alter_table("ratings", schema=None) as batch_op:
        for name, type_ in RATING_COLUMNS:
            batch_op.add_column(sa.Column(name, type_(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ratings", schema=None) as batch_op:
        for name, _ in reversed(RATING_COLUMNS):
            batch_op.drop_column(name)
    with op.batch_alter_table("studies", schema=None) as batch_op:
        for name, _ in reversed(STUDY_COLUMNS):
            batch_op.drop_column(name)
