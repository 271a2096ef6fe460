"""secretflow_tasks: last_event_id and status_at (the applied event's own timestamp)

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("secretflow_tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_event_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("status_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("secretflow_tasks", schema=None) as batch_op:
        batch_op.drop_column("status_at")
        batch_op.drop_column("last_event_id")
