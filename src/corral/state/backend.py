"""The interface every store backend implements.

Backends are synchronous and deal in encoded bytes and integer milliseconds;
validation, encoding, clocks and ``async`` live once, in :class:`corral.state.Store`.
Every method receives the scope explicitly because one backend serves many scopes;
the sandboxed side never sees this layer, so it can never choose a scope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import ParamSpec, Protocol, TypeVar

from corral.quotas import Quotas

_P = ParamSpec("_P")
_T = TypeVar("_T")


class StoreBackend(Protocol):
    """Key-value rows per scope, each with an optional expiry in ms since the epoch.

    A row whose ``expires_at <= now`` is expired: no read may return it.

    Each scope's usage, the bytes of its keys (UTF-8) and values and the number of
    its keys, counts every row the scope holds, expired ones too until they are
    removed (read lazily, or swept); it is kept exact by every write. A write given
    ``quotas`` is refused, raising ``QuotaExceeded`` with nothing written, when it
    would grow the scope's bytes past ``quotas.store_bytes`` or its keys past
    ``quotas.store_keys`` (a write that shrinks or keeps either is never refused).
    """

    async def call(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``fn(*args, **kwargs)`` (a function of this backend's methods) for async code,
        run where the backend's work belongs: at once where it answers in microseconds,
        else where it may wait without stalling the event loop."""

    def perform(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T | Awaitable[_T]:
        """``fn(*args, **kwargs)`` done now where the backend answers at once, else an
        awaitable of it, for callers that can answer in a callback (the sandbox host):
        a coroutine would cost them more than the call."""

    def get(self, scope: str, key: str, now: int) -> bytes | None: ...

    def get_many(self, scope: str, keys: Sequence[str], now: int) -> list[bytes | None]: ...

    def has(self, scope: str, key: str, now: int) -> bool: ...

    def put(
        self,
        scope: str,
        key: str,
        value: bytes,
        expires_at: int | None,
        quotas: Quotas | None = None,
    ) -> None: ...

    def put_many(
        self, scope: str, items: Sequence[tuple[str, bytes]], quotas: Quotas | None = None
    ) -> None:
        """Write every item (keys distinct) without expiry, atomically; ``quotas`` are
        checked against the scope's usage once all of them are written."""

    def delete(self, scope: str, keys: Sequence[str]) -> None:
        """Remove the keys, atomically; unknown keys are ignored."""

    def delete_all(self, scope: str) -> None: ...

    def entries(
        self, scope: str, prefix: str, now: int, *, values: bool
    ) -> list[tuple[str, bytes | None]]:
        """Live rows whose key starts with ``prefix``, ascending; values only if asked."""

    def usage(self, scope: str) -> tuple[int, int]:
        """(bytes, keys) the scope's rows hold, as its quotas count them."""

    def acquire_lock(self, scope: str, key: str, now: int, expires_at: int) -> bool:
        """Take the lease unless a live one exists, atomically across processes."""

    def release_lock(self, scope: str, key: str) -> None: ...

    def sweep(self, now: int, limit: int) -> int | None:
        """Delete up to ``limit`` expired rows; None if another sweeper holds the turn."""

    def close(self) -> None: ...
