"""Metric snapshots: each process's cumulative counters, summed by ``/metrics``.

A worker or server counts in memory and writes what it has counted so far here,
one row per process, every few seconds and as it stops. A row stays after its
process ends, so the sums never go down while processes come and go.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metric_snapshots",
        sa.Column("process", sa.Text, primary_key=True),
        sa.Column("samples", sa.Text, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("metric_snapshots")
