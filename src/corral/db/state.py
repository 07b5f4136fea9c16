"""The store's SQL, by name: what ``corral.state.SqlBackend`` asks of a database.

``StateSQL`` is the set of named operations on the ``state`` and ``state_locks``
tables. The statements both backends run alike live here, once; each backend's
module (``corral.db.sqlite.state``, ``corral.db.postgres.state``) adds the ones
that differ, and how a call runs there. ``state_sql`` picks the one for a
``Database``: above this package nothing asks which backend it is on.

Every statement is written with ``:name`` parameters (the database layer converts
them for the driver), except SQLite's multi-row upsert, which binds by position
because that measured a quarter faster (``corral.db.sqlite.state`` says why).
Every operation is one statement or one short transaction, so it is atomic on
both databases without application-level locking: upserts use ``ON CONFLICT``,
and a lock is a single conditional upsert that only succeeds when no live lease
exists.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ParamSpec, TypeVar

from corral.db.raw import Database

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: The condition a row must meet to be read: not expired as of ``:now``.
LIVE = "(expires_at IS NULL OR expires_at > :now)"
#: The end of an upsert of ``state``: a row already there takes the new value and expiry.
UPSERT = (
    "ON CONFLICT (scope, key) DO UPDATE "
    "SET value = excluded.value, expires_at = excluded.expires_at"
)

_GET = f"SELECT value FROM state WHERE scope = :scope AND key = :key AND {LIVE}"
_HAS = f"SELECT 1 FROM state WHERE scope = :scope AND key = :key AND {LIVE}"
_PUT = (
    "INSERT INTO state (scope, key, value, expires_at) VALUES (:scope, :key, :value, :expires_at) "
    + UPSERT
)
_USAGE = "SELECT bytes, keys FROM state_usage WHERE scope = :scope"
_DELETE_ALL = "DELETE FROM state WHERE scope = :scope"
_RANGE = f"scope = :scope AND key >= :prefix AND {LIVE}"
_KEYS = f"SELECT key FROM state WHERE {_RANGE} ORDER BY key"
_KEYS_BELOW = f"SELECT key FROM state WHERE {_RANGE} AND key < :upper ORDER BY key"
_ENTRIES = f"SELECT key, value FROM state WHERE {_RANGE} ORDER BY key"
_ENTRIES_BELOW = f"SELECT key, value FROM state WHERE {_RANGE} AND key < :upper ORDER BY key"
_ACQUIRE = (
    "INSERT INTO state_locks (scope, key, expires_at) VALUES (:scope, :key, :expires_at) "
    "ON CONFLICT (scope, key) DO UPDATE SET expires_at = excluded.expires_at "
    "WHERE state_locks.expires_at <= :now RETURNING key"  # a row back: the lease is ours
)
_RELEASE = "DELETE FROM state_locks WHERE scope = :scope AND key = :key"
_SWEEP = (
    "DELETE FROM state WHERE (scope, key) IN "
    "(SELECT scope, key FROM state WHERE expires_at <= :now LIMIT :limit)"
)
_SWEEP_LOCKS = "DELETE FROM state_locks WHERE expires_at <= :now"


def usage_of(row: Any) -> tuple[int, int]:
    """(bytes, keys) from a scope's usage row; a scope that never held a row has none."""
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


