"""jobs: waiting_for (why a queued job is not sent yet), until now the start of its error text
("waiting: <why> | <earlier error>")

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

WAITING = "waiting: "


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("waiting_for", sa.Text(), nullable=True))
    jobs = sa.table(
        "jobs", sa.column("id", sa.String), sa.column("error", sa.Text),
        sa.column("waiting_for", sa.Text),
    )  # fmt: skip
    bind = op.get_bind()
    rows = bind.execute(sa.select(jobs.c.id, jobs.c.error).where(jobs.c.error.like("waiting: %")))
    for job_id, error in rows.fetchall():
        why, _, earlier = error[len(WAITING) :].partition(" | ")
        bind.execute(
            jobs.update().where(jobs.c.id == job_id).values(waiting_for=why, error=earlier or None)
        )


def downgrade() -> None:
    jobs = sa.table(
        "jobs", sa.column("id", sa.String), sa.column("error", sa.Text),
        sa.column("waiting_for", sa.Text),
    )  # fmt: skip
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(jobs.c.id, jobs.c.error, jobs.c.waiting_for).where(jobs.c.waiting_for.isnot(None))
    )
    for job_id, error, why in rows.fetchall():
        text = f"{WAITING}{why} | {error}" if error else f"{WAITING}{why}"
        bind.execute(jobs.update().where(jobs.c.id == job_id).values(error=text))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("waiting_for")
