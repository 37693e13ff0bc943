"""dataset uploads: content hash, files, canonical data, statistics; jobs outlive a deleted dataset

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('format', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('sha256', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('size_bytes', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('files', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('data_key', sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column('data_sha256', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('stats', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('source_url', sa.Text(), nullable=True))
        batch_op.create_index(batch_op.f('ix_datasets_sha256'), ['sha256'], unique=False)
        batch_op.create_unique_constraint('uq_datasets_name_sha256', ['name', 'sha256'])
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.alter_column('dataset_id', existing_type=sa.Uuid(), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.alter_column('dataset_id', existing_type=sa.Uuid(), nullable=False)
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_constraint('uq_datasets_name_sha256', type_='unique')
        batch_op.drop_index(batch_op.f('ix_datasets_sha256'))
        for column in ('source_url', 'stats', 'data_sha256', 'data_key', 'files', 'size_bytes', 'sha256', 'format'):
            batch_op.drop_column(column)
