"""Schema creation and upgrades: on a fresh database, twice, from several processes at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from corral.db import create_engine, ensure_schema, upgrade
from corral.db.history import ExecutionQuery, HistoryDatabase
from corral.db.migrate import _config, current_revision, head_revision
from corral.db.raw import close_databases, open_database
from corral.errors import DatabaseURLError, SchemaOutOfDate
from corral.runtime.history import History
from corral.state import SqlBackend, open_backend, open_store
from tests.server.api import execution_row
from tests.support import SPAWN, run_in_processes
from tests.support import TABLES as DATA_TABLES

TABLES = {*DATA_TABLES, "alembic_version"}


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database nobody has touched: no file yet / an empty PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/not-yet/corral.db"
    return str(request.getfixturevalue("fresh_postgres_url"))


@pytest.fixture
def engine(fresh_url: str) -> Iterator[sa.Engine]:
    made = create_engine(fresh_url)
    yield made
    made.dispose()


def tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def test_upgrade_creates_the_schema_on_a_fresh_database(engine: sa.Engine) -> None:
    assert tables(engine) == set()
    assert current_revision(engine) is None
    assert upgrade(engine) == (None, head_revision())
    assert tables(engine) == TABLES
    assert current_revision(engine) == head_revision()
    indexes = {index["name"] for index in sa.inspect(engine).get_indexes("state")}
    assert "ix_state_expires_at" in indexes


def test_migrating_a_current_database_again_changes_nothing(engine: sa.Engine) -> None:
    ensure_schema(engine)
    statements: list[str] = []
    sa.event.listen(
        engine, "before_cursor_execute", lambda *args: statements.append(args[2].upper())
    )
    ensure_schema(engine)
    ensure_schema(engine)
    assert upgrade(engine) == (head_revision(), head_revision())
    assert statements, "the listener saw the revision checks"
    writes = [s for s in statements if s.split()[0] in {"CREATE", "ALTER", "DROP", "INSERT"}]
    assert writes == []
    assert tables(engine) == TABLES


def test_the_upgrade_to_store_usage_counts_the_rows_already_stored(
    fresh_url: str, engine: sa.Engine
) -> None:
    """Migration 0006 backfills each scope's usage from its rows; its triggers then
    keep it as writes come."""
    config = _config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0005")
        conn.execute(
            sa.text(
                "INSERT INTO state (scope, key, value) VALUES ('a', 'é', :five), "
                "('a', 'k', :empty), ('b', 'k', :five)"
            ),
            {"five": b"12345", "empty": b""},
        )
    assert upgrade(engine) == ("0005", head_revision())
    backend = SqlBackend.open(fresh_url)
    assert backend.usage("a") == (2 + 5 + 1, 2)  # "é" is two bytes of UTF-8
    assert backend.usage("b") == (1 + 5, 1)
    backend.put("b", "new", b"xy", None)
    assert backend.usage("b") == (1 + 5 + 3 + 2, 2)
    backend.close()


def test_the_upgrade_to_agent_filtered_executions_fills_in_the_agents_recorded_before(
    fresh_url: str, engine: sa.Engine
) -> None:
    """Migration 0012 gives every execution its instance's agent, which the agent filter
    reads; executions recorded after it get theirs as they are written."""
    config = _config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0011")
        for instance, agent in [("shop-1", "shop"), ("mail-1", "mail")]:
            conn.execute(
                sa.text(
                    "INSERT INTO instances (id, agent, priority, status, config, created_at) "
                    "VALUES (:id, :agent, 'default', 'active', '{}', 0)"
                ),
                {"id": instance, "agent": agent},
            )
        for n, instance in enumerate(["shop-1", "mail-1", "shop-1"]):
            conn.execute(
                sa.text(
                    "INSERT INTO executions (id, instance, method, trigger, outcome, "
                    "requests_used, cpu_ms, peak_rss_bytes, duration_ms, started_at) "
                    "VALUES (:id, :instance, 'run', 'task', 'ok', 0, 0, 0, 1, :at)"
                ),
                {"id": f"old-{n}", "instance": instance, "at": n},
            )
    assert upgrade(engine) == ("0011", head_revision())
    database = open_database(fresh_url)
    try:
        HistoryDatabase(database).insert([execution_row("new-0", "shop-1", 10)], [])
        history = History(database)
        shop = history.executions_page(ExecutionQuery(agent="shop"), limit=10)
        assert [e.id for e in shop.rows] == ["new-0", "old-2", "old-0"]
        mail = history.executions_page(ExecutionQuery(agent="mail"), limit=10)
        assert [e.id for e in mail.rows] == ["old-1"]
    finally:
        close_databases()


def migrate_in_child(url: str, barrier: Any) -> str | None:
    engine = create_engine(url)
    barrier.wait(timeout=60)
    ensure_schema(engine)
    revision = current_revision(engine)
    engine.dispose()
    return revision


def test_processes_starting_together_on_a_fresh_database_all_succeed(fresh_url: str) -> None:
    barrier = SPAWN.Barrier(3)
    revisions = run_in_processes([(migrate_in_child, (fresh_url, barrier))] * 3)
    assert revisions == [head_revision()] * 3
    engine = create_engine(fresh_url)
    try:
        assert tables(engine) == TABLES
        with engine.connect() as conn:
            stamps = conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one()
        assert stamps == 1
    finally:
        engine.dispose()


def test_a_database_from_a_newer_corral_is_refused(fresh_url: str, engine: sa.Engine) -> None:
    ensure_schema(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff_from_the_future'"))
    message = (
        "the database is at schema revision 'ffff_from_the_future', which this Corral does "
        "not know: it was migrated by a newer version; upgrade Corral to use it"
    )
    with pytest.raises(SchemaOutOfDate) as raised:
        ensure_schema(engine)
    assert str(raised.value) == message
    with pytest.raises(SchemaOutOfDate, match="upgrade Corral to use it"):
        SqlBackend.open(fresh_url)
    with pytest.raises(SchemaOutOfDate, match="upgrade Corral to use it"):
        upgrade(engine)
    assert current_revision(engine) == "ffff_from_the_future"  # left as it was


PARSE = "use sqlite:///path/to/file.db or postgresql://user@host:5432/dbname"
IN_MEMORY = (
    "an in-memory SQLite database is private to one connection; use a file "
    "(sqlite:///path.db) or open_store(None, ...) for a throwaway in-memory store"
)
BAD_URLS = [
    ("mysql://user@host/db", "unsupported database 'mysql' in 'mysql://user@host/db': Corral "
     "runs on SQLite (sqlite:///path) or PostgreSQL (postgresql://...)"),
    ("mssql+pyodbc://host/db", "unsupported database 'mssql'"),
    ("sqlite:///:memory:", IN_MEMORY),
    ("sqlite://", IN_MEMORY),
    ("not a url", f"cannot parse database URL 'not a url': {PARSE}"),
    ("", f"cannot parse database URL '': {PARSE}"),
    ("postgresql//missing-colon", "cannot parse database URL 'postgresql//missing-colon'"),
]  # fmt: skip


@pytest.mark.parametrize(("url", "message"), BAD_URLS, ids=[url for url, _ in BAD_URLS])
def test_a_bad_database_url_is_refused_with_what_to_use_instead(url: str, message: str) -> None:
    for attempt in (create_engine, SqlBackend.open, open_backend, lambda u: open_store(u, "scope")):
        with pytest.raises(DatabaseURLError) as raised:
            attempt(url)
        assert str(raised.value).startswith(message)
        assert isinstance(raised.value, ValueError)


def test_a_store_url_must_be_a_string() -> None:
    with pytest.raises(DatabaseURLError, match="a store URL must be a str or None, got int"):
        open_backend(5432)  # type: ignore[arg-type]


def test_postgres_scheme_spellings_all_mean_postgresql() -> None:
    for url in ("postgres://u@h/db", "postgresql://u@h/db", "postgresql+asyncpg://u@h/db"):
        engine = create_engine(url)  # no connection is made until first use
        assert engine.dialect.name == "postgresql"
        assert engine.dialect.driver == "psycopg"
        engine.dispose()
