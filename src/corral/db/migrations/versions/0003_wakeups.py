"""PostgreSQL: a new task row wakes idle workers at once (LISTEN/NOTIFY).

The trigger notifies channel ``corral_tasks`` once per inserting statement, when
its transaction commits; a worker that listens claims at once instead of at its
next poll. Only inserts notify: a claim or a retry (an update) must not wake
every worker. SQLite has no notifications: its workers poll (and are woken
directly by the work their own executions enqueue).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE FUNCTION corral_notify_tasks() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_notify('corral_tasks', ''); RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER tasks_inserted AFTER INSERT ON tasks "
        "FOR EACH STATEMENT EXECUTE FUNCTION corral_notify_tasks()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER tasks_inserted ON tasks")
    op.execute("DROP FUNCTION corral_notify_tasks()")
