"""The store's operations on PostgreSQL, where they differ from SQLite's.

Calls wait on the network, so async code runs them through ``Database.call`` (in
a greenlet on the event loop). A list of keys or values travels as an array, so
a batch is one statement whatever its size, its rows taken in the key order of
the index: a transaction of several statements would hold the scope's usage row
(locked by the first statement's trigger) while waiting for a row that a single
write holds while it waits for the usage row, a deadlock. Such a batch is marked
as one (``corral.batch``) so that the triggers of migration 0006 count its rows
once, together, not one by one.

A write with a quota is checked by the trigger, after its own update of the
scope's usage row, which holds that row's lock until the commit: two writers of
one scope at once take turns there, and the second sees the first's bytes. The
quota travels to the trigger as the transaction-local setting
``corral.store_quota``. One sweeper at a time holds a transaction-scoped advisory
lock; the others skip the round.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import psycopg

from corral.db.raw import Database
from corral.db.state import LIVE, UPSERT, StateSQL

_P = ParamSpec("_P")
_T = TypeVar("_T")

# Any fixed number shared by every Corral process: "the TTL sweeper's turn".
_ADVISORY_LOCK_SWEEP = 0x636F7272_0002

# One statement, so one snapshot: under READ COMMITTED each statement of a
# transaction would see the commits made since the previous one.
_GET_MANY = f"SELECT key, value FROM state WHERE scope = :scope AND key = ANY(:keys) AND {LIVE}"
_DELETE_MANY = "DELETE FROM state WHERE scope = :scope AND key = ANY(:keys)"
_PUT_CHECKED = (
    "INSERT INTO state (scope, key, value, expires_at) SELECT CAST(:scope AS text), "
    "CAST(:key AS text), CAST(:value AS bytea), CAST(:expires_at AS bigint) "
    "FROM (SELECT set_config('corral.store_quota', :quota, true)) AS quota " + UPSERT
)
#: What the trigger of migration 0006 raises for a write over the quota; its detail
#: is the bytes and keys the write would have made.
_OVER_QUOTA = "CQ001"
_BATCH = "SELECT set_config('corral.batch', 'on', true)"
_PUT_ARRAYS = (
    "INSERT INTO state (scope, key, value, expires_at) SELECT :scope, k, v, NULL "
    "FROM unnest(CAST(:keys AS text[]), CAST(:values AS bytea[])) AS t(k, v) "
    'ORDER BY k COLLATE "C" '
    "ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value, expires_at = NULL"
)
_SWEEP_TURN = "SELECT pg_try_advisory_xact_lock(:turn)"


class PostgresState(StateSQL):
    def __init__(self, database: Database, *, deferred: bool) -> None:
        super().__init__(database)
        self._submit = database.call_deferred if deferred else database.call

    async def call(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return await self._submit(fn, *args, **kwargs)

    def perform(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T | Awaitable[_T]:
        return self._submit(fn, *args, **kwargs)

    def get_many(self, scope: str, keys: Sequence[str], now: int) -> dict[str, bytes]:
        params = {"scope": scope, "keys": list(keys), "now": now}
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
        params = {
            "scope": scope,
            "key": key,
            "value": value,
            "expires_at": expires_at,
            "quota": f"{max_bytes} {max_keys}",
        }
        try:
            self.database.write(_PUT_CHECKED, params)
        except psycopg.Error as exc:
            if exc.sqlstate != _OVER_QUOTA or exc.diag.message_detail is None:
                raise
            used_bytes, used_keys = map(int, exc.diag.message_detail.split())
            return used_bytes, used_keys
        return None

    def put_many(self, scope: str, items: Sequence[tuple[str, bytes]]) -> None:
        params = {
            "scope": scope,
            "keys": [key for key, _ in items],
            "values": [value for _, value in items],
        }
        with self.database.transaction(write=True) as cursor:
            self.database.execute(cursor, _BATCH)
            self.database.execute(cursor, _PUT_ARRAYS, params)

    def delete(self, scope: str, keys: Sequence[str]) -> None:
        self.database.write(_DELETE_MANY, {"scope": scope, "keys": list(keys)})

    def take_sweep_turn(self, cursor: Any) -> bool:
        turn = self.database.execute(cursor, _SWEEP_TURN, {"turn": _ADVISORY_LOCK_SWEEP})
        return bool(turn.fetchone()[0])
