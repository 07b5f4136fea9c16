"""The SQL backend: SQLite (WAL) and PostgreSQL through SQLAlchemy Core.

Every operation is one statement or one short transaction, so each is atomic on
both databases without application-level locking: upserts use ``ON CONFLICT``,
batches run in one transaction, and a lock is a single conditional upsert that
only succeeds when no live lease exists.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from corral.db import create_engine, ensure_schema
from corral.db.engine import write_options
from corral.db.schema import state, state_locks
from corral.state.prefix import prefix_upper_bound

# Stay well below SQLite's limit on bound parameters per statement.
_CHUNK = 500
# Any fixed number shared by every Corral process: "the TTL sweeper's turn".
_ADVISORY_LOCK_SWEEP = 0x636F7272_0002

_P = sa.bindparam


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _live(column: sa.Column[Any]) -> sa.ColumnElement[bool]:
    return sa.or_(column.is_(None), column > _P("now"))


class SqlBackend:
    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        ensure_schema(self.engine)
        self._writer = self.engine.execution_options(**write_options(self.engine))
        self._postgres = self.engine.dialect.name == "postgresql"
        self.blocking = self._postgres
        insert = postgresql.insert if self._postgres else sqlite.insert

        this_row = sa.and_(state.c.scope == _P("scope"), state.c.key == _P("key"))
        self._get = sa.select(state.c.value).where(this_row, _live(state.c.expires_at))
        self._get_many = sa.select(state.c.key, state.c.value).where(
            state.c.scope == _P("scope"),
            state.c.key.in_(_P("keys", expanding=True)),
            _live(state.c.expires_at),
        )
        self._has = sa.select(sa.literal(1)).where(this_row, _live(state.c.expires_at))
        upsert = insert(state).values(
            scope=_P("scope"), key=_P("key"), value=_P("value"), expires_at=_P("expires_at")
        )
        self._put = upsert.on_conflict_do_update(
            index_elements=[state.c.scope, state.c.key],
            set_={"value": upsert.excluded.value, "expires_at": upsert.excluded.expires_at},
        )
        self._delete = sa.delete(state).where(
            state.c.scope == _P("scope"), state.c.key.in_(_P("keys", expanding=True))
        )
        self._delete_all = sa.delete(state).where(state.c.scope == _P("scope"))
        in_prefix = sa.and_(
            state.c.scope == _P("scope"), state.c.key >= _P("prefix"), _live(state.c.expires_at)
        )
        below = state.c.key < _P("upper")
        self._keys = sa.select(state.c.key).where(in_prefix).order_by(state.c.key)
        self._keys_below = self._keys.where(below)
        self._entries = sa.select(state.c.key, state.c.value).where(in_prefix).order_by(state.c.key)
        self._entries_below = self._entries.where(below)

        lock = insert(state_locks).values(
            scope=_P("scope"), key=_P("key"), expires_at=_P("expires_at")
        )
        self._acquire = lock.on_conflict_do_update(
            index_elements=[state_locks.c.scope, state_locks.c.key],
            set_={"expires_at": lock.excluded.expires_at},
            where=state_locks.c.expires_at <= _P("now"),
        ).returning(state_locks.c.key)  # a row back means the lease is ours
        self._release = sa.delete(state_locks).where(
            state_locks.c.scope == _P("scope"), state_locks.c.key == _P("key")
        )
        expired = (
            sa.select(state.c.scope, state.c.key)
            .where(state.c.expires_at <= _P("now"))
            .limit(_P("limit"))
        )
        self._sweep = sa.delete(state).where(
            sa.tuple_(state.c.scope, state.c.key).in_(expired.scalar_subquery())
        )
        self._sweep_locks = sa.delete(state_locks).where(state_locks.c.expires_at <= _P("now"))
        # rowcount is what the sweeper reports; SQLAlchemy only keeps it when asked.
        self._sweep = self._sweep.execution_options(preserve_rowcount=True)

    def get(self, scope: str, key: str, now: int) -> bytes | None:
        with self.engine.connect() as conn:
            row = conn.execute(self._get, {"scope": scope, "key": key, "now": now}).first()
        return None if row is None else bytes(row[0])

    def get_many(self, scope: str, keys: Sequence[str], now: int) -> list[bytes | None]:
        found: dict[str, bytes] = {}
        with self.engine.connect() as conn:  # one transaction: one consistent snapshot
            for chunk in _chunks(list(dict.fromkeys(keys))):
                params = {"scope": scope, "keys": list(chunk), "now": now}
                found.update((k, bytes(v)) for k, v in conn.execute(self._get_many, params))
        return [found.get(key) for key in keys]

    def has(self, scope: str, key: str, now: int) -> bool:
        with self.engine.connect() as conn:
            params = {"scope": scope, "key": key, "now": now}
            return conn.execute(self._has, params).first() is not None

    def put(self, scope: str, key: str, value: bytes, expires_at: int | None) -> None:
        with self._writer.begin() as conn:
            params = {"scope": scope, "key": key, "value": value, "expires_at": expires_at}
            conn.execute(self._put, params)

    def put_many(self, scope: str, items: Sequence[tuple[str, bytes]]) -> None:
        if not items:
            return
        rows = [{"scope": scope, "key": k, "value": v, "expires_at": None} for k, v in items]
        with self._writer.begin() as conn:
            conn.execute(self._put, rows)

    def delete(self, scope: str, keys: Sequence[str]) -> None:
        if not keys:
            return
        with self._writer.begin() as conn:
            for chunk in _chunks(keys):
                conn.execute(self._delete, {"scope": scope, "keys": list(chunk)})

    def delete_all(self, scope: str) -> None:
        with self._writer.begin() as conn:
            conn.execute(self._delete_all, {"scope": scope})

    def entries(
        self, scope: str, prefix: str, now: int, *, values: bool
    ) -> list[tuple[str, bytes | None]]:
        upper = prefix_upper_bound(prefix)
        params: dict[str, Any] = {"scope": scope, "prefix": prefix, "now": now, "upper": upper}
        if values:
            stmt = self._entries if upper is None else self._entries_below
            with self.engine.connect() as conn:
                return [(row.key, bytes(row.value)) for row in conn.execute(stmt, params)]
        with self.engine.connect() as conn:
            keys = conn.execute(self._keys if upper is None else self._keys_below, params)
            return [(key, None) for key in keys.scalars()]

    def acquire_lock(self, scope: str, key: str, now: int, expires_at: int) -> bool:
        params = {"scope": scope, "key": key, "now": now, "expires_at": expires_at}
        with self._writer.begin() as conn:
            return conn.execute(self._acquire, params).first() is not None

    def release_lock(self, scope: str, key: str) -> None:
        with self._writer.begin() as conn:
            conn.execute(self._release, {"scope": scope, "key": key})

    def sweep(self, now: int, limit: int) -> int | None:
        # On SQLite the IMMEDIATE transaction already makes sweepers take turns;
        # on PostgreSQL a transaction-scoped advisory lock does, and a process
        # that does not get it skips this round rather than queueing behind it.
        with self._writer.begin() as conn:
            if self._postgres:
                turn = sa.select(sa.func.pg_try_advisory_xact_lock(_ADVISORY_LOCK_SWEEP))
                if not conn.execute(turn).scalar():
                    return None
            swept = conn.execute(self._sweep, {"now": now, "limit": limit}).rowcount
            conn.execute(self._sweep_locks, {"now": now})
        return int(swept)

    def close(self) -> None:
        self.engine.dispose()
