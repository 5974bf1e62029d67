"""several criteria per trial (issue 24): a study's `questions` and `primary_criterion`; one rating
row per criterion (`criterion`, `is_primary`), unique per (trial, criterion) instead of per trial,
the request id unique among primary rows. Existing ratings become the `overall` criterion's
primary rows, their values untouched.

Revision ID: 24_criteria
Revises: 25_datasheet
Create Date: 2026-12-03 07:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "24_criteria"
down_revision = "25_datasheet"
branch_labels = None
depends_on = None

# Names for the unnamed UNIQUE constraints of 0001 (PostgreSQL's own names; on SQLite, batch mode
# names the reflected ones by this convention so that they can be dropped).
_NAMES = {"uq": "%(table_name)s_%(column_0_name)s_key"}


def upgrade() -> None:
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("questions", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("primary_criterion", sa.String(length=64), nullable=True))
    with op.batch_alter_table("ratings", schema=None, naming_convention=_NAMES) as batch_op:
        batch_op.add_column(sa.Column("criterion", sa.String(length=64), server_default="overall", nullable=False))
        batch_op.add_column(sa.Column("is_primary", sa.Boolean(), server_default=sa.true(), nullable=False))
        batch_op.drop_constraint("ratings_trial_id_key", type_="unique")
        batch_op.drop_constraint("ratings_request_id_key", type_="unique")
        batch_op.create_unique_constraint("uq_ratings_trial_criterion", ["trial_id", "criterion"])
    op.create_index("uq_ratings_primary_request", "ratings", ["request_id"], unique=True,
                    sqlite_where=sa.text("is_primary"), postgresql_where=sa.text("is_primary"))


def downgrade() -> None:
    # Back to one rating per trial: the secondary criteria's rows cannot be kept.
    op.execute(sa.text("DELETE FROM ratings WHERE NOT is_primary"))
    op.drop_index("uq_ratings_primary_request", table_name="ratings")
    with op.batch_alter_table("ratings", schema=None, naming_convention=_NAMES) as batch_op:
        batch_op.drop_constraint("uq_ratings_trial_criterion", type_="unique")
        batch_op.create_unique_constraint("ratings_trial_id_key", ["trial_id"])
        batch_op.create_unique_constraint("ratings_request_id_key", ["request_id"])
        batch_op.drop_column("is_primary")
        batch_op.drop_column("criterion")
    if op.get_bind().dialect.name == "sqlite":
        # Not batch mode: recreating `studies` would drop the old table, and with foreign keys on
        # SQLite deletes its rows' trials and ratings with it (ON DELETE CASCADE).
        op.execute(sa.text("ALTER TABLE studies DROP COLUMN primary_criterion"))
        op.execute(sa.text("ALTER TABLE studies DROP COLUMN questions"))
    else:
        op.drop_column("studies", "primary_criterion")
        op.drop_column("studies", "questions")
