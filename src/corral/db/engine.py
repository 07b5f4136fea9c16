"""Turn a database URL into a configured SQLAlchemy engine.

Users write plain ``sqlite:///path`` or ``postgresql://...``; this module picks the
drivers (pysqlite, psycopg 3) and the settings that make SQLite safe for several
processes at once (WAL, a busy timeout, explicit ``BEGIN`` control).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from corral.errors import DatabaseURLError

DEFAULT_URL = "sqlite:///./.corral/corral.db"
URL_ENV = "CORRAL_DATABASE_URL"

# How long a SQLite writer waits for another process's write to finish.
SQLITE_BUSY_TIMEOUT_S = 30.0


def _normalise(url: str) -> URL:
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise DatabaseURLError(
            f"cannot parse database URL {url!r}: use sqlite:///path/to/file.db "
            "or postgresql://user@host:5432/dbname"
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+pysqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    raise DatabaseURLError(
        f"unsupported database {backend!r} in {url!r}: Corral runs on SQLite "
        "(sqlite:///path) or PostgreSQL (postgresql://...)"
    )


def refuse_missing_folder(url: str) -> None:
    """Raise ``DatabaseURLError`` if ``url`` names a SQLite file in a folder that does
    not exist.

    Opening such a URL makes the folder, which suits a program (a test, the default
    ``./.corral``); for a URL a person typed (``--db``, ``CORRAL_DATABASE_URL``) a
    missing folder is far likelier a mistyped path than a wish for a new, empty
    database somewhere unexpected.
    """
    parsed = _normalise(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return
    folder = Path(parsed.database).expanduser().parent
    if not folder.is_dir():
        raise DatabaseURLError(
            f"cannot open the SQLite database {url!r}: the folder {folder} does not exist "
            "(create it first, or check the path)"
        )


def _enable_wal(cursor: Any) -> None:
    """Switch the file to WAL mode (it stays so), waiting out other processes.

    The switch needs the database to itself and, unlike ordinary statements, does not
    wait on the busy timeout: on a fresh file that several processes open at once,
    all but one get "database is locked" at once. So wait here, within the same timeout.
    """
    if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
        return
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _sqlite_engine(url: URL) -> sa.Engine:
    database = url.database
    if not database or database == ":memory:":
        raise DatabaseURLError(
            "an in-memory SQLite database is private to one connection; use a file "
            "(sqlite:///path.db) or open_store(None, ...) for a throwaway in-memory store"
        )
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so that every
        # transaction starts with the BEGIN we choose below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        # A writer that starts DEFERRED and upgrades later can fail at once with
        # SQLITE_BUSY instead of waiting; writers therefore ask for IMMEDIATE.
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def create_engine(url: str) -> sa.Engine:
    """An engine for ``url`` with Corral's settings for its backend."""
    parsed = _normalise(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    return sa.create_engine(parsed, pool_size=10, max_overflow=20)


def write_options(engine: sa.Engine) -> dict[str, Any]:
    """Execution options for a connection that will write."""
    return {"sqlite_begin": "IMMEDIATE"} if engine.dialect.name == "sqlite" else {}
