"""Each scope's store usage (bytes of keys and values, and keys), kept by triggers.

The store's quotas (docs/store.md § Quotas) compare a write against its scope's
usage; summing the scope's rows for each write would cost as much as the store
holds. Triggers on ``state`` keep one row per scope instead, in the same statement
as the write, whoever writes: a store operation, the TTL sweeper, an uninstall, or
anything else. A trigger sees the row it replaces as it is at that moment, so two
writers of one key at once still leave the sum exact. An overwrite of the same
size changes nothing and fires no trigger (the WHEN clause is checked first).

On PostgreSQL the trigger also refuses a write that takes its scope over the
quota, when the statement says there is one (the transaction-local setting
``corral.store_quota``, ``"<bytes> <keys>"``): the check then reads the usage its
own update just made, under that row's lock, so concurrent writers of one scope
can never both pass it. SQLite runs one writer at a time, and its writes check
the quota in the statement itself (``SqlBackend.put``).

Rows never move between scopes, so an update counts in its own scope.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-14
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

KeyText = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")

#: The SQLSTATE of a write refused for the store quota (a class no server error uses).
QUOTA_SQLSTATE = "CQ001"

_SQLITE = [
    # Keys are TEXT: their size in bytes is the length of their UTF-8 encoding.
    "CREATE TRIGGER state_usage_insert AFTER INSERT ON state BEGIN "
    "INSERT INTO state_usage (scope, bytes, keys) "
    "VALUES (NEW.scope, length(CAST(NEW.key AS BLOB)) + length(NEW.value), 1) "
    "ON CONFLICT (scope) DO UPDATE SET bytes = bytes + excluded.bytes, keys = keys + 1; END",
    "CREATE TRIGGER state_usage_update AFTER UPDATE OF key, value ON state "
    "WHEN length(CAST(NEW.key AS BLOB)) + length(NEW.value) "
    "<> length(CAST(OLD.key AS BLOB)) + length(OLD.value) BEGIN "
    "UPDATE state_usage SET bytes = bytes + length(CAST(NEW.key AS BLOB)) + length(NEW.value) "
    "- length(CAST(OLD.key AS BLOB)) - length(OLD.value) WHERE scope = NEW.scope; END",
    "CREATE TRIGGER state_usage_delete AFTER DELETE ON state BEGIN "
    "UPDATE state_usage SET bytes = bytes - length(CAST(OLD.key AS BLOB)) - length(OLD.value), "
    "keys = keys - 1 WHERE scope = OLD.scope; END",
]
_SQLITE_BACKFILL = (
    "INSERT INTO state_usage (scope, bytes, keys) "
    "SELECT scope, sum(length(CAST(key AS BLOB)) + length(value)), count(*) FROM state "
    "GROUP BY scope"
)

_POSTGRES_FUNCTION = f"""
CREATE FUNCTION corral_state_usage() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    owner text;
    grown_bytes bigint := 0;
    grown_keys bigint := 0;
    bytes_after bigint;
    keys_after bigint;
    quota text;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        owner := OLD.scope;
        grown_bytes := -(octet_length(OLD.key) + octet_length(OLD.value));
        grown_keys := -1;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        owner := NEW.scope;
        grown_bytes := grown_bytes + octet_length(NEW.key) + octet_length(NEW.value);
        grown_keys := grown_keys + 1;
    END IF;
    INSERT INTO state_usage AS u (scope, bytes, keys) VALUES (owner, grown_bytes, grown_keys)
        ON CONFLICT (scope) DO UPDATE
        SET bytes = u.bytes + excluded.bytes, keys = u.keys + excluded.keys
        RETURNING u.bytes, u.keys INTO bytes_after, keys_after;
    quota := current_setting('corral.store_quota', true);
    IF quota <> '' AND (
        (grown_bytes > 0 AND bytes_after > split_part(quota, ' ', 1)::bigint)
        OR (grown_keys > 0 AND keys_after > split_part(quota, ' ', 2)::bigint)
    ) THEN
        RAISE EXCEPTION USING ERRCODE = '{QUOTA_SQLSTATE}',
            MESSAGE = 'the write would take scope ' || owner || ' over its store quota',
            DETAIL = bytes_after || ' ' || keys_after;
    END IF;
    RETURN NULL;
END $$
"""
_POSTGRES = [
    "LOCK TABLE state IN SHARE ROW EXCLUSIVE MODE",  # no write slips past the backfill
    _POSTGRES_FUNCTION,
    "CREATE TRIGGER state_usage_insert AFTER INSERT ON state "
    "FOR EACH ROW EXECUTE FUNCTION corral_state_usage()",
    "CREATE TRIGGER state_usage_update AFTER UPDATE ON state FOR EACH ROW "
    "WHEN (octet_length(NEW.key) + octet_length(NEW.value) "
    "<> octet_length(OLD.key) + octet_length(OLD.value)) "
    "EXECUTE FUNCTION corral_state_usage()",
    "CREATE TRIGGER state_usage_delete AFTER DELETE ON state "
    "FOR EACH ROW EXECUTE FUNCTION corral_state_usage()",
]
_POSTGRES_BACKFILL = (
    "INSERT INTO state_usage (scope, bytes, keys) "
    "SELECT scope, sum(octet_length(key) + octet_length(value)), count(*) FROM state GROUP BY scope"
)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "state_usage",
        sa.Column("scope", KeyText, primary_key=True),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("keys", sa.BigInteger, nullable=False),
    )
    # Triggers first, then the backfill, in the migration's one transaction: on
    # PostgreSQL the table lock keeps other processes' writes out until it commits.
    for statement in _POSTGRES if postgres else _SQLITE:
        op.execute(statement)
    op.execute(_POSTGRES_BACKFILL if postgres else _SQLITE_BACKFILL)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for event in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER state_usage_{event}" + (" ON state" if postgres else ""))
    if postgres:
        op.execute("DROP FUNCTION corral_state_usage()")
    op.drop_table("state_usage")
