"""pair token maps for the pair explorer; optional auto-close of a study; the researcher's
approve/reject decision per participant

Revision ID: 11_explorer
Revises: 13_monitoring
Create Date: 2026-11-28 10:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "11_explorer"
down_revision = "13_monitoring"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pairs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("token_map", sa.JSON(), nullable=True))
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("auto_close", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("review", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.drop_column("review")
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_column("auto_close")
    with op.batch_alter_table("pairs", schema=None) as batch_op:
        batch_op.drop_column("token_map")
