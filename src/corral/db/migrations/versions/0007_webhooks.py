"""Webhooks and their deliveries; the delivery that caused an execution.

A webhook is a capability: its token is its URL's last part. Deleting one (or
uninstalling its instance) leaves a tombstone (``deleted_at``), so the URL
answers 410 rather than 404 until retention removes it. Every delivery is kept
as it was received (raw body, headers, query) before any answer, with what the
sender was answered for a sync one, so a repeat of it gets the same answer.

``executions.delivery_id`` names the delivery an execution ran for: the delivery
log derives each delivery's status, latency and execution from it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhooks",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("token", sa.Text, nullable=False, unique=True),
        sa.Column("instance", sa.Text, nullable=False),
        sa.Column("method", sa.Text, nullable=False),
        sa.Column("args", sa.LargeBinary, nullable=False),
        sa.Column("mode", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("verify", sa.Text, nullable=True),
        sa.Column("max_body_bytes", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("deleted_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_webhooks_instance", "webhooks", ["instance"])
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("webhook_id", sa.Text, nullable=False),
        sa.Column("instance", sa.Text, nullable=False),
        sa.Column("dedupe_key", sa.Text, nullable=True),
        sa.Column("received_at", sa.BigInteger, nullable=False),
        sa.Column("method", sa.Text, nullable=False),
        sa.Column("query", sa.Text, nullable=False),
        sa.Column("headers", sa.LargeBinary, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("mode", sa.Text, nullable=False),
        sa.Column("replay_of", sa.Text, nullable=True),
        sa.Column("task_id", sa.BigInteger, nullable=True),
        sa.Column("execution_id", sa.Text, nullable=True),
        sa.Column("response_status", sa.Integer, nullable=True),
        sa.Column("response_headers", sa.LargeBinary, nullable=True),
        sa.Column("response_body", sa.LargeBinary, nullable=True),
        sa.Column("answered_at", sa.BigInteger, nullable=True),
        sa.Column("duplicates", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_deliveries_webhook", "deliveries", ["webhook_id", "received_at"])
    op.create_index("ix_deliveries_received", "deliveries", ["received_at"])
    keyed = sa.text("dedupe_key IS NOT NULL")
    op.create_index(
        "ix_deliveries_dedupe",
        "deliveries",
        ["webhook_id", "dedupe_key"],
        sqlite_where=keyed,
        postgresql_where=keyed,
    )
    op.add_column("executions", sa.Column("delivery_id", sa.Text, nullable=True))
    caused = sa.text("delivery_id IS NOT NULL")
    op.create_index(
        "ix_executions_delivery",
        "executions",
        ["delivery_id"],
        sqlite_where=caused,
        postgresql_where=caused,
    )


def downgrade() -> None:
    op.drop_index("ix_executions_delivery", "executions")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("delivery_id")
    op.drop_table("deliveries")
    op.drop_table("webhooks")
