"""Which database errors are an outage (``DatabaseUnavailable``) and which are not.

A worker waits out the first kind and stops on the second, so the line matters:
each case here is the real error, from a real server, socket or lock. An outage
is a lost or refused connection, a server shutting down, SQLite's write lock
held past the busy timeout; a missing table, a role or database that does not
exist are not, and keep the driver's own error.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

import corral.db.engine
from corral.db.errors import unavailable
from corral.db.raw import Database
from corral.errors import DatabaseUnavailable
from tests.support import TcpProxy, closed_port


def connection_error(url: str) -> psycopg.OperationalError:
    """What connecting to ``url`` raises."""
    with pytest.raises(psycopg.OperationalError) as raised:
        psycopg.connect(url, connect_timeout=5).close()
    return raised.value


def test_a_refused_connection_is_an_outage_that_names_no_host(postgres_server: str) -> None:
    with closed_port() as port:
        url = sa.make_url(postgres_server).set(port=port).render_as_string(False)
        error = connection_error(url)
    found = unavailable(error)
    assert isinstance(found, DatabaseUnavailable)
    assert str(found) == (
        "the database is unavailable: no connection to PostgreSQL (refused, reset or "
        "lost); the call may not have taken effect, retry later"
    )
    assert found.__cause__ is error  # the host's logs keep the details
    assert "127.0.0.1" in str(error)


@pytest.mark.parametrize("change", [{"username": "no_such_role"}, {"database": "no_such_db"}])
def test_a_refused_login_is_not_an_outage(postgres_server: str, change: dict[str, str]) -> None:
    error = connection_error(sa.make_url(postgres_server).set(**change).render_as_string(False))
    assert "does not exist" in str(error)
    assert unavailable(error) is None


@pytest.fixture
def postgres(postgres_url: str) -> Iterator[tuple[Database, TcpProxy]]:
    """A ``Database`` whose connections go through a proxy the test can cut."""
    parsed = sa.make_url(postgres_url)
    proxy = TcpProxy((parsed.host or "127.0.0.1", parsed.port or 5432))
    database = Database(proxy.url(postgres_url))
    yield database, proxy
    database.close()
    proxy.cut()


async def test_a_cut_connection_is_an_outage_and_the_next_call_after_it_works(
    postgres: tuple[Database, TcpProxy],
) -> None:
    database, proxy = postgres
    assert await database.call(database.fetch_one, "SELECT 1") == (1,)
    proxy.cut()
    for _ in range(2):  # the connection it had, lost; then a new one, refused
        with pytest.raises(DatabaseUnavailable, match="no connection to PostgreSQL"):
            await database.call(database.fetch_one, "SELECT 1")
        with pytest.raises(DatabaseUnavailable, match="no connection to PostgreSQL"):
            database.fetch_one("SELECT 1")  # a plain caller's connection, the same
    with pytest.raises(DatabaseUnavailable):
        await database.call(database.probe)
    proxy.restore()
    await database.call(database.probe)
    assert await database.call(database.fetch_one, "SELECT 1") == (1,)
    assert database.fetch_one("SELECT 1") == (1,)


async def test_a_missing_table_is_not_an_outage(postgres: tuple[Database, TcpProxy]) -> None:
    database, _ = postgres
    with pytest.raises(psycopg.errors.UndefinedTable):
        await database.call(database.fetch_one, "SELECT * FROM no_such_table")
    with pytest.raises(psycopg.errors.UndefinedTable):
        database.write("DELETE FROM no_such_table")


@pytest.fixture
def sqlite_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    """A SQLite ``Database`` whose writers wait 0.1 s for the lock, not 30."""
    monkeypatch.setattr(corral.db.engine, "SQLITE_BUSY_TIMEOUT_S", 0.1)
    database = Database(f"sqlite:///{tmp_path / 'corral.db'}")
    yield database
    database.close()


def test_a_sqlite_lock_held_past_the_busy_timeout_is_an_outage(
    sqlite_database: Database,
) -> None:
    path = sqlite_database.engine.url.database
    assert path is not None
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        message = "another process has held the SQLite database's write lock past the busy"
        with pytest.raises(DatabaseUnavailable, match=message):
            sqlite_database.write("DELETE FROM state")
        with (
            pytest.raises(DatabaseUnavailable, match=message),
            sqlite_database.transaction(write=True),
        ):
            pass
        with pytest.raises(DatabaseUnavailable, match=message):
            sqlite_database.probe()
        assert sqlite_database.fetch_one("SELECT count(*) FROM state") == (0,)  # reads go on
        # The probe tried without waiting, and left the busy timeout as it was.
        assert sqlite_database.fetch_one("PRAGMA busy_timeout") == (100,)
    finally:
        holder.rollback()
        holder.close()
    sqlite_database.probe()
    assert sqlite_database.write("DELETE FROM state") == 0


def test_a_missing_sqlite_table_is_not_an_outage(sqlite_database: Database) -> None:
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        sqlite_database.write("DELETE FROM no_such_table")
    with (
        pytest.raises(sqlite3.OperationalError, match="no such table"),
        sqlite_database.transaction(write=True) as cur,
    ):
        sqlite_database.execute(cur, "DELETE FROM no_such_table")
