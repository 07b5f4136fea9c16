"""The SQL backend: the store on a :class:`corral.db.raw.Database`, SQLite or PostgreSQL.

It speaks to the database only through the store's named operations
(:class:`corral.db.state.StateSQL`), which own the SQL and every difference
between the backends, how a call runs included; what is left here is the same on
both: batches of keys made distinct and answered in order, a refused write turned
into the error its caller sees, and a batch's quota judged by the usage before and
after it, inside its transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from corral.db.raw import Database
from corral.db.state import state_sql
from corral.quotas import Quotas, check_store, store_exceeded
from corral.state.prefix import prefix_upper_bound


class SqlBackend:
    def __init__(self, database: Database, *, owned: bool = False, deferred: bool = False) -> None:
        """``deferred``: commits that do not wait for the disk (an execution's own
        writes; ``Database.call_deferred``)."""
        self.database = database
        self._owned = owned
        self._sql = sql = state_sql(database, deferred=deferred)
        # The operations that need nothing more are the database's own, bound rather
        # than wrapped: a wrapper is one Python call more on the store's hottest paths.
        self.call = sql.call
        self.perform = sql.perform
        self.get = sql.get
        self.has = sql.has
        self.usage = sql.usage
        self.delete_all = sql.delete_all
        self.acquire_lock = sql.acquire_lock
        self.release_lock = sql.release_lock
        self.sweep = sql.sweep

    @classmethod
    def open(cls, url: str) -> SqlBackend:
        """A backend with a database of its own, closed with it (tests, tools)."""
        return cls(Database(url), owned=True)

    def close(self) -> None:
        """Close the database if this backend owns it; a shared one stays open."""
        if self._owned:
            self.database.close()

    def get_many(self, scope: str, keys: Sequence[str], now: int) -> list[bytes | None]:
        if not keys:
            return []
        found = self._sql.get_many(scope, list(dict.fromkeys(keys)), now)
        return [found.get(key) for key in keys]

    def put(
        self,
        scope: str,
        key: str,
        value: bytes,
        expires_at: int | None,
        quotas: Quotas | None = None,
    ) -> None:
        if quotas is None:
            self._sql.put(scope, key, value, expires_at)
            return
        refused = self._sql.put_within(
            scope,
            key,
            value,
            expires_at,
            max_bytes=quotas.store_bytes,
            max_keys=quotas.store_keys,
        )
        if refused is not None:
            raise store_exceeded(quotas, bytes_after=refused[0], keys_after=refused[1])

    def put_many(
        self, scope: str, items: Sequence[tuple[str, bytes]], quotas: Quotas | None = None
    ) -> None:
        if not items:
            return
        if quotas is None:
            self._sql.put_many(scope, items)
            return
        with self.database.transaction(write=True):
            before = self._sql.usage(scope)
            self._sql.put_many(scope, items)
            # Raised inside the transaction: it rolls back, nothing written.
            check_store(quotas, before=before, after=self._sql.usage(scope))

    def delete(self, scope: str, keys: Sequence[str]) -> None:
        if keys:
            self._sql.delete(scope, keys)

    def entries(
        self, scope: str, prefix: str, now: int, *, values: bool
    ) -> list[tuple[str, bytes | None]]:
        return self._sql.entries(scope, prefix, prefix_upper_bound(prefix), now, values=values)
