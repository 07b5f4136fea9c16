"""Fixtures shared by every suite: store backends, PostgreSQL databases, a fake clock.

PostgreSQL: the server at ``CORRAL_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``) is used only to create throwaway
databases named ``corral_test_<random>``, dropped when the session ends, so
parallel runs never share rows. When the server is unreachable the PostgreSQL
legs are skipped, unless ``CORRAL_REQUIRE_POSTGRES=1`` (as in CI): then they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from corral.state import MemoryBackend, SqlBackend, Store, StoreBackend
from tests.support import FakeClock, unique_scope, wipe

POSTGRES_SERVER_URL = os.environ.get(
    "CORRAL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("CORRAL_REQUIRE_POSTGRES") == "1"

BACKENDS = ["memory", "sqlite", "postgres"]
SQL_BACKENDS = ["sqlite", "postgres"]


# -- the tool operations a test exercises ----------------------------------------------


@pytest.fixture(autouse=True)
def exercised_operations(request: pytest.FixtureRequest) -> Iterator[None]:
    """Hold a test marked ``@pytest.mark.exercises(Op.X, ...)`` to its word: it fails
    unless an agent it ran called each operation it names.

    tests/test_operations.py counts these marks to show that every operation the
    sandbox can call has a test; this makes a mark on a test that does not call the
    operation fail, so the count cannot be satisfied by a mark alone. Every call
    reaches the host's ``SandboxProcess._call``, counted there like a request.
    """
    declared = {op for mark in request.node.iter_markers("exercises") for op in mark.args}
    if not declared:
        yield
        return
    from corral.sandbox.process import SandboxProcess

    called: set[str] = set()
    handle = SandboxProcess._call

    def recording(self: SandboxProcess, message: list[Any], current: Any) -> None:
        called.add(message[2])
        handle(self, message, current)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SandboxProcess, "_call", recording)
        yield
    if missing := sorted(declared - called):
        pytest.fail(
            f"marked as exercising {', '.join(missing)}, but no agent of this test called "
            f"{'it' if len(missing) == 1 else 'them'}",
            pytrace=False,
        )


# -- PostgreSQL -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The server URL, after checking it answers; skips (or fails, in CI) if not."""
    try:
        with psycopg.connect(POSTGRES_SERVER_URL, connect_timeout=5, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        problem = f"PostgreSQL is not reachable at {POSTGRES_SERVER_URL}: {exc}".strip()
    else:
        return POSTGRES_SERVER_URL
    if REQUIRE_POSTGRES:
        pytest.fail(
            f"{problem}\nCORRAL_REQUIRE_POSTGRES=1, so the PostgreSQL tests must run: "
            "start the server or point CORRAL_TEST_POSTGRES_URL at one.",
            pytrace=False,
        )
    pytest.skip(f"{problem} (set CORRAL_REQUIRE_POSTGRES=1 to make this an error)")


@pytest.fixture(scope="session")
def create_postgres_database(postgres_server: str) -> Iterator[Callable[[], str]]:
    """A factory of fresh, empty PostgreSQL databases; each is dropped at session end."""
    created: list[str] = []

    def create() -> str:
        name = f"corral_test_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(
                    sql.Identifier(name)
                )
            )
        created.append(name)
        return sa.make_url(postgres_server).set(database=name).render_as_string(False)

    yield create

    from corral.state import close_backends

    close_backends()  # engines shared through open_store hold connections
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        for name in created:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def postgres_url(create_postgres_database: Callable[[], str]) -> str:
    """The session's own PostgreSQL database (schema created on first use)."""
    return create_postgres_database()


@pytest.fixture
def fresh_postgres_url(create_postgres_database: Callable[[], str]) -> str:
    """A brand-new empty PostgreSQL database, for tests that need one (migrations)."""
    return create_postgres_database()


# -- store backends -------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend(
    backend_name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[StoreBackend]:
    """An empty backend of each kind: memory, SQLite file, PostgreSQL database."""
    made: StoreBackend
    if backend_name == "memory":
        made = MemoryBackend()
    elif backend_name == "sqlite":
        made = SqlBackend.open(f"sqlite:///{tmp_path}/x.db")
    else:
        sql_backend = SqlBackend.open(request.getfixturevalue("postgres_url"))
        wipe(sql_backend.database.engine)
        made = sql_backend
    yield made
    made.close()


@pytest.fixture(params=SQL_BACKENDS)
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for each SQL backend, with an empty store, for multi-process tests."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/x.db"
    url: str = request.getfixturevalue("postgres_url")
    backend = SqlBackend.open(url)
    wipe(backend.database.engine)
    backend.close()
    return url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_store(backend: StoreBackend, clock: FakeClock) -> Callable[..., Store]:
    """Stores on the test's backend and clock; each call a new scope unless one is named."""

    def make(scope: str | None = None, **options: Any) -> Store:
        return Store(backend, scope or unique_scope(), clock=clock, **options)

    return make


@pytest.fixture
def store(make_store: Callable[..., Store]) -> Store:
    return make_store()
