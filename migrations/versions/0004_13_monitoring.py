"""monitoring settings per study, and a note (e.g. a monitoring stop) per study version

Revision ID: 13_monitoring
Revises: 8_security
Create Date: 2026-11-28 10:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "13_monitoring"
down_revision = "8_security"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("monitoring", sa.JSON(), nullable=True))
    with op.batch_alter_table("study_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("note", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("study_versions", schema=None) as batch_op:
        batch_op.drop_column("note")
    # Not batch mode on SQLite: recreating `studies` would cascade deletes to trials and ratings.
    if op.get_bind().dialect.name == "sqlite":
        op.execute(sa.text("ALTER TABLE studies DROP COLUMN monitoring"))
    else:
        op.drop_column("studies", "monitoring")
