"""rollouts: canary and shadow rollouts of a model version, their events and the replicas' counts

Revision ID: 0011
Revises: 0010
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

ACTIVE = sa.text("status IN ('running', 'paused')")


def upgrade() -> None:
    op.create_table(
        'rollouts',
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('alias', sa.String(length=64), nullable=False),
        sa.Column('stable_id', sa.Uuid(), sa.ForeignKey('models.id'), nullable=False),
        sa.Column('candidate_id', sa.Uuid(), sa.ForeignKey('models.id'), nullable=False),
        sa.Column('mode', sa.String(length=20), nullable=False),
        sa.Column('request', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('step', sa.Integer(), nullable=False),
        sa.Column('step_started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('key_id', sa.Uuid(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('judged_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_rollouts_name', 'rollouts', ['name'])
    op.create_index('ix_rollouts_status', 'rollouts', ['status'])
    op.create_index('ix_rollouts_created_at', 'rollouts', ['created_at'])
    op.create_index('ix_rollouts_active_alias', 'rollouts', ['name', 'alias'], unique=True,
                    sqlite_where=ACTIVE, postgresql_where=ACTIVE)
    op.create_table(
        'rollout_events',
        sa.Column('rollout_id', sa.Uuid(), sa.ForeignKey('rollouts.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('seq', sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('data', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        'rollout_counts',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('rollout_id', sa.Uuid(), sa.ForeignKey('rollouts.id', ondelete='CASCADE'), nullable=False),
        sa.Column('step', sa.Integer(), nullable=False),
        sa.Column('arm', sa.String(length=20), nullable=False),
        sa.Column('requests', sa.Integer(), nullable=False),
        sa.Column('errors', sa.Integer(), nullable=False),
        sa.Column('compared', sa.Integer(), nullable=False),
        sa.Column('agreed', sa.Integer(), nullable=False),
        sa.Column('difference', sa.Float(), nullable=False),
        sa.Column('scale', sa.Float(), nullable=False),
        sa.Column('latency', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_rollout_counts_rollout_id', 'rollout_counts', ['rollout_id'])


def downgrade() -> None:
    op.drop_table('rollout_counts')
    op.drop_table('rollout_events')
    op.drop_index('ix_rollouts_active_alias', table_name='rollouts')
    op.drop_index('ix_rollouts_created_at', table_name='rollouts')
    op.drop_index('ix_rollouts_status', table_name='rollouts')
    op.drop_index('ix_rollouts_name', table_name='rollouts')
    op.drop_table('rollouts')