class StateSQL(abc.ABC):
    """The store's operations on one database, in bytes and integer milliseconds.

    Each scope's usage (bytes of keys and values, number of keys) is kept by
    triggers on ``state`` (migration 0006), in the statement that changes a row;
    the operations here only read it.
    """

    def __init__(self, database: Database) -> None:
        self.database = database

    # -- how a call runs ------------------------------------------------------------

    @abc.abstractmethod
    async def call(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``fn(*args, **kwargs)`` for async code, run where this backend's work belongs."""

    @abc.abstractmethod
    def perform(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T | Awaitable[_T]:
        """``fn(*args, **kwargs)`` done now where the backend answers at once, else an
        awaitable of it: for callers that answer in a callback when they can (the
        sandbox host's tool calls)."""

    # -- the same on every backend ----------------------------------------------------

    def get(self, scope: str, key: str, now: int) -> bytes | None:
        row = self.database.fetch_one(_GET, {"scope": scope, "key": key, "now": now})
        return None if row is None else bytes(row[0])

    def has(self, scope: str, key: str, now: int) -> bool:
        return self.database.fetch_one(_HAS, {"scope": scope, "key": key, "now": now}) is not None

    def put(self, scope: str, key: str, value: bytes, expires_at: int | None) -> None:
        """Upsert one row, whatever the scope's usage."""
        params = {"scope": scope, "key": key, "value": value, "expires_at": expires_at}
        self.database.write(_PUT, params)

    def usage(self, scope: str) -> tuple[int, int]:
        """(bytes, keys) of the scope, as of this caller's transaction if one is open."""
        return usage_of(self.database.fetch_one(_USAGE, {"scope": scope}))

    def delete_all(self, scope: str) -> None:
        self.database.write(_DELETE_ALL, {"scope": scope})

    def entries(
        self, scope: str, prefix: str, upper: str | None, now: int, *, values: bool
    ) -> list[tuple[str, bytes | None]]:
        """Live rows with ``prefix <= key < upper`` (no upper bound for None), ascending."""
        params = {"scope": scope, "prefix": prefix, "now": now, "upper": upper}
        if values:
            rows = self.database.fetch_all(_ENTRIES if upper is None else _ENTRIES_BELOW, params)
            return [(key, bytes(value)) for key, value in rows]
        rows = self.database.fetch_all(_KEYS if upper is None else _KEYS_BELOW, params)
        return [(key, None) for (key,) in rows]

    def browse(
        self, scope: str, prefix: str, upper: str | None, *, after: str | None, now: int, limit: int
    ) -> list[tuple[str, bytes, int | None]]:
        """(key, value, expires_at) of up to ``limit`` live rows with ``prefix <= key <
        upper`` and ``key > after`` (None: no bound), ascending: a page of the state
        browser (``corral.runtime.state_browser``)."""
        where = [_RANGE]
        if upper is not None:
            where.append("key < :upper")
        if after is not None:
            where.append("key > :after")
        rows = self.database.fetch_all(
            f"SELECT key, value, expires_at FROM state WHERE {' AND '.join(where)} "
            "ORDER BY key LIMIT :limit",
            {
                "scope": scope,
                "prefix": prefix,
                "upper": upper,
                "after": after,
                "now": now,
                "limit": limit,
            },
        )
        return [(key, bytes(value), expires_at) for key, value, expires_at in rows]

    def entry(self, scope: str, key: str, now: int) -> tuple[bytes, int | None] | None:
        """(value, expires_at) of one live key, or None."""
        row = self.database.fetch_one(
            f"SELECT value, expires_at FROM state WHERE scope = :scope AND key = :key AND {LIVE}",
            {"scope": scope, "key": key, "now": now},
        )
        return None if row is None else (bytes(row[0]), row[1])

    def acquire_lock(self, scope: str, key: str, now: int, expires_at: int) -> bool:
        params = {"scope": scope, "key": key, "now": now, "expires_at": expires_at}
        return bool(self.database.fetch_all(_ACQUIRE, params))

    def release_lock(self, scope: str, key: str) -> None:
        self.database.write(_RELEASE, {"scope": scope, "key": key})

    def sweep(self, now: int, limit: int) -> int | None:
        """Delete up to ``limit`` expired rows, and every expired lock, in one
        transaction; None when another process has the sweeper's turn."""
        with self.database.transaction(write=True) as cursor:
            if not self.take_sweep_turn(cursor):
                return None
            swept = self.database.rows_touched(
                self.database.execute(cursor, _SWEEP, {"now": now, "limit": limit})
            )
            self.database.execute(cursor, _SWEEP_LOCKS, {"now": now})
        return swept

    # -- each backend's own -----------------------------------------------------------

    @abc.abstractmethod
    def get_many(self, scope: str, keys: Sequence[str], now: int) -> dict[str, bytes]:
        """The live rows among ``keys`` (distinct), read as of one moment."""

    @abc.abstractmethod
    def put_within(
        self,
        scope: str,
        key: str,
        value: bytes,
        expires_at: int | None,
        *,
        max_bytes: int,
        max_keys: int,
    ) -> tuple[int, int] | None:
        """Upsert one row unless it takes the scope's bytes past ``max_bytes`` or its
        keys past ``max_keys``; refused, nothing is written and the (bytes, keys) the
        write would have made come back. A write that does not grow either passes.

        Two writers of one scope at once cannot both pass and overshoot."""

    @abc.abstractmethod
    def put_many(self, scope: str, items: Sequence[tuple[str, bytes]]) -> None:
        """Upsert every item (keys distinct) without expiry, in one transaction (the
        caller's, if it has one open)."""

    @abc.abstractmethod
    def delete(self, scope: str, keys: Sequence[str]) -> None:
        """Remove the keys (at least one), atomically; unknown keys are ignored."""

    @abc.abstractmethod
    def take_sweep_turn(self, cursor: Any) -> bool:
        """Inside the sweep's write transaction: whether this process sweeps now (one
        at a time does; the others skip the round rather than queue behind it)."""


def state_sql(database: Database, *, deferred: bool = False) -> StateSQL:
    """The store's operations on ``database``, for its backend.

    ``deferred``: calls run through ``Database.call_deferred``, whose commits do not
    wait for the disk (an execution's own writes; docs/store.md § Durability).
    """
    # Imported here: each backend's module builds on this one.
    from corral.db.postgres.state import PostgresState
    from corral.db.sqlite.state import SqliteState

    if database.postgres:
        return PostgresState(database, deferred=deferred)
    return SqliteState(database)
