"""Each scope's store usage (bytes of keys and values, and keys), kept by triggers.

The store's quotas (docs/store.md § Quotas) compare a write against its scope's
usage; summing the scope's rows for each write would cost as much as the store
holds. Triggers on ``state`` keep one row per scope instead, in the same statement
as the write, whoever writes: a store operation, the TTL sweeper, an uninstall, or
anything else. A trigger sees the rows a statement replaced or removed as they
were at that moment, so two writers of one key at once still leave the sum exact.

SQLite's triggers run per row (it has no others); an overwrite of the same size
fires none. PostgreSQL's run once per statement, over the statement's rows
(transition tables): per row, a statement that changes many rows of one scope
(``clear_all``, a sweep, a batch) updated the scope's usage row once per row, and
each update of a row a transaction already updated walks every version it made:
clearing 100,000 keys took a minute, against 37 ms without triggers.

On PostgreSQL the trigger also refuses a statement that grows its scope past the
quota, when the statement says there is one (the transaction-local setting
``corral.store_quota``, ``"<bytes> <keys>"``): the check reads the usage its own
update just made, under that row's lock, so concurrent writers of one scope can
never both pass it. SQLite runs one writer at a time, and its writes check the
quota in the statement itself (``SqlBackend.put``).

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
    quota text := current_setting('corral.store_quota', true);
    over record;
BEGIN
    IF TG_OP = 'DELETE' THEN
        UPDATE state_usage AS u SET bytes = u.bytes - gone.bytes, keys = u.keys - gone.keys
        FROM (
            SELECT scope, sum(octet_length(key) + octet_length(value)) AS bytes, count(*) AS keys
            FROM old_rows GROUP BY scope
        ) AS gone
        WHERE u.scope = gone.scope;
        RETURN NULL;
    ELSIF TG_OP = 'INSERT' THEN
        WITH used AS (
            INSERT INTO state_usage AS u (scope, bytes, keys)
            SELECT scope, sum(octet_length(key) + octet_length(value)), count(*)
            FROM new_rows GROUP BY scope ORDER BY scope
            ON CONFLICT (scope) DO UPDATE
            SET bytes = u.bytes + excluded.bytes, keys = u.keys + excluded.keys
            RETURNING u.scope, u.bytes, u.keys
        )
        SELECT * INTO over FROM used WHERE quota <> '' AND (
            used.bytes > split_part(quota, ' ', 1)::bigint
            OR used.keys > split_part(quota, ' ', 2)::bigint
        );
    ELSE  -- an update keeps its row's key: only its value's size changes
        WITH used AS (
            UPDATE state_usage AS u SET bytes = u.bytes + grown.bytes
            FROM (
                SELECT scope, sum(bytes) AS bytes FROM (
                    SELECT scope, octet_length(value) AS bytes FROM new_rows
                    UNION ALL SELECT scope, -octet_length(value) FROM old_rows
                ) AS changed
                GROUP BY scope HAVING sum(bytes) <> 0
            ) AS grown
            WHERE u.scope = grown.scope RETURNING u.scope, u.bytes, u.keys, grown.bytes AS grown
        )
        SELECT * INTO over FROM used
        WHERE quota <> '' AND used.grown > 0 AND used.bytes > split_part(quota, ' ', 1)::bigint;
    END IF;
    IF over.scope IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '{QUOTA_SQLSTATE}',
            MESSAGE = 'the write would take scope ' || over.scope || ' over its store quota',
            DETAIL = over.bytes || ' ' || over.keys;
    END IF;
    RETURN NULL;
END $$
"""
_POSTGRES = [
    "LOCK TABLE state IN SHARE ROW EXCLUSIVE MODE",  # no write slips past the backfill
    _POSTGRES_FUNCTION,
    "CREATE TRIGGER state_usage_insert AFTER INSERT ON state REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION corral_state_usage()",
    "CREATE TRIGGER state_usage_update AFTER UPDATE ON state "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION corral_state_usage()",
    "CREATE TRIGGER state_usage_delete AFTER DELETE ON state REFERENCING OLD TABLE AS old_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION corral_state_usage()",
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
