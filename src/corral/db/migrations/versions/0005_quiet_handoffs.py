"""PostgreSQL: a task inserted already leased (a hand-off) wakes no worker.

A worker hands a task an execution enqueues, due now, to itself: the row goes in
as ``running``, leased to that worker (``TaskQueue.hand_off``). The trigger
of 0003 notified every listening worker of every insert, and each woken worker
then ran a claim that found nothing: for a chain of tasks, one wasted claim a step
in every idle worker. The trigger now looks at the inserted rows (a transition
table) and notifies only when one of them is waiting to be claimed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER tasks_inserted ON tasks")
    op.execute(
        "CREATE OR REPLACE FUNCTION corral_notify_tasks() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN IF EXISTS (SELECT 1 FROM inserted WHERE state <> 'running') THEN "
        "PERFORM pg_notify('corral_tasks', ''); END IF; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER tasks_inserted AFTER INSERT ON tasks REFERENCING NEW TABLE AS inserted "
        "FOR EACH STATEMENT EXECUTE FUNCTION corral_notify_tasks()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER tasks_inserted ON tasks")
    op.execute(
        "CREATE OR REPLACE FUNCTION corral_notify_tasks() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_notify('corral_tasks', ''); RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER tasks_inserted AFTER INSERT ON tasks "
        "FOR EACH STATEMENT EXECUTE FUNCTION corral_notify_tasks()"
    )
