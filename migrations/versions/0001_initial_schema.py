"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 22:41:09.679506
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('admin_users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=150), nullable=False),
    sa.Column('password_hash', sa.String(length=300), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('username')
    )
    op.create_table('images',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token', sa.String(length=64), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('byte_len', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token')
    )
    op.create_table('pair_sets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=300), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('manifest_sha256', sa.String(length=64), nullable=False),
    sa.Column('baseline_arm', sa.String(length=100), nullable=False),
    sa.Column('treatment_arm', sa.String(length=100), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('model', sa.JSON(), nullable=False),
    sa.Column('image_byte_len', sa.Integer(), nullable=False),
    sa.Column('imported_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('manifest_sha256')
    )
    op.create_table('studies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('slug', sa.String(length=64), nullable=False),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('instructions', sa.Text(), nullable=False),
    sa.Column('question', sa.Text(), nullable=False),
    sa.Column('scale_labels', sa.JSON(), nullable=False),
    sa.Column('pairs_per_participant', sa.Integer(), nullable=False),
    sa.Column('ratings_per_pair', sa.Integer(), nullable=False),
    sa.Column('gold_rate', sa.Float(), nullable=False),
    sa.Column('repeats', sa.Integer(), nullable=False),
    sa.Column('min_response_ms', sa.Integer(), nullable=False),
    sa.Column('practice_trials', sa.Integer(), nullable=False),
    sa.Column('hold_minutes', sa.Float(), nullable=True),
    sa.Column('completion_code', sa.String(length=100), nullable=False),
    sa.Column('redirect_url', sa.String(length=2000), nullable=True),
    sa.Column('exclusion_rules', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('slug')
    )
    op.create_table('comparisons',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('pair_set_id', sa.Integer(), nullable=False),
    sa.Column('label', sa.String(length=300), nullable=False),
    sa.ForeignKeyConstraint(['pair_set_id'], ['pair_sets.id'], ),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('study_id', 'pair_set_id')
    )
    op.create_table('pairs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('pair_set_id', sa.Integer(), nullable=False),
    sa.Column('pair_key', sa.String(length=300), nullable=False),
    sa.Column('prompt_id', sa.String(length=300), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('stratum', sa.String(length=100), nullable=True),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('baseline_image_id', sa.Integer(), nullable=False),
    sa.Column('treatment_image_id', sa.Integer(), nullable=False),
    sa.Column('gold_image_id', sa.Integer(), nullable=True),
    sa.Column('gold_degraded_arm', sa.String(length=16), nullable=True),
    sa.ForeignKeyConstraint(['baseline_image_id'], ['images.id'], ),
    sa.ForeignKeyConstraint(['gold_image_id'], ['images.id'], ),
    sa.ForeignKeyConstraint(['pair_set_id'], ['pair_sets.id'], ),
    sa.ForeignKeyConstraint(['treatment_image_id'], ['images.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('pair_set_id', 'pair_key')
    )
    with op.batch_alter_table('pairs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pairs_pair_set_id'), ['pair_set_id'], unique=False)

    op.create_table('participants',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('token', sa.String(length=64), nullable=False),
    sa.Column('external_ids', sa.JSON(), nullable=False),
    sa.Column('external_key', sa.String(length=300), nullable=True),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('plan', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('consented_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('study_id', 'external_key'),
    sa.UniqueConstraint('token')
    )
    with op.batch_alter_table('participants', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_participants_study_id'), ['study_id'], unique=False)

    op.create_table('study_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('study_id', 'version')
    )
    op.create_table('trials',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('public_id', sa.String(length=64), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('participant_id', sa.Integer(), nullable=False),
    sa.Column('pair_id', sa.Integer(), nullable=False),
    sa.Column('comparison_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('treatment_side', sa.String(length=8), nullable=False),
    sa.Column('repeat_of_trial_id', sa.Integer(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('presented_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['comparison_id'], ['comparisons.id'], ),
    sa.ForeignKeyConstraint(['pair_id'], ['pairs.id'], ),
    sa.ForeignKeyConstraint(['participant_id'], ['participants.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['repeat_of_trial_id'], ['trials.id'], ),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('public_id')
    )
    with op.batch_alter_table('trials', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_trials_pair_id'), ['pair_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_trials_study_id'), ['study_id'], unique=False)
        batch_op.create_index(
            'uq_trials_live_slot', ['participant_id', 'position'], unique=True,
            sqlite_where=sa.text("state != 'expired'"), postgresql_where=sa.text("state != 'expired'"),
        )

    op.create_table('ratings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('trial_id', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.String(length=100), nullable=False),
    sa.Column('study_version', sa.Integer(), nullable=False),
    sa.Column('choice', sa.Integer(), nullable=False),
    sa.Column('score', sa.Integer(), nullable=False),
    sa.Column('treatment_side', sa.String(length=8), nullable=False),
    sa.Column('response_ms', sa.Integer(), nullable=False),
    sa.Column('client_response_ms', sa.Integer(), nullable=True),
    sa.Column('too_fast', sa.Boolean(), nullable=False),
    sa.Column('answered_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['trial_id'], ['trials.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('request_id'),
    sa.UniqueConstraint('trial_id')
    )


def downgrade() -> None:
    op.drop_table('ratings')
    with op.batch_alter_table('trials', schema=None) as batch_op:
        batch_op.drop_index('uq_trials_live_slot')
        batch_op.drop_index(batch_op.f('ix_trials_study_id'))
        batch_op.drop_index(batch_op.f('ix_trials_pair_id'))

    op.drop_table('trials')
    op.drop_table('study_versions')
    with op.batch_alter_table('participants', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_participants_study_id'))

    op.drop_table('participants')
    with op.batch_alter_table('pairs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pairs_pair_set_id'))

    op.drop_table('pairs')
    op.drop_table('comparisons')
    op.drop_table('studies')
    op.drop_table('pair_sets')
    op.drop_table('images')
    op.drop_table('admin_users')
