"""prediction logs: the logged requests that feedback labels, and each model name's logging settings

Revision ID: 0012
Revises: 0011
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'predictions',
        sa.Column('request_id', sa.String(length=128), nullable=False),
        sa.Column('model_id', sa.Uuid(), sa.ForeignKey('models.id', ondelete='CASCADE'), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('role', sa.String(length=20), nullable=False),
        sa.Column('task', sa.String(length=20), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('instances', sa.Integer(), nullable=False),
        sa.Column('predicted', sa.JSON(), nullable=False),
        sa.Column('key_id', sa.Uuid(), nullable=True),
        sa.Column('actual', sa.JSON(), nullable=True),
        sa.Column('labelled_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('request_id'),
    )
    op.create_index('ix_predictions_model_id', 'predictions', ['model_id'])
    op.create_index('ix_predictions_created_at', 'predictions', ['created_at'])
    op.create_index('ix_predictions_labelled_at', 'predictions', ['labelled_at'])
    op.create_table(
        'monitoring_settings',
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('log_share', sa.Float(), nullable=True),
        sa.Column('retention_days', sa.Integer(), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )


def downgrade() -> None:
    op.drop_table('monitoring_settings')
    op.drop_index('ix_predictions_labelled_at', table_name='predictions')
    op.drop_index('ix_predictions_created_at', table_name='predictions')
    op.drop_index('ix_predictions_model_id', table_name='predictions')
    op.drop_table('predictions')
