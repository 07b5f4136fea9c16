"""``Database``'s one-statement calls on SQLite: a transaction each, without BEGIN.

They run in autocommit mode, so these tests check what BEGIN and COMMIT used to
guarantee: a write waits its turn behind another connection's transaction, and a
read leaves no snapshot open behind it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.db.raw import Database

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
