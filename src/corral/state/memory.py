"""The in-memory backend: tests, throwaway stores, and plugins that may forget on restart.

It keeps encoded bytes, not live objects, so a caller mutating a value it read or
wrote never changes what is stored — the same as a database backend. Each scope
counts its bytes and keys as rows come and go, as the database's triggers do.
"""

from __future__ import annotations

import bisect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from corral.quotas import Quotas, check_store
from corral.state.prefix import prefix_upper_bound

_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass
class _Scope:
    rows: dict[str, tuple[bytes, int | None]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # keys of ``rows``, ascending
    locks: dict[str, int] = field(default_factory=dict)
    bytes: int = 0  # of the keys (UTF-8) and values in ``rows``
    keys: int = 0


def _size(key: str, value: bytes) -> int:
    return len(key.encode()) + len(value)


class MemoryBackend:
    def __init__(self) -> None:
        self._scopes: dict[str, _Scope] = {}

    async def call(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return fn(*args, **kwargs)

    def perform(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T | Awaitable[_T]:
        return fn(*args, **kwargs)

    def _scope(self, scope: str) -> _Scope:
        found = self._scopes.get(scope)
        if found is None:
            found = self._scopes[scope] = _Scope()
        return found

    def _live(self, s: _Scope, key: str, now: int) -> bytes | None:
        row = s.rows.get(key)
        if row is None:
            return None
        value, expires_at = row
        if expires_at is not None and expires_at <= now:
            self._remove(s, key)  # lazy purge, as the plugin state API describes
            return None
        return value

    @staticmethod
    def _remove(s: _Scope, key: str) -> None:
        row = s.rows.pop(key, None)
        if row is not None:
            del s.order[bisect.bisect_left(s.order, key)]
            s.bytes -= _size(key, row[0])
            s.keys -= 1

    def get(self, scope: str, key: str, now: int) -> bytes | None:
        return self._live(self._scope(scope), key, now)

    def get_many(self, scope: str, keys: Sequence[str], now: int) -> list[bytes | None]:
        s = self._scope(scope)
        return [self._live(s, key, now) for key in keys]

    def has(self, scope: str, key: str, now: int) -> bool:
        return self._live(self._scope(scope), key, now) is not None

    def put(
        self,
        scope: str,
        key: str,
        value: bytes,
        expires_at: int | None,
        quotas: Quotas | None = None,
    ) -> None:
        s = self._scope(scope)
        grown = self._grown(s, key, value)
        if quotas is not None:
            before = (s.bytes, s.keys)
            after = (s.bytes + grown, s.keys + (key not in s.rows))
            check_store(quotas, before=before, after=after)
        self._write(s, key, value, expires_at, grown)

    @staticmethod
    def _grown(s: _Scope, key: str, value: bytes) -> int:
        """How many bytes writing ``value`` at ``key`` adds to the scope (or removes)."""
        old = s.rows.get(key)
        return len(value) - len(old[0]) if old is not None else len(key.encode()) + len(value)

    @staticmethod
    def _write(s: _Scope, key: str, value: bytes, expires_at: int | None, grown: int) -> None:
        if key not in s.rows:
            bisect.insort(s.order, key)
            s.keys += 1
        s.rows[key] = (value, expires_at)
        s.bytes += grown

    def put_many(
        self, scope: str, items: Sequence[tuple[str, bytes]], quotas: Quotas | None = None
    ) -> None:
        s = self._scope(scope)
        grown = [self._grown(s, key, value) for key, value in items]
        if quotas is not None:
            added = sum(key not in s.rows for key, _ in items)
            after = (s.bytes + sum(grown), s.keys + added)
            check_store(quotas, before=(s.bytes, s.keys), after=after)
        for (key, value), size in zip(items, grown, strict=True):
            self._write(s, key, value, None, size)

    def delete(self, scope: str, keys: Sequence[str]) -> None:
        s = self._scope(scope)
        for key in keys:
            self._remove(s, key)

    def delete_all(self, scope: str) -> None:
        s = self._scope(scope)
        s.rows.clear()
        s.order.clear()
        s.bytes = s.keys = 0

    def entries(
        self, scope: str, prefix: str, now: int, *, values: bool
    ) -> list[tuple[str, bytes | None]]:
        s = self._scope(scope)
        start = bisect.bisect_left(s.order, prefix)
        upper = prefix_upper_bound(prefix)
        stop = len(s.order) if upper is None else bisect.bisect_left(s.order, upper)
        out: list[tuple[str, bytes | None]] = []
        for key in s.order[start:stop]:
            value, expires_at = s.rows[key]
            if expires_at is None or expires_at > now:
                out.append((key, value if values else None))
        return out

    def usage(self, scope: str) -> tuple[int, int]:
        s = self._scope(scope)
        return s.bytes, s.keys

    def acquire_lock(self, scope: str, key: str, now: int, expires_at: int) -> bool:
        locks = self._scope(scope).locks
        held_until = locks.get(key)
        if held_until is not None and held_until > now:
            return False
        locks[key] = expires_at
        return True

    def release_lock(self, scope: str, key: str) -> None:
        self._scope(scope).locks.pop(key, None)

    def sweep(self, now: int, limit: int) -> int:
        swept = 0
        for s in self._scopes.values():
            expired = [k for k, (_, exp) in s.rows.items() if exp is not None and exp <= now]
            for key in expired[: limit - swept]:
                self._remove(s, key)
                swept += 1
            if swept >= limit:
                break
        return swept

    def close(self) -> None:
        self._scopes.clear()
