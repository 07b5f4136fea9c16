"""Priorities, activities and their notes (SPEC §1.4).

A priority is a name nested with ``/``; ``priorities`` keeps the ones made by an
install or ``corral priorities create``, and this migration adds those the
instances already name (with the priorities above them). An activity's ``root``
is the first segment of its priority: a ``source`` is unique within that tree,
which is what makes creating by source an update. ``size`` is what the activity
holds, encoded (title, meta and notes), held to ``MAX_ACTIVITY_BYTES``. A note's
``n`` orders notes as they were created; its ``key`` is unique within its
activity.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer, "sqlite")  # SQLite: an alias of the rowid


def upgrade() -> None:
    priorities = op.create_table(
        "priorities",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "activities",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("root", sa.Text, nullable=False),
        sa.Column("priority", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=True),
        sa.Column("starts", sa.LargeBinary, nullable=True),
        sa.Column("ends", sa.LargeBinary, nullable=True),
        sa.Column("done", sa.Boolean, nullable=True),
        sa.Column("meta", sa.LargeBinary, nullable=True),
        sa.Column("author", sa.Text, nullable=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("root", "source", name="ux_activities_source"),
    )
    op.create_index("ix_activities_root", "activities", ["root", "updated_at"])
    op.create_index("ix_activities_updated", "activities", ["updated_at"])
    op.create_index("ix_activities_author", "activities", ["author"])
    op.create_table(
        "notes",
        sa.Column("n", Id, primary_key=True, autoincrement=True),
        sa.Column("id", sa.Text, nullable=False, unique=True),
        sa.Column("activity_id", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=True),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("author", sa.Text, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("activity_id", "key", name="ux_notes_key"),
    )
    op.create_index("ix_notes_activity", "notes", ["activity_id", "n"])
    # The priorities the instances already name, and every priority above them.
    bind = op.get_bind()
    named = {row[0] for row in bind.execute(sa.text("SELECT DISTINCT priority FROM instances"))}
    found = {"/".join(p.split("/")[: i + 1]) for p in named for i in range(p.count("/") + 1)}
    if found:
        op.bulk_insert(priorities, [{"name": name, "created_at": 0} for name in sorted(found)])


def downgrade() -> None:
    op.drop_table("notes")
    op.drop_table("activities")
    op.drop_table("priorities")
