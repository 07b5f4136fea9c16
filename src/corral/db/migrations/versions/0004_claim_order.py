"""The claim reads due tasks in the order it hands them out, and stops at its limit.

Claims ask for queued tasks ``ORDER BY run_at, id LIMIT n``. With the index on
``run_at`` alone, PostgreSQL fetched every due row, sorted them and locked the
first few: measured on a queue of 5,000 due tasks, 7 ms of server time a claim
(and more as the queue grew), where an index in the claim's own order lets the
scan stop after ``n`` rows (0.1 ms). SQLite's index already held ``id`` (the
rowid), so the new index changes nothing there but keeps one schema.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_QUEUED = sa.text("state = 'queued'")


def upgrade() -> None:
    op.drop_index("ix_tasks_queued", table_name="tasks")
    op.create_index(
        "ix_tasks_queued",
        "tasks",
        ["run_at", "id"],
        sqlite_where=_QUEUED,
        postgresql_where=_QUEUED,
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_queued", table_name="tasks")
    op.create_index(
        "ix_tasks_queued", "tasks", ["run_at"], sqlite_where=_QUEUED, postgresql_where=_QUEUED
    )
