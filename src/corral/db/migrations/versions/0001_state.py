"""The per-scope key-value store and its leased locks.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

KeyText = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "state",
        sa.Column("scope", KeyText, primary_key=True),
        sa.Column("key", KeyText, primary_key=True),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=True),
    )
    op.create_index(
        "ix_state_expires_at",
        "state",
        ["expires_at"],
        sqlite_where=sa.text("expires_at IS NOT NULL"),
        postgresql_where=sa.text("expires_at IS NOT NULL"),
    )
    op.create_table(
        "state_locks",
        sa.Column("scope", KeyText, primary_key=True),
        sa.Column("key", KeyText, primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("state_locks")
    op.drop_index("ix_state_expires_at", table_name="state")
    op.drop_table("state")
