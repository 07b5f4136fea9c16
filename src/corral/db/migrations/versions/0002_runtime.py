"""The runtime: agents and their versions, instances, durable tasks, callbacks, history.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer, "sqlite")  # SQLite: an alias of the rowid


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("current_version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "versions",
        sa.Column("agent", sa.Text, primary_key=True),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("digest", sa.Text, nullable=False),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "instances",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("agent", sa.Text, nullable=False),
        sa.Column("priority", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("status_reason", sa.Text, nullable=True),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("limits_reset_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_instances_agent", "instances", ["agent"])
    op.create_table(
        "tasks",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("instance", sa.Text, nullable=False),
        sa.Column("trigger", sa.Text, nullable=False),
        sa.Column("method", sa.Text, nullable=False),
        sa.Column("args", sa.LargeBinary, nullable=False),
        sa.Column("token", sa.Text, nullable=True, unique=True),
        sa.Column("key", sa.Text, nullable=True),
        sa.Column("interval_ms", sa.BigInteger, nullable=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("run_at", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("lease_until", sa.BigInteger, nullable=True),
        sa.Column("leased_by", sa.Text, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    # One partial index per polled state: SQLite uses a partial index only when the
    # query repeats its condition, and the claim asks for 'queued' alone.
    for state in ("queued", "recurring"):
        due = sa.text(f"state = '{state}'")
        op.create_index(
            f"ix_tasks_{state}", "tasks", ["run_at"], sqlite_where=due, postgresql_where=due
        )
    op.create_index("ix_tasks_instance", "tasks", ["instance", "state"])
    keyed = sa.text("key IS NOT NULL AND state IN ('queued', 'recurring')")
    op.create_index(
        "ux_tasks_key",
        "tasks",
        ["instance", "key"],
        unique=True,
        sqlite_where=keyed,
        postgresql_where=keyed,
    )
    running = sa.text("state = 'running'")
    op.create_index(
        "ix_tasks_lease", "tasks", ["lease_until"], sqlite_where=running, postgresql_where=running
    )
    op.create_table(
        "callbacks",
        sa.Column("token", sa.Text, primary_key=True),
        sa.Column("instance", sa.Text, nullable=False),
        sa.Column("method", sa.Text, nullable=False),
        sa.Column("args", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_callbacks_instance", "callbacks", ["instance"])
    op.create_table(
        "executions",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("instance", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("method", sa.Text, nullable=False),
        sa.Column("trigger", sa.Text, nullable=False),
        sa.Column("task_id", sa.BigInteger, nullable=True),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("result", sa.LargeBinary, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("requests_used", sa.Integer, nullable=False),
        sa.Column("cpu_ms", sa.Float, nullable=False),
        sa.Column("peak_rss_bytes", sa.BigInteger, nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("started_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_executions_instance", "executions", ["instance", "started_at"])
    op.create_index("ix_executions_started", "executions", ["started_at"])
    op.create_table(
        "logs",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("instance", sa.Text, nullable=False),
        sa.Column("execution_id", sa.Text, nullable=True),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("level", sa.Text, nullable=False),
        sa.Column("line", sa.Text, nullable=False),
    )
    op.create_index("ix_logs_instance", "logs", ["instance", "id"])
    op.create_index("ix_logs_execution", "logs", ["execution_id"])


def downgrade() -> None:
    for table in ("logs", "executions", "callbacks", "tasks", "instances", "versions", "agents"):
        op.drop_table(table)
