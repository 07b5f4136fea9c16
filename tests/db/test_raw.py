"""``Database`` on SQLite: one-statement calls without BEGIN, checkpoints in a thread.

One-statement calls run in autocommit mode, so these tests check what BEGIN and
COMMIT used to guarantee: a write waits its turn behind another connection's
transaction, and a read leaves no snapshot open behind it. The write-ahead log
is copied into the database file by a thread of the ``Database``, not by
whichever write happens to fill it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.db.raw import CHECKPOINT_INTERVAL_S, Database

_INSERT = "INSERT INTO state (scope, key, value) VALUES ('s', :key, x'c0')"


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    made = Database(f"sqlite:///{tmp_path / 'corral.db'}")
    yield made
    made.close()


def other_connection(database: Database, timeout: float) -> sqlite3.Connection:
    path = database.engine.url.database
    assert path is not None
    return sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)


def test_a_write_waits_for_another_connections_transaction(database: Database) -> None:
    other = other_connection(database, timeout=5)
    other.execute("BEGIN IMMEDIATE")
    other.execute(_INSERT, {"key": "theirs"})
    threading.Timer(0.3, other.execute, ["COMMIT"]).start()
    started = time.monotonic()
    assert database.write(_INSERT, {"key": "ours"}) == 1  # no "database is locked"
    assert time.monotonic() - started >= 0.25
    keys = database.fetch_all("SELECT key FROM state ORDER BY key")
    assert [key for (key,) in keys] == ["ours", "theirs"]
    other.close()


def test_reading_one_row_of_many_leaves_no_snapshot_open(database: Database) -> None:
    for key in ("a", "b", "c"):
        database.write(_INSERT, {"key": key})
    assert tuple(database.fetch_one("SELECT key FROM state ORDER BY key")) == ("a",)
    # A read still open would pin the old snapshot: the checkpoint could not empty the log.
    other = other_connection(database, timeout=0.1)
    other.execute(_INSERT, {"key": "d"})
    busy, _, _ = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0
    other.close()


def rows_in_the_database_file(database: Database) -> int:
    """Rows a reader sees that looks only at the file, not at the write-ahead log."""
    uri = f"file:{database.engine.url.database}?immutable=1"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as reader:
        try:
            return int(reader.execute("SELECT count(*) FROM state").fetchone()[0])
        # "no such table" (not even the schema is there yet), or "malformed": an
        # immutable reader caught the checkpoint thread halfway through the file.
        except sqlite3.DatabaseError:
            return 0


def test_writes_reach_the_database_file_without_a_writer_checkpointing(
    database: Database,
) -> None:
    # Five log pages: far from the 1,000 at which a commit would checkpoint itself.
    for key in ("a", "b", "c", "d", "e"):
        database.write(_INSERT, {"key": key})
    deadline = time.monotonic() + 5
    while rows_in_the_database_file(database) < 5:
        assert time.monotonic() < deadline, "the log was never checkpointed"
        time.sleep(CHECKPOINT_INTERVAL_S / 2)


def test_closing_stops_the_checkpoint_thread(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'corral.db'}")
    name = f"checkpoint {tmp_path / 'corral.db'}"
    assert name in [thread.name for thread in threading.enumerate()]
    database.close()
    assert name not in [thread.name for thread in threading.enumerate()]
