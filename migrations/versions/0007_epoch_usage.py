"""each epoch records the CPU time, peak memory and, on CUDA, the GPU it used

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job_metrics', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cpu_seconds', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('peak_rss_bytes', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('gpu_name', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('gpu_peak_memory_bytes', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('gpu_utilization', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('job_metrics', schema=None) as batch_op:
        for column in ('gpu_utilization', 'gpu_peak_memory_bytes', 'gpu_name', 'peak_rss_bytes', 'cpu_seconds'):
            batch_op.drop_column(column)
