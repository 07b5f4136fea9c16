"""Table definitions: the single source for queries. Migrations create them."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# Keys sort by code point everywhere: SQLite's BINARY collation compares UTF-8 bytes,
# which orders the same way; PostgreSQL needs the "C" collation to do likewise.
KeyText = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")

state = sa.Table(
    "state",
    metadata,
    sa.Column("scope", KeyText, primary_key=True),
    sa.Column("key", KeyText, primary_key=True),
    sa.Column("value", sa.LargeBinary, nullable=False),
    # Milliseconds since the epoch; NULL means the key never expires.
    sa.Column("expires_at", sa.BigInteger, nullable=True),
)
sa.Index(
    "ix_state_expires_at",
    state.c.expires_at,
    sqlite_where=state.c.expires_at.is_not(None),
    postgresql_where=state.c.expires_at.is_not(None),
)

# Leased locks live apart from the keys so no key listing can ever show them.
state_locks = sa.Table(
    "state_locks",
    metadata,
    sa.Column("scope", KeyText, primary_key=True),
    sa.Column("key", KeyText, primary_key=True),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
)

# Each scope's store usage, kept exact by triggers on ``state`` (migration 0006):
# what the store quotas are checked against.
state_usage = sa.Table(
    "state_usage",
    metadata,
    sa.Column("scope", KeyText, primary_key=True),
    # Bytes of the scope's keys (UTF-8) and values (encoded), and how many keys.
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("keys", sa.BigInteger, nullable=False),
)
