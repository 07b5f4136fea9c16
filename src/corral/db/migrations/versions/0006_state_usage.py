"""Each scope's store usage (bytes of keys and values, and keys), kept by triggers.

The store's quotas (docs/store.md § Quotas) compare a write against its scope's
usage; summing the scope's rows for each write would cost as much as the store
holds. Triggers on ``state`` keep one row per scope instead, in the same statement
as the write, whoever writes: a store operation, the TTL sweeper, an uninstall, or
anything else. A trigger sees the rows a statement replaced or removed as they
were at that moment, so two writers of one key at once still leave the sum exact.

SQLite's triggers run per row (it has no others); an overwrite of the same size
fires none. On PostgreSQL, a trigger per row updates the scope's usage row once
per row, and each update of a row its transaction already updated walks every
version the transaction made of it: a statement over 100,000 rows of one scope
took a minute. So there, deletes are counted once per statement over its rows (a
transition table), and so are inserts and updates of a statement that declares
itself a batch (the transaction-local setting ``corral.batch = 'on'``, as
``SqlBackend.put_many`` does; a bulk write from outside should too); other inserts
and updates, single writes, are counted per row, which costs a single write less
(measured: 20-25 µs of server CPU a write per row, 45-60 once per statement).

On PostgreSQL the row trigger also refuses a write that grows its scope past the
quota, when the statement says there is one (the transaction-local setting
``corral.store_quota``, ``"<bytes> <keys>"``): the check reads the usage its own
update just made, under that row's lock, so concurrent writers of one scope can
never both pass it. SQLite runs one writer at a time, and its writes check the
quota in the statement itself (``SqlBackend.put``). A batch's quota is checked by
its caller, from the usage before and after it, in its transaction.

Rows never move between scopes, and an update keeps its row's key.

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

_POSTGRES_ROW = f"""
CREATE FUNCTION corral_state_usage_row() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    grown_bytes bigint := octet_length(NEW.value) - octet_length(OLD.value);
    grown_keys bigint := 0;
    bytes_after bigint;
    keys_after bigint;
    quota text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        grown_bytes := octet_length(NEW.key) + octet_length(NEW.value);
        grown_keys := 1;
    END IF;
    INSERT INTO state_usage AS u (scope, bytes, keys) VALUES (NEW.scope, grown_bytes, grown_keys)
        ON CONFLICT (scope) DO UPDATE
        SET bytes = u.bytes + excluded.bytes, keys = u.keys + excluded.keys
        RETURNING u.bytes, u.keys INTO bytes_after, keys_after;
    quota := current_setting('corral.store_quota', true);
    IF quota <> '' AND (
        (grown_bytes > 0 AND bytes_after > split_part(quota, ' ', 1)::bigint)
        OR (grown_keys > 0 AND keys_after > split_part(quota, ' ', 2)::bigint)
    ) THEN
        RAISE EXCEPTION USING ERRCODE = '{QUOTA_SQLSTATE}',
            MESSAGE = 'the write would take scope ' || NEW.scope || ' over its store quota',
            DETAIL = bytes_after || ' ' || keys_after;
    END IF;
    RETURN NULL;
END $$
"""
_POSTGRES_STATEMENT = """
CREATE FUNCTION corral_state_usage_statement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        UPDATE state_usage AS u SET bytes = u.bytes - gone.bytes, keys = u.keys - gone.keys
        FROM (
            SELECT scope, sum(octet_length(key) + octet_length(value)) AS bytes, count(*) AS keys
            FROM old_rows GROUP BY scope
        ) AS gone
        WHERE u.scope = gone.scope;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO state_usage AS u (scope, bytes, keys)
        SELECT scope, sum(octet_length(key) + octet_length(value)), count(*)
        FROM new_rows GROUP BY scope ORDER BY scope
        ON CONFLICT (scope) DO UPDATE
        SET bytes = u.bytes + excluded.bytes, keys = u.keys + excluded.keys;
    ELSE
        UPDATE state_usage AS u SET bytes = u.bytes + grown.bytes
        FROM (
            SELECT scope, sum(bytes) AS bytes FROM (
                SELECT scope, octet_length(value) AS bytes FROM new_rows
                UNION ALL SELECT scope, -octet_length(value) FROM old_rows
            ) AS changed
            GROUP BY scope HAVING sum(bytes) <> 0
        ) AS grown
        WHERE u.scope = grown.scope;
    END IF;
    RETURN NULL;
END $$
"""
_SINGLE = "current_setting('corral.batch', true) IS DISTINCT FROM 'on'"
_BATCH = "current_setting('corral.batch', true) = 'on'"
_POSTGRES = [
    "LOCK TABLE state IN SHARE ROW EXCLUSIVE MODE",  # no write slips past the backfill
    _POSTGRES_ROW,
    _POSTGRES_STATEMENT,
    f"CREATE TRIGGER state_usage_insert AFTER INSERT ON state FOR EACH ROW WHEN ({_SINGLE}) "
    "EXECUTE FUNCTION corral_state_usage_row()",
    "CREATE TRIGGER state_usage_update AFTER UPDATE ON state FOR EACH ROW "
    f"WHEN (octet_length(NEW.value) <> octet_length(OLD.value) AND {_SINGLE}) "
    "EXECUTE FUNCTION corral_state_usage_row()",
    "CREATE TRIGGER state_usage_batch_insert AFTER INSERT ON state "
    f"REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT WHEN ({_BATCH}) "
    "EXECUTE FUNCTION corral_state_usage_statement()",
    "CREATE TRIGGER state_usage_batch_update AFTER UPDATE ON state "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT "
    f"WHEN ({_BATCH}) EXECUTE FUNCTION corral_state_usage_statement()",
    "CREATE TRIGGER state_usage_delete AFTER DELETE ON state REFERENCING OLD TABLE AS old_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION corral_state_usage_statement()",
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
    triggers = ["insert", "update", "delete"] + (
        ["batch_insert", "batch_update"] if postgres else []
    )
    for trigger in triggers:
        op.execute(f"DROP TRIGGER state_usage_{trigger}" + (" ON state" if postgres else ""))
    if postgres:
        op.execute("DROP FUNCTION corral_state_usage_row()")
        op.execute("DROP FUNCTION corral_state_usage_statement()")
    op.drop_table("state_usage")
