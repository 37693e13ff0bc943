"""hyperparameter sweeps: the sweeps and sweep_events tables, a job's sweep and trial number, Optuna's schema on PostgreSQL

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'sweeps',
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('request', sa.JSON(), nullable=False),
        sa.Column('study_name', sa.String(length=200), nullable=False),
        sa.Column('cancel_requested', sa.Boolean(), nullable=False),
        sa.Column('key_id', sa.Uuid(), nullable=True),
        sa.Column('best_job_id', sa.Uuid(), nullable=True),
        sa.Column('model_id', sa.Uuid(), nullable=True),
        sa.Column('result', sa.JSON(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('advanced_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_sweeps_status', 'sweeps', ['status'])
    op.create_table(
        'sweep_events',
        sa.Column('sweep_id', sa.Uuid(), sa.ForeignKey('sweeps.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('seq', sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('data', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index('ix_sweeps_created_at', 'sweeps', ['created_at'])
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sweep_id', sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column('trial_number', sa.Integer(), nullable=True))
        batch_op.create_index('ix_jobs_sweep_id', ['sweep_id'])
        batch_op.create_foreign_key('fk_jobs_sweep_id_sweeps', 'sweeps', ['sweep_id'], ['id'])
    if op.get_bind().dialect.name == 'postgresql':
        # Optuna's RDB storage keeps its own tables, and its own alembic_version, apart from trainserve's.
        op.execute('CREATE SCHEMA IF NOT EXISTS optuna')


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_jobs_sweep_id_sweeps', type_='foreignkey')
        batch_op.drop_index('ix_jobs_sweep_id')
        batch_op.drop_column('trial_number')
        batch_op.drop_column('sweep_id')
    op.drop_table('sweep_events')
    op.drop_index('ix_sweeps_created_at', table_name='sweeps')
    op.drop_index('ix_sweeps_status', table_name='sweeps')
    op.drop_table('sweeps')
