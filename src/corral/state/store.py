"""The store API of SPEC §1.1: one scope, validated, encoded, ``async``.

This is the single place where keys, values and TTLs are checked, so every
backend behaves the same and a bad call never reaches the database: a value that
cannot be encoded or is too large raises before anything is written.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

from corral import codec
from corral.db import bridge
from corral.errors import DecodeLimitExceeded
from corral.quotas import Quotas
from corral.sdk.store import key_list, pair_list
from corral.state.backend import StoreBackend

Clock = Callable[[], float]
"""Seconds since the epoch, like ``time.time``; tests pass a controllable one."""

MAX_KEY_BYTES = 512
# Expiry times are 64-bit milliseconds; a later deadline is the same as "never".
_MAX_EXPIRES_AT = 2**63 - 1
DEFAULT_MAX_VALUE_BYTES = 1024 * 1024

_P = ParamSpec("_P")
_T = TypeVar("_T")


def check_key(key: object) -> str:
    """Return ``key`` if it is a valid store key, else raise saying what is wrong."""
    if type(key) is not str:
        raise TypeError(f"store keys must be str, got {type(key).__name__} {key!r}")
    if not key:
        raise ValueError("store keys must not be empty")
    if "\x00" in key:
        raise ValueError(f"store key {key!r} contains a NUL character (\\x00); remove it")
    try:
        size = len(key.encode())
    except UnicodeEncodeError:
        raise ValueError(
            f"store key {key!r} is not valid Unicode text (it has a lone surrogate)"
        ) from None
    if size > MAX_KEY_BYTES:
        raise ValueError(
            f"store key {key[:32]!r}... is {size} bytes in UTF-8; the limit is "
            f"{MAX_KEY_BYTES}: keep keys short and put data in the value"
        )
    return key


def _deadline(now: int, ms: int) -> int:
    """The expiry ``ms`` after ``now``; beyond 64-bit milliseconds it is the same as never."""
    return min(now + ms, _MAX_EXPIRES_AT)


def ttl_to_ms(ttl: object, name: str = "ttl_ms") -> int:
    """Milliseconds from an int, float or timedelta; must be positive and finite."""
    if isinstance(ttl, timedelta):
        ms: float = ttl / timedelta(milliseconds=1)
    elif type(ttl) in (int, float):
        ms = ttl  # type: ignore[assignment]
    else:
        raise TypeError(
            f"{name} must be a number of milliseconds or a timedelta, got {type(ttl).__name__}"
        )
    if not math.isfinite(ms) or ms <= 0:
        raise ValueError(
            f"{name} must be a positive number of milliseconds, got {ttl!r}"
            + ("; to remove a key now, use delete()" if ms <= 0 else "")
        )
    return math.ceil(ms)


OPERATIONS: dict[str, Callable[..., Any]] = {}
"""Every store operation by name, as the plain function the async method runs."""


def _operation(
    fn: Callable[Concatenate[Store, _P], _T],
) -> Callable[Concatenate[Store, _P], Coroutine[Any, Any, _T]]:
    """Make a store operation ``async``, written once as a plain function.

    The backend's ``call`` runs it where its work belongs: at once on SQLite and
    memory, which answer in microseconds, in a greenlet on the event loop on
    PostgreSQL.
    """

    async def run(self: Store, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return await self._backend.call(fn, self, *args, **kwargs)

    run.__name__, run.__qualname__, run.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
    OPERATIONS[fn.__name__] = fn
    return run


class Store:
    """A persistent key-value store bound to one scope (an instance or a plugin)."""

    def __init__(
        self,
        backend: StoreBackend,
        scope: str,
        *,
        clock: Clock | None = None,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        quotas: Quotas | None = None,
    ) -> None:
        """``quotas``: the store bytes and keys a write may not take the scope over
        (``QuotaExceeded``, nothing written); None for none, as host-side code has."""
        if type(scope) is not str or not scope:
            raise ValueError(f"a store scope must be a non-empty str, got {scope!r}")
        self._backend = backend
        self._scope = scope
        self._clock: Clock = clock or time.time
        self._max_value_bytes = max_value_bytes
        self._quotas = quotas

    @property
    def scope(self) -> str:
        return self._scope

    def _now(self) -> int:
        return math.floor(self._clock() * 1000)

    def _encode(self, key: str, value: Any) -> bytes:
        try:
            data = codec.encode(value)
        except TypeError as exc:
            raise TypeError(f"{exc} (key {key!r}: nothing was written)") from None
        return self._sized(key, data)

    def _checked(self, key: str, data: object, pacing: codec.Pacing) -> bytes:
        """Bytes the sandbox encoded: it is trusted for nothing, so they must decode.

        Their size is checked first, before paying for decoding them; and the decode is
        paced, so that inside a greenlet (a PostgreSQL call, a large frame from the
        sandbox) the event loop keeps running while large values are checked.
        """
        if type(data) is not bytes:
            raise TypeError(f"an encoded value must be bytes, got {type(data).__name__}")
        self._sized(key, data)
        try:
            codec.decode(data, pacing=pacing)
        except DecodeLimitExceeded as exc:
            raise ValueError(
                f"the value for key {key!r} cannot be stored: {exc} (nothing was written)"
            ) from None
        except Exception:
            raise ValueError(
                f"the value for key {key!r} is not a value encoded by corral.codec "
                "(nothing was written)"
            ) from None
        return data

    def _sized(self, key: str, data: bytes) -> bytes:
        if len(data) > self._max_value_bytes:
            raise ValueError(
                f"the value for key {key!r} is {len(data)} bytes encoded; the limit is "
                f"{self._max_value_bytes}: split it across several keys (nothing was written)"
            )
        return data

    @staticmethod
    def _decode(data: bytes | None) -> Any:
        return None if data is None else codec.decode(data)

    def _read(self, key: str) -> bytes | None:
        return self._backend.get(self._scope, check_key(key), self._now())

    def _read_many(self, keys: Iterable[str]) -> list[bytes | None]:
        checked = [check_key(k) for k in key_list(keys)]
        return self._backend.get_many(self._scope, checked, self._now())

    def _entries(self, prefix: str, *, values: bool) -> list[tuple[str, bytes | None]]:
        if not _matchable(prefix):
            return []
        return self._backend.entries(self._scope, prefix, self._now(), values=values)

    def _put_many(self, items: Iterable[tuple[Any, Any]], encode: Callable[..., bytes]) -> None:
        encoded = {check_key(k): encode(k, v) for k, v in items}
        self._backend.put_many(self._scope, list(encoded.items()), self._quotas)

    # -- reads ------------------------------------------------------------------

    @_operation
    def get(self, key: str) -> Any:
        """The value, or None when never set, deleted or expired."""
        return self._decode(self._read(key))

    @_operation
    def get_or_default(self, key: str, fallback: Any) -> Any:
        data = self._read(key)
        return fallback if data is None else codec.decode(data)

    @_operation
    def has(self, key: str) -> bool:
        return self._backend.has(self._scope, check_key(key), self._now())

    @_operation
    def get_many(self, keys: Iterable[str]) -> list[Any]:
        """Values aligned with ``keys`` by position, None for missing ones; one request."""
        return [self._decode(data) for data in self._read_many(keys)]

    @_operation
    def keys(self, prefix: str = "") -> list[str]:
        """Live keys starting with ``prefix``, ascending."""
        return [key for key, _ in self._entries(prefix, values=False)]

    @_operation
    def list_entries(self, prefix: str = "") -> list[tuple[str, Any]]:
        """Live ``(key, value)`` pairs starting with ``prefix``, ascending; one request."""
        return [(key, self._decode(data)) for key, data in self._entries(prefix, values=True)]

    # -- writes -----------------------------------------------------------------

    @_operation
    def set(self, key: str, value: Any) -> None:
        """Upsert with no expiry (a previous TTL is cleared)."""
        data = self._encode(check_key(key), value)
        self._backend.put(self._scope, key, data, None, self._quotas)

    @_operation
    def set_with_ttl(self, key: str, value: Any, ttl_ms: float | timedelta) -> None:
        """Upsert; the key behaves as missing once ``ttl_ms`` milliseconds have passed."""
        ms = ttl_to_ms(ttl_ms)
        data = self._encode(check_key(key), value)
        self._backend.put(self._scope, key, data, _deadline(self._now(), ms), self._quotas)

    @_operation
    def set_many(self, pairs: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
        """Write every pair, atomically: all or none; one request. Later duplicates win."""
        self._put_many(
            pairs.items() if isinstance(pairs, Mapping) else pair_list(pairs), self._encode
        )

    @_operation
    def delete(self, key: str) -> None:
        """Remove the key; a no-op when it does not exist."""
        self._backend.delete(self._scope, [check_key(key)])

    clear = delete  # the seeds' name for the same call

    @_operation
    def clear_many(self, keys: Iterable[str]) -> None:
        """Remove the keys, atomically; unknown keys are ignored; one request."""
        self._backend.delete(self._scope, [check_key(k) for k in key_list(keys)])

    @_operation
    def clear_all(self) -> None:
        """Remove every key of this scope and nothing of any other.

        Locks are leases for coordinating concurrent executions, not data, so they
        are left to expire: wiping one while another execution holds it would let
        two holders in at once.
        """
        self._backend.delete_all(self._scope)

    # -- usage, for the host (not an operation the sandbox may call) -------------

    async def usage(self) -> tuple[int, int]:
        """(bytes, keys) the scope holds as its quotas count them: keys' UTF-8 and
        encoded values, of every row, expired ones included until they are removed."""
        return await self._backend.call(self._backend.usage, self._scope)

    # -- locks ------------------------------------------------------------------

    @_operation
    def acquire_lock(self, key: str, ttl_ms: float | timedelta) -> bool:
        """Take a lease on ``key`` for ``ttl_ms``; False if another live lease holds it."""
        ms = ttl_to_ms(ttl_ms)
        now = self._now()
        return self._backend.acquire_lock(self._scope, check_key(key), now, _deadline(now, ms))

    @_operation
    def release_lock(self, key: str) -> None:
        """Drop the lease whether or not it is held; the holder is not checked."""
        self._backend.release_lock(self._scope, check_key(key))

    # -- values in their stored form, for the sandbox ----------------------------
    # A value crosses the sandbox boundary once, as the bytes that are stored: the
    # sandboxed code encodes and decodes it itself, and the host only checks it.

    @_operation
    def get_encoded(self, key: str) -> bytes | None:
        return self._read(key)

    @_operation
    def get_many_encoded(self, keys: Iterable[str]) -> list[bytes | None]:
        return self._read_many(keys)

    @_operation
    def list_entries_encoded(self, prefix: str = "") -> list[tuple[str, bytes | None]]:
        return self._entries(prefix, values=True)

    @_operation
    def set_encoded(self, key: str, data: bytes) -> None:
        data = self._checked(check_key(key), data, _pacing())
        self._backend.put(self._scope, key, data, None, self._quotas)

    @_operation
    def set_with_ttl_encoded(self, key: str, data: bytes, ttl_ms: float | timedelta) -> None:
        ms = ttl_to_ms(ttl_ms)
        data = self._checked(check_key(key), data, _pacing())
        self._backend.put(self._scope, key, data, _deadline(self._now(), ms), self._quotas)

    @_operation
    def set_many_encoded(self, pairs: Iterable[tuple[str, bytes]]) -> None:
        pacing = _pacing()  # one for all the values, like the arguments of one call
        self._put_many(pair_list(pairs), lambda key, data: self._checked(key, data, pacing))

    # -- for the sandbox host ---------------------------------------------------

    def perform(self, name: str, args: Sequence[Any]) -> Any:
        """Operation ``name`` done now, or an awaitable of it where the backend's work
        must wait (``StoreBackend.perform``).

        The sandbox host answers a tool call inside its I/O callback when it can:
        SQLite and memory answer in microseconds, and a coroutine would cost more
        than the call. ``KeyError`` means there is no such operation.
        """
        return self._backend.perform(OPERATIONS[name], self, *args)

    list = keys  # the seeds' name for keys(); defined last so it never shadows the builtin


def _pacing() -> codec.Pacing:
    """How the values a sandboxed agent stores are decoded to check them (``_checked``)."""
    return codec.Pacing(bridge.pause)


def _matchable(prefix: object) -> bool:
    """Whether any key could start with ``prefix`` (no key holds NUL or a lone surrogate)."""
    if type(prefix) is not str:
        raise TypeError(f"a key prefix must be str, got {type(prefix).__name__} {prefix!r}")
    if "\x00" in prefix:
        return False
    try:
        prefix.encode()
    except UnicodeEncodeError:
        return False
    return True
