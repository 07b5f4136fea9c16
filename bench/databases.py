"""Throwaway databases for the benchmarks: each measurement starts on an empty one, so
no run inherits another's rows, and PostgreSQL's are dropped again after."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from corral.db.raw import close_databases

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
ALL_BACKENDS = ("sqlite", "postgres")
BACKEND_NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


class Skipped(Exception):
    """A backend that cannot run here; the message says why."""


def admin_connection(admin_url: str) -> psycopg.Connection[Any]:
    """An autocommit connection to the server (CREATE DATABASE cannot run in a
    transaction); ``Skipped`` when there is none to reach."""
    admin = make_url(admin_url)
    libpq_url = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        return psycopg.connect(libpq_url, connect_timeout=5, autocommit=True)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Skipped(f"cannot connect to {admin}: {reason}") from exc


@contextmanager
def fresh_database(backend: str, admin_url: str = DEFAULT_POSTGRES_URL) -> Iterator[str]:
    """The URL of an empty database: a temporary SQLite file, or a new PostgreSQL
    database ``corral_bench_<random>`` dropped again at the end."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
            try:
                yield f"sqlite:///{Path(tmp) / 'bench.db'}"
            finally:
                close_databases()
        return
    name = f"corral_bench_{secrets.token_hex(4)}"
    with admin_connection(admin_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            close_databases()
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(drop.format(sql.Identifier(name)))


def postgres_version(admin_url: str) -> str:
    """``PostgreSQL <major>``, for the report; ``Skipped`` when the server is not there."""
    with admin_connection(admin_url) as conn:
        return f"PostgreSQL {conn.info.server_version // 10000}"
