"""model exports

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 06:06:09.076728
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('models', schema=None) as batch_op:
        # Versions registered before exports existed have none.
        batch_op.add_column(sa.Column('exports', sa.JSON(), nullable=False, server_default='{}'))


def downgrade() -> None:
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_column('exports')
