"""Indexes behind the admin API's lists: each filter, in each list's order.

Every list of the admin API (and the dashboard) is read newest first, a page at a
time, with ``(time, id) < (cursor)``: an index on ``(filter, time, id)`` lets the
scan start at the cursor and stop after one page, however many rows there are
(SPEC §2; the bar is 200 ms a page over a million executions).

- executions: by time; by instance, method or trigger; by outcome for the rare
  outcomes only (a partial index: ``ok`` rows, nearly all of them, cost it
  nothing, and a list of ``ok`` ones walks the time index, where they abound).
  ``ix_executions_started`` and ``ix_executions_instance`` gain the id, which
  breaks ties of one millisecond in the list's order.
- logs: by time; by instance and time; by level for the levels other than
  ``info`` (partial, as above). The instance's tail (``corral logs -f``) keeps
  ``ix_logs_instance``, by id.
- tasks: the dead letters (partial: a task that runs is never in it, so claims
  and settlements pay nothing for it). The other states have their indexes
  already (0002, 0004).
- instances: by creation, and by status or priority in that order.
- deliveries: a webhook's, with the id for ties.

Each of these is written with every row its table gets; on the busiest tables
(executions, logs) the partial indexes keep that to what a filter needs.
Building them takes a lock on each table's writes while it runs (a one-off, at
``corral migrate``).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-09
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_RARE_OUTCOMES = sa.text("outcome <> 'ok'")
_RARE_LEVELS = sa.text("level <> 'info'")
_DEAD = sa.text("state = 'dead'")

#: (name, table, columns, partial condition or None) of each index made.
_MADE = [
    ("ix_executions_started_id", "executions", ["started_at", "id"], None),
    ("ix_executions_instance_started", "executions", ["instance", "started_at", "id"], None),
    ("ix_executions_method", "executions", ["method", "started_at", "id"], None),
    ("ix_executions_trigger", "executions", ["trigger", "started_at", "id"], None),
    ("ix_executions_outcome", "executions", ["outcome", "started_at", "id"], _RARE_OUTCOMES),
    ("ix_logs_at", "logs", ["at", "id"], None),
    ("ix_logs_instance_at", "logs", ["instance", "at", "id"], None),
    ("ix_logs_level", "logs", ["level", "at", "id"], _RARE_LEVELS),
    ("ix_tasks_dead", "tasks", ["id"], _DEAD),
    ("ix_instances_created", "instances", ["created_at", "id"], None),
    ("ix_instances_status", "instances", ["status", "created_at", "id"], None),
    ("ix_instances_priority", "instances", ["priority", "created_at", "id"], None),
    ("ix_deliveries_webhook_id", "deliveries", ["webhook_id", "received_at", "id"], None),
]
#: (name, table, columns) of each index the ones above replace.
_REPLACED = [
    ("ix_executions_started", "executions", ["started_at"]),
    ("ix_executions_instance", "executions", ["instance", "started_at"]),
    ("ix_deliveries_webhook", "deliveries", ["webhook_id", "received_at"]),
]


def upgrade() -> None:
    for name, table, columns, where in _MADE:
        op.create_index(name, table, columns, sqlite_where=where, postgresql_where=where)
    for name, table, _ in _REPLACED:
        op.drop_index(name, table_name=table)


def downgrade() -> None:
    for name, table, columns in _REPLACED:
        op.create_index(name, table, columns)
    for name, table, _, _ in reversed(_MADE):
        op.drop_index(name, table_name=table)
