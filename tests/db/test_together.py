"""``Database.write_together``: several writes, one commit (on PostgreSQL one statement).

An execution's settlement writes its record, its log lines and its task's removal
this way; what it must guarantee is what the transaction it replaces did.
"""

from __future__ import annotations

import sqlite3

import psycopg
import pytest

from corral.db.raw import Database, open_database

_INSERT = "INSERT INTO state (scope, key, value) VALUES (:scope, :key, :value)"


@pytest.fixture
def database(sql_url: str) -> Database:
    return open_database(sql_url)


def keys(database: Database) -> list[tuple[str, str]]:
    rows = database.fetch_all("SELECT scope, key FROM state ORDER BY scope, key")
    return [(scope, key) for scope, key in rows]


def test_the_writes_land_together_with_their_own_parameters(database: Database) -> None:
    database.write(_INSERT, {"scope": "s", "key": "old", "value": b"\x00"})
    # The same parameter names in each statement: each keeps its own values.
    database.write_together(
        [
            (_INSERT, {"scope": "s", "key": "a", "value": b"\x01"}),
            (_INSERT, {"scope": "t", "key": "b", "value": b"\x02"}),
            ("DELETE FROM state WHERE scope = :scope AND key = :key", {"scope": "s", "key": "old"}),
        ]
    )
    assert keys(database) == [("s", "a"), ("t", "b")]


def test_one_failing_write_leaves_none_of_them(database: Database) -> None:
    database.write(_INSERT, {"scope": "s", "key": "taken", "value": b"\x00"})
    errors = (psycopg.errors.UniqueViolation, sqlite3.IntegrityError)
    with pytest.raises(errors):
        database.write_together(
            [
                (_INSERT, {"scope": "s", "key": "new", "value": b"\x01"}),
                (_INSERT, {"scope": "s", "key": "taken", "value": b"\x02"}),  # a duplicate
            ]
        )
    assert keys(database) == [("s", "taken")]
    database.write_together([(_INSERT, {"scope": "s", "key": "after", "value": b"\x03"})])
    assert keys(database) == [("s", "after"), ("s", "taken")]  # the connection still works


def test_the_rows_of_the_last_statement_come_back(database: Database) -> None:
    database.write(_INSERT, {"scope": "s", "key": "old", "value": b"\x00"})
    rows = database.write_together(
        [
            ("DELETE FROM state WHERE scope = :scope", {"scope": "s"}),
            (_INSERT + " RETURNING key, value", {"scope": "t", "key": "new", "value": b"\x01"}),
        ],
        returning=True,
    )
    assert [(key, bytes(value)) for key, value in rows] == [("new", b"\x01")]
    assert keys(database) == [("t", "new")]


def test_a_last_statement_with_clauses_of_its_own_joins_them(fresh_postgres_url: str) -> None:
    # Data-modifying WITH clauses are PostgreSQL's.
    database = open_database(fresh_postgres_url)
    for key in ("a", "b"):
        database.write(_INSERT, {"scope": "s", "key": key, "value": b"\x00"})
    # How a settlement ends with a claim: the last statement is itself a WITH.
    moved = (
        "WITH c AS (UPDATE state SET scope = :to WHERE scope = :scope RETURNING key) "
        "SELECT key, :to FROM c ORDER BY key"
    )
    rows = database.write_together(
        [
            (_INSERT, {"scope": "n", "key": "c", "value": b"\x01"}),
            (moved, {"scope": "s", "to": "m"}),
        ],
        returning=True,
    )
    assert rows == [("a", "m"), ("b", "m")]
    assert keys(database) == [("m", "a"), ("m", "b"), ("n", "c")]
