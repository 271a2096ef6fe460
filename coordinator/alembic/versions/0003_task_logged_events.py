"""secretflow_tasks: logged_events (how many of the task's events the timeline holds, for the
cap per task without counting the log on every batch)

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("secretflow_tasks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("logged_events", sa.Integer(), nullable=False, server_default="0")
        )
    # the tasks logged before this column: their count as it stands
    op.execute(
        "UPDATE secretflow_tasks SET logged_events = (SELECT count(*) FROM task_status_logs "
        "WHERE task_status_logs.task_request_id = secretflow_tasks.celery_task_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("secretflow_tasks", schema=None) as batch_op:
        batch_op.drop_column("logged_events")
