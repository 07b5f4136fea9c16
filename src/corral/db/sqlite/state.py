"""The store's operations on SQLite (WAL), where they differ from PostgreSQL's.

SQLite runs one writer at a time and answers in microseconds, in this process:
calls run at once, in the caller's turn of the event loop, and ``perform`` gives
the answer itself (through ``Database.call``'s done future a read measured 1-2 µs
slower, of about 10); a quota is checked by the write statement itself, and
sweepers take turns through the write lock.

A list of keys travels as one JSON array (``json_each``), so a batch read or
delete is one statement whatever its size: for 1,000 keys of 100,000 it measured
6-11 ms against 14-16 ms as chunks of 500 bound by position, and a delete half
the time. Values cannot travel as JSON text, so a batch write binds its rows by
position, 166 to a statement: 4.2-4.4 ms for 1,000 rows against 5.3-5.4 ms bound
by name, and against 2.1 ms more as ``executemany`` of a one-row upsert, which
steps a statement per row (all measured on these machines).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, ParamSpec, TypeVar

from corral.db.state import LIVE, UPSERT, StateSQL

_P = ParamSpec("_P")
_T = TypeVar("_T")

_KEY_LIST = "(SELECT value FROM json_each(:keys))"
_GET_MANY = f"SELECT key, value FROM state WHERE scope = :scope AND key IN {_KEY_LIST} AND {LIVE}"
_DELETE_MANY = f"DELETE FROM state WHERE scope = :scope AND key IN {_KEY_LIST}"
# The upsert, only if it keeps the scope within its quota: it grows the bytes to at
# most :max_bytes, or does not grow them, and adds no key beyond :max_keys. :size is
# the new row's size. SQLite runs one writer at a time, so nothing changes between
# the statement's read of the usage and its write.
_PUT_WITHIN = (
    "INSERT INTO state (scope, key, value, expires_at) SELECT :scope, :key, :value, :expires_at "
    "FROM (SELECT coalesce(sum(bytes), 0) AS bytes, coalesce(sum(keys), 0) AS keys "
    "FROM state_usage WHERE scope = :scope) AS used LEFT JOIN (SELECT "
    "length(CAST(key AS BLOB)) + length(value) AS size FROM state WHERE scope = :scope AND "
    "key = :key) AS old ON 1 WHERE (:size <= coalesce(old.size, 0) OR used.bytes + :size - "
    "coalesce(old.size, 0) <= :max_bytes) AND (old.size IS NOT NULL OR used.keys < :max_keys) "
    + UPSERT
)
_ROW_SIZE = (
    "SELECT length(CAST(key AS BLOB)) + length(value) FROM state "
    "WHERE scope = :scope AND key = :key"
)
_PUT_ROWS = (
    "INSERT INTO state (scope, key, value, expires_at) VALUES {} "
    "ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value, expires_at = NULL"
)
# Rows per batch upsert: three parameters each, well below SQLite's limit per statement.
_ROWS = 166


@functools.cache
def _put_rows(count: int) -> str:
    """One upsert of ``count`` rows, bound by position (see the module's docstring)."""
    return _PUT_ROWS.format(", ".join(["(?, ?, ?, NULL)"] * count))


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _key_list(keys: Sequence[str]) -> str:
    """The keys as ``_KEY_LIST`` reads them: a JSON array, in UTF-8 (keys hold no NUL
    and no lone surrogate, so every one survives the trip)."""
    return json.dumps(keys, ensure_ascii=False)


class SqliteState(StateSQL):
    async def call(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return fn(*args, **kwargs)

    def perform(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T | Awaitable[_T]:
        return fn(*args, **kwargs)

    def get_many(self, scope: str, keys: Sequence[str], now: int) -> dict[str, bytes]:
        params = {"scope": scope, "keys": _key_list(keys), "now": now}
        return {key: bytes(value) for key, value in self.database.fetch_all(_GET_MANY, params)}

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
        size = len(key.encode()) + len(value)
        params = {
            "scope": scope,
            "key": key,
            "value": value,
            "expires_at": expires_at,
            "size": size,
            "max_bytes": max_bytes,
            "max_keys": max_keys,
        }
        if self.database.write(_PUT_WITHIN, params):
            return None
        # Refused: the usage it would have made, as of now (this is only the message).
        with self.database.transaction(write=False):  # one snapshot for both reads
            used = self.usage(scope)
            row = self.database.fetch_one(_ROW_SIZE, {"scope": scope, "key": key})
        old = 0 if row is None else int(row[0])
        return used[0] + size - old, used[1] + (row is None)

    def put_many(self, scope: str, items: Sequence[tuple[str, bytes]]) -> None:
        with self.database.transaction(write=True) as cursor:
            for chunk in _chunks(items, _ROWS):
                rows = tuple([field for key, value in chunk for field in (scope, key, value)])
                self.database.execute(cursor, _put_rows(len(chunk)), rows)

    def delete(self, scope: str, keys: Sequence[str]) -> None:
        self.database.write(_DELETE_MANY, {"scope": scope, "keys": _key_list(keys)})

    def take_sweep_turn(self, cursor: Any) -> bool:
        return True  # the sweep's BEGIN IMMEDIATE already made sweepers take turns
