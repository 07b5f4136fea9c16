"""The agent's view of its store: every call is one request to the host.

The host binds the scope and does the work; this side only names the operation.
Values cross to the host once, in their stored form: this side encodes what it
stores and decodes what it reads, so a bad value raises at the line that stored
it, with the path inside the value, and the host only checks the bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from corral import codec
from corral.sdk.channel import ToolChannel
from corral.sdk.operations import Op


class StoreClient:
    def __init__(self, channel: ToolChannel) -> None:
        self._channel = channel

    async def get(self, key: str) -> Any:
        return _decode(await self._channel.call(Op.STORE_GET, key))

    async def get_or_default(self, key: str, fallback: Any) -> Any:
        data = await self._channel.call(Op.STORE_GET, key)
        return fallback if data is None else codec.decode(data)

    async def has(self, key: str) -> bool:
        return bool(await self._channel.call(Op.STORE_HAS, key))

    async def get_many(self, keys: Iterable[str]) -> list[Any]:
        keys = key_list(keys)
        return [_decode(data) for data in await self._channel.call(Op.STORE_GET_MANY, keys)]

    async def keys(self, prefix: str = "") -> list[str]:
        return list(await self._channel.call(Op.STORE_KEYS, prefix))

    async def list_entries(self, prefix: str = "") -> list[tuple[str, Any]]:
        entries = await self._channel.call(Op.STORE_LIST_ENTRIES, prefix)
        return [(key, _decode(data)) for key, data in entries]

    async def set(self, key: str, value: Any) -> None:
        await self._channel.call(Op.STORE_SET, key, _encode(key, value))

    async def set_with_ttl(self, key: str, value: Any, ttl_ms: float | timedelta) -> None:
        await self._channel.call(Op.STORE_SET_WITH_TTL, key, _encode(key, value), ttl_ms)

    async def set_many(self, pairs: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
        items = pairs.items() if isinstance(pairs, Mapping) else pair_list(pairs)
        # Pairs as lists, which msgpack writes natively: a tuple is a codec extension,
        # packed on its own, and that once cost more than encoding the values.
        encoded = [[key, _encode(key, value)] for key, value in items]
        await self._channel.call(Op.STORE_SET_MANY, encoded)

    async def delete(self, key: str) -> None:
        await self._channel.call(Op.STORE_DELETE, key)

    clear = delete

    async def clear_many(self, keys: Iterable[str]) -> None:
        await self._channel.call(Op.STORE_CLEAR_MANY, key_list(keys))

    async def clear_all(self) -> None:
        await self._channel.call(Op.STORE_CLEAR_ALL)

    async def acquire_lock(self, key: str, ttl_ms: float | timedelta) -> bool:
        return bool(await self._channel.call(Op.STORE_ACQUIRE_LOCK, key, ttl_ms))

    async def release_lock(self, key: str) -> None:
        await self._channel.call(Op.STORE_RELEASE_LOCK, key)

    list = keys  # the seeds' name for keys(); defined last so it never shadows the builtin


def _decode(data: bytes | None) -> Any:
    return None if data is None else codec.decode(data)


def _encode(key: object, value: Any) -> bytes:
    """Encode where the agent stored it, so a bad value raises at that line."""
    try:
        return codec.encode(value)
    except TypeError as exc:
        raise TypeError(f"{exc} (key {key!r}: nothing was written)") from None


# The host's Store checks its arguments with these too: one wording on both sides.


def key_list(keys: Iterable[str]) -> list[str]:
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Iterable):
        raise TypeError(f"keys must be a list of str keys, got {type(keys).__name__}")
    return list(keys)


def pair_list(pairs: Iterable[Any]) -> list[tuple[Any, Any]]:
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Iterable):
        raise TypeError(f"pairs must be a dict or a list of pairs, got {type(pairs).__name__}")
    items = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(
                f"set_many takes a dict or a list of (key, value) pairs; item {i} is {pair!r}"
            )
        items.append((pair[0], pair[1]))
    return items
