"""``Database.execute_many``: a batch of rows, then a read in the same transaction.

On PostgreSQL a transaction is pipelined: statements go out without waiting for
their answers. The server sends the answers to a long batch in bursts, whenever its
output buffer fills, and psycopg hands each answer to the cursor that sent its
statement as it arrives. A burst arriving as the transaction's cursor sent its next
statement became that statement's result, so the read after a batch now and then
got an INSERT's status instead of its rows: ``create_activities`` of 1,000
activities failed about one time in four on PostgreSQL, in the read of who hears of
them, with "the last operation didn't produce records (command status: INSERT 0 1)".
"""

from __future__ import annotations

import select
from collections.abc import Iterator

import psycopg
import pytest

from corral.db.raw import Database, close_databases, open_database

#: Each row takes the server a moment: the batch is still being answered, in bursts,
#: after the client has sent all of it.
SLOW_INSERT = (
    "INSERT INTO state (scope, key, value) SELECT :scope, :key, :value FROM pg_sleep(:pause)"
)
#: Enough rows that their answers fill the server's 8 KB output buffer (about 20
#: bytes each), so that it sends some before it is asked to.
ROWS = 600


@pytest.fixture
def database(postgres_url: str) -> Iterator[Database]:
    made = open_database(postgres_url)
    with made.transaction(write=True) as cur:
        made.execute(cur, "DELETE FROM state WHERE scope = 'batch'")
    yield made
    close_databases()


def test_a_read_after_a_long_batch_gets_its_own_rows(database: Database) -> None:
    rows = [
        {"scope": "batch", "key": f"k{n}", "value": b"\x00", "pause": 0.0001} for n in range(ROWS)
    ]
    with database.transaction(write=True) as cur:
        database.execute_many(cur, SLOW_INSERT, rows)
        connection = cur.connection
        if connection.info.transaction_status is psycopg.pq.TransactionStatus.ACTIVE:
            # Answers are still on their way: wait for the first burst of them to be
            # on the socket, unread, as the read below is sent.
            assert select.select([connection.fileno()], [], [], 30)[0]
        counted = database.fetch_all("SELECT count(*) FROM state WHERE scope = 'batch'")
        assert [tuple(row) for row in counted] == [(ROWS,)]
    assert database.fetch_one("SELECT count(*) FROM state WHERE scope = 'batch'")[0] == ROWS


def test_one_row_and_many_rows_are_written_alike(sql_url: str) -> None:
    database = open_database(sql_url)
    insert = "INSERT INTO state (scope, key, value) VALUES (:scope, :key, :value)"
    with database.transaction(write=True) as cur:
        database.execute_many(cur, insert, [{"scope": "batch", "key": "one", "value": b"\x01"}])
        database.execute_many(
            cur, insert, [{"scope": "batch", "key": f"k{n}", "value": b"\x02"} for n in range(3)]
        )
    keys = database.fetch_all("SELECT key FROM state WHERE scope = 'batch' ORDER BY key")
    assert [key for (key,) in keys] == ["k0", "k1", "k2", "one"]
    close_databases()
