"""``Database.call`` on PostgreSQL: database functions awaited on the event loop.

Each call runs in a greenlet with a connection of its own, so calls overlap on
one loop without joining each other's transactions; a cancelled caller does not
cut a statement in half; at most ``MAX_SESSIONS`` connections are opened however
many calls wait; a connection the server dropped is replaced (and the idle
ones with it), the failed call raising ``DatabaseUnavailable``; and a call's
single statements, sent to libpq directly, give what a cursor's would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from corral.db import bridge, sessions
from corral.db.raw import Database
from corral.db.sessions import MAX_SESSIONS
from corral.errors import DatabaseUnavailable

_INSERT = "INSERT INTO state (scope, key, value) VALUES ('s', :key, '\\xc0'::bytea)"


@pytest.fixture
def database(fresh_postgres_url: str) -> Iterator[Database]:
    made = Database(fresh_postgres_url)
    yield made
    made.close()


def keys(database: Database) -> list[str]:
    return [key for (key,) in database.fetch_all("SELECT key FROM state ORDER BY key")]


async def test_overlapping_calls_keep_their_transactions_apart(database: Database) -> None:
    both_inside = asyncio.Barrier(2)

    def insert(key: str, fail: bool) -> None:
        with database.transaction(write=True) as cur:
            database.execute(cur, _INSERT, {"key": key})
            # Both transactions are open at once, on one thread, before either ends.
            bridge.wait(both_inside.wait())
            if fail:
                raise ValueError("roll this one back")

    results = await asyncio.gather(
        database.call(insert, "kept", False),
        database.call(insert, "rolled-back", True),
        return_exceptions=True,
    )
    assert results[0] is None
    assert isinstance(results[1], ValueError)
    assert keys(database) == ["kept"]


async def test_a_cancelled_caller_leaves_the_call_to_finish(database: Database) -> None:
    started, finished = asyncio.Event(), asyncio.Event()

    def slow_insert() -> None:
        with database.transaction(write=True) as cur:
            database.execute(cur, _INSERT, {"key": "slow"})
            started.set()
            database.execute(cur, "SELECT pg_sleep(0.2)")
            cur.fetchall()
        finished.set()

    call = asyncio.ensure_future(database.call(slow_insert))
    await started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await finished.wait()  # the transaction went on to its commit, whole
    assert keys(database) == ["slow"]
    # Its connection was given back with nothing half-sent on it: every call at
    # once (one of them on that connection) gets its answer.
    answers = await asyncio.gather(*(database.call(keys, database) for _ in range(MAX_SESSIONS)))
    assert answers == [["slow"]] * MAX_SESSIONS


async def test_many_calls_at_once_share_a_few_connections(database: Database) -> None:
    def backend_pid() -> int:
        (pid,) = database.fetch_one("SELECT pg_backend_pid() FROM pg_sleep(0.01)")
        return int(pid)

    pids = await asyncio.gather(*(database.call(backend_pid) for _ in range(5 * MAX_SESSIONS)))
    assert 1 < len(set(pids)) <= MAX_SESSIONS


async def test_a_connection_the_server_closed_is_replaced(database: Database) -> None:
    def backend_pid() -> int:
        return int(database.fetch_one("SELECT pg_backend_pid()")[0])

    pid = await database.call(backend_pid)
    database.fetch_one("SELECT pg_terminate_backend(:pid)", {"pid": pid})
    with pytest.raises(DatabaseUnavailable, match="PostgreSQL is shutting down") as raised:
        await database.call(backend_pid)
    assert isinstance(raised.value.__cause__, psycopg.errors.AdminShutdown)
    assert await database.call(backend_pid) != pid


async def test_after_a_restart_one_call_fails_not_one_per_kept_connection(
    database: Database,
) -> None:
    """A connection found broken takes the idle ones with it: a restart or a network
    cut ended them too, and each would fail the next call given it."""

    def backend_pid() -> int:
        (pid,) = database.fetch_one("SELECT pg_backend_pid() FROM pg_sleep(0.05)")
        return int(pid)

    pids = set(await asyncio.gather(*(database.call(backend_pid) for _ in range(3))))
    assert len(pids) == 3  # three connections, all idle now
    for pid in pids:
        database.fetch_one("SELECT pg_terminate_backend(:pid)", {"pid": pid})
    with pytest.raises(DatabaseUnavailable):
        await database.call(backend_pid)
    for _ in range(3):  # one at a time: each would get an idle connection if one were left
        assert await database.call(backend_pid) not in pids


async def test_another_databases_work_inside_a_call_uses_its_own_connection(
    database: Database, fresh_postgres_url: str
) -> None:
    other = Database(fresh_postgres_url)
    try:

        def read_then_write_elsewhere() -> None:
            with database.transaction(write=False):
                database.fetch_one("SELECT 1")
                other.write(_INSERT, {"key": "elsewhere"})  # not joined to the read

        await database.call(read_then_write_elsewhere)
        assert keys(other) == ["elsewhere"]
    finally:
        other.close()


async def test_waiting_outside_a_call_is_an_error() -> None:
    never = asyncio.get_running_loop().create_future()
    with pytest.raises(RuntimeError, match="outside"):
        bridge.wait(never)


async def test_deferred_calls_commit_without_waiting_for_the_disk(database: Database) -> None:
    def setting() -> str:
        return str(database.fetch_one("SHOW synchronous_commit")[0])

    assert await database.call_deferred(setting) == "off"
    assert await database.call(setting) == "on"  # what someone outside is told of
    assert setting() == "on"  # plain callers: the CLI, open_store


async def test_a_call_that_raises_before_its_first_wait_reports_it(database: Database) -> None:
    def broken() -> None:
        raise LookupError("nothing here")

    for _ in range(MAX_SESSIONS + 1):
        with pytest.raises(LookupError, match="nothing here"):
            await database.call(broken)
    # Each gave its session back: were one kept, the pool would run out and wait.
    assert await asyncio.wait_for(database.call(keys, database), 5) == []


# A call's single statements go to libpq directly (``LoopConnection.run``), not
# through a psycopg cursor: they must read and write what a plain caller's do.

_ROW = "SELECT :big::bigint, :text::text, :data::bytea, :none::text, :flag::boolean, :big + 1"
_VALUES = {"big": 2**40, "text": "é ünïcode", "data": b"\x00\xc0\xff", "none": None, "flag": True}


async def test_a_calls_statements_read_and_write_as_a_plain_callers_do(database: Database) -> None:
    inside = await database.call(database.fetch_one, _ROW, _VALUES)
    assert inside == database.fetch_one(_ROW, _VALUES)
    assert inside == (2**40, "é ünïcode", b"\x00\xc0\xff", None, True, 2**40 + 1)

    for key in ("a", "b", "c"):
        await database.call(database.write, _INSERT, {"key": key})
    assert keys(database) == ["a", "b", "c"]
    removed = await database.call(
        database.write, "DELETE FROM state WHERE key <> :key", {"key": "b"}
    )
    assert removed == 2
    assert await database.call(database.fetch_all, "SELECT key, value FROM state") == [
        ("b", b"\xc0")
    ]
    assert await database.call(database.fetch_one, "SELECT key FROM state WHERE key = 'x'") is None


async def test_a_failing_statement_raises_psycopgs_error_and_leaves_its_session_usable(
    database: Database,
) -> None:
    await database.call(database.write, _INSERT, {"key": "k"})
    for _ in range(MAX_SESSIONS + 1):  # every session meets both errors
        with pytest.raises(psycopg.errors.UniqueViolation, match="duplicate key value"):
            await database.call(database.write, _INSERT, {"key": "k"})
        with pytest.raises(psycopg.errors.SyntaxError, match='syntax error at or near "SELEC"'):
            await database.call(database.fetch_one, "SELEC :x", {"x": 1})
    assert (
        await asyncio.gather(*(database.call(keys, database) for _ in range(MAX_SESSIONS)))
        == [["k"]] * MAX_SESSIONS
    )


async def test_statements_past_the_prepared_limit_still_run(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sessions, "MAX_PREPARED", 2)

    def on_one_connection() -> tuple[list[int], int]:
        answers = [database.fetch_one(f"SELECT :n::int + {k}", {"n": 1})[0] for k in range(4)]
        again = [database.fetch_one(f"SELECT :n::int + {k}", {"n": 10})[0] for k in range(4)]
        (prepared,) = database.fetch_one("SELECT count(*) FROM pg_prepared_statements")
        return answers + again, prepared

    answers, prepared = await database.call(on_one_connection)
    assert answers == [1, 2, 3, 4, 10, 11, 12, 13]
    assert prepared == 2  # the first two; the others were parsed each time


async def test_a_statement_prepared_before_a_migration_changed_its_rows_still_runs(
    database: Database,
) -> None:
    def read_around_a_new_column() -> tuple[list[Any], list[Any]]:
        database.write("CREATE TABLE t (id int, a int)")
        database.write("INSERT INTO t VALUES (1, 2)")
        before = database.fetch_all("SELECT * FROM t")  # prepared on this connection
        database.write("ALTER TABLE t ADD COLUMN b text DEFAULT 'new'")
        return before, database.fetch_all("SELECT * FROM t")

    assert await database.call(read_around_a_new_column) == ([(1, 2)], [(1, 2, "new")])


async def test_statements_prepared_before_a_rolled_back_batch_still_run(
    database: Database,
) -> None:
    """psycopg answers the ROLLBACK of a transaction in which it prepared a statement
    of its own (an ``executemany``) with ``DEALLOCATE ALL``, which takes the call's
    prepared statements with it; the next one is prepared afresh, not an error."""

    def rolled_back_batch() -> None:
        with database.transaction(write=True) as cur:
            rows = [(f"b{n}",) for n in range(9)]
            cur.executemany(database.sql(_INSERT).replace("%(key)s", "%s"), rows)
            raise ValueError("roll the batch back")

    def batch_then_single() -> list[str]:
        database.write(_INSERT, {"key": "before"})  # prepared on this connection
        with pytest.raises(ValueError, match="roll the batch back"):
            rolled_back_batch()
        database.write(_INSERT, {"key": "after"})
        return keys(database)

    assert await database.call(batch_then_single) == ["after", "before"]
