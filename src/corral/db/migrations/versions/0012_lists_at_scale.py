"""The lists at scale: executions by agent through an index of their own, activities
counted by priority through one.

With 10,000 instances and 1,000,000 executions (bench/admin.py), two lists missed
the bar of 200 ms a page at p95:

- ``/executions?agent=``: an execution names its instance, not its agent, so the
  filter read the agent's instances' executions (``instance IN (SELECT ... WHERE
  agent = ...)``). Which way that is fast depends on the agent: through each
  instance's index for an agent with few executions, down the time index for a
  busy one. PostgreSQL, once it plans the prepared statement for any agent, walks
  the time index for every agent: 1.8 s for one with 8 executions in a million.
  Each execution now holds its instance's agent (which never changes), written with
  the row (``HistoryDatabase.insert``), and ``ix_executions_agent`` reads a page of
  any agent's executions in order. The rows already there get their agent here.
- ``/priorities`` (and the dashboard's activities page, which lists the priorities
  beside the activities) counts each priority's activities: without an index on
  ``priority``, each count read the whole activities table, once per priority
  (~190 ms for 50,000 activities over 17 priorities on SQLite).

Filling in the agent of the executions already recorded rewrites each of their
rows once, a one-off at ``corral migrate``: for a million executions on a busy
2-core machine, 9 s on SQLite and 77 s on PostgreSQL (whose autovacuum then
reclaims the old row versions).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-10
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("executions", sa.Column("agent", sa.Text, nullable=True))
    op.execute(
        "UPDATE executions SET agent = "
        "(SELECT i.agent FROM instances i WHERE i.id = executions.instance)"
    )
    op.create_index("ix_executions_agent", "executions", ["agent", "started_at", "id"])
    op.create_index("ix_activities_priority", "activities", ["priority"])


def downgrade() -> None:
    op.drop_index("ix_activities_priority", table_name="activities")
    op.drop_index("ix_executions_agent", table_name="executions")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("agent")
