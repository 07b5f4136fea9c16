"""``Database`` on PostgreSQL: a kept connection per thread, pipelined transactions.

Each thread keeps one connection in autocommit mode, and a transaction is sent as
a pipeline, so a statement's error may reach the caller later than its
``execute``. These tests check what a caller relies on all the same: a failed
transaction leaves nothing behind and the next call works, a dead connection is
replaced (the call that found it dead raising ``DatabaseUnavailable``), a row
count inside a transaction is right, and a claim walks the queued-task index
instead of reading and sorting the whole queue.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from corral.db.postgres.tasks import CLAIM_WITH_INSTANCES
from corral.db.raw import Database
from corral.errors import DatabaseUnavailable
from corral.tasks.queue import NO_ARGS, TaskQueue

_INSERT = "INSERT INTO state (scope, key, value) VALUES ('s', :key, '\\xc0'::bytea)"


@pytest.fixture
def database(fresh_postgres_url: str) -> Iterator[Database]:
    made = Database(fresh_postgres_url)
    yield made
    made.close()


def keys(database: Database) -> list[str]:
    return [key for (key,) in database.fetch_all("SELECT key FROM state ORDER BY key")]


def test_a_failed_transaction_leaves_nothing_and_the_next_call_works(database: Database) -> None:
    database.write(_INSERT, {"key": "a"})

    def insert_b_a_c() -> None:
        with database.transaction(write=True) as cur:
            database.execute(cur, _INSERT, {"key": "b"})
            database.execute(cur, _INSERT, {"key": "a"})  # already there
            database.execute(cur, _INSERT, {"key": "c"})

    with pytest.raises(psycopg.errors.UniqueViolation):
        insert_b_a_c()
    assert keys(database) == ["a"]
    with database.transaction(write=True) as cur:
        database.execute(cur, _INSERT, {"key": "d"})
    assert keys(database) == ["a", "d"]


def test_an_exception_in_the_block_rolls_back(database: Database) -> None:
    def insert_then_fail() -> None:
        with database.transaction(write=True) as cur:
            database.execute(cur, _INSERT, {"key": "a"})
            raise LookupError("the caller changed its mind")

    with pytest.raises(LookupError):
        insert_then_fail()
    assert keys(database) == []


def test_a_row_count_inside_a_transaction_waits_for_the_server(database: Database) -> None:
    for key in ("a", "b", "c"):
        database.write(_INSERT, {"key": key})
    with database.transaction(write=True):
        assert database.write("DELETE FROM state WHERE key <> 'b'") == 2
    assert keys(database) == ["b"]


def test_a_connection_the_server_closed_is_replaced(database: Database) -> None:
    (pid,) = database.fetch_one("SELECT pg_backend_pid()")
    with psycopg.connect(database.url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(DatabaseUnavailable, match="PostgreSQL is shutting down") as raised:
        database.fetch_one("SELECT 1")
    assert isinstance(raised.value.__cause__, psycopg.errors.AdminShutdown)
    (new_pid,) = database.fetch_one("SELECT pg_backend_pid()")
    assert new_pid != pid
    database.write(_INSERT, {"key": "after"})
    assert keys(database) == ["after"]


@pytest.mark.parametrize("caller", ["plain", "worker"])
async def test_a_claim_walks_the_queue_in_order_and_stops_at_its_limit(
    database: Database, caller: str
) -> None:
    """Plain callers (a thread) turn bitmap scans off for the claim; the worker's
    calls (``call_deferred``) run where they are off, the claim a statement alone."""
    # Statistics of an empty table (as autovacuum leaves a new deployment's), then a
    # burst of work: the planner expects no rows, the worst case for its choice.
    database.write("ANALYZE tasks")
    database.write("INSERT INTO agents (name, current_version, created_at) VALUES ('bench', 1, 0)")
    database.write(
        "INSERT INTO instances (id, agent, priority, status, config, created_at) "
        "VALUES ('i', 'bench', 'p', 'active', '{}', 0)"
    )
    queue = TaskQueue(database)
    now = 1_795_000_000_000  # ms, like the runtime's clock
    with database.transaction(write=True):
        for n in range(5_000):
            queue.enqueue("i", "noop", NO_ARGS, now=now - 5_000 + n)
    params = {"now": now, "limit": 4, "lease_until": now + 1_000, "worker": "test"}

    def claim_and_explain() -> tuple[list[Any], str]:
        with database.transaction(write=True) as cur:
            claimed = queue.claim(4, now=now, lease_ms=1_000)  # and its planner setting
            explained = database.execute(cur, "EXPLAIN (ANALYZE) " + CLAIM_WITH_INSTANCES, params)
            return claimed, "\n".join(row[0] for row in explained.fetchall())

    if caller == "plain":
        claimed, plan = claim_and_explain()
    else:
        claimed, plan = await database.call_deferred(claim_and_explain)
    assert [task.id for task, _ in claimed] == sorted(task.id for task, _ in claimed)
    assert "Sort" not in plan, plan
    assert "Bitmap" not in plan, plan
    assert "Index Scan using ix_tasks_queued" in plan, plan
