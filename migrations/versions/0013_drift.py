"""drift: each classifier version's reference profile, live counts in its bins, and a drift threshold per name

Revision ID: 0013
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('models') as batch:
        batch.add_column(sa.Column('profile', sa.JSON(), nullable=True))
    with op.batch_alter_table('monitoring_settings') as batch:
        batch.add_column(sa.Column('drift_threshold', sa.Float(), nullable=True))
    op.create_table(
        'drift_counts',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('model_id', sa.Uuid(), sa.ForeignKey('models.id', ondelete='CASCADE'), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('counts', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_drift_counts_model_id', 'drift_counts', ['model_id'])
    op.create_index('ix_drift_counts_created_at', 'drift_counts', ['created_at'])


def downgrade() -> None:
    op.drop_index('ix_drift_counts_created_at', table_name='drift_counts')
    op.drop_index('ix_drift_counts_model_id', table_name='drift_counts')
    op.drop_table('drift_counts')
    with op.batch_alter_table('monitoring_settings') as batch:
        batch.drop_column('drift_threshold')
    with op.batch_alter_table('models') as batch:
        batch.drop_column('profile')
