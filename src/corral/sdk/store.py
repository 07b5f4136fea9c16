"""The agent's view of its store: every call is one request to the host.

The host binds the scope and does the work; this side only names the operation.
Values are validated here too (by the codec, when the call is sent) so a bad value
raises at the line that stored it, with the path inside the value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from corral.sdk.channel import ToolChannel


class StoreClient:
    def __init__(self, channel: ToolChannel) -> None:
        self._channel = channel

    async def get(self, key: str) -> Any:
        return await self._channel.call("store.get", key)

    async def get_or_default(self, key: str, fallback: Any) -> Any:
        return await self._channel.call("store.get_or_default", key, fallback)

    async def has(self, key: str) -> bool:
        return bool(await self._channel.call("store.has", key))

    async def get_many(self, keys: Iterable[str]) -> list[Any]:
        return list(await self._channel.call("store.get_many", list(keys)))

    async def keys(self, prefix: str = "") -> list[str]:
        return list(await self._channel.call("store.keys", prefix))

    async def list_entries(self, prefix: str = "") -> list[tuple[str, Any]]:
        return [tuple(pair) for pair in await self._channel.call("store.list_entries", prefix)]

    async def set(self, key: str, value: Any) -> None:
        await self._channel.call("store.set", key, value)

    async def set_with_ttl(self, key: str, value: Any, ttl_ms: float | timedelta) -> None:
        await self._channel.call("store.set_with_ttl", key, value, ttl_ms)

    async def set_many(self, pairs: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
        items = dict(pairs) if isinstance(pairs, Mapping) else [tuple(p) for p in pairs]
        await self._channel.call("store.set_many", items)

    async def delete(self, key: str) -> None:
        await self._channel.call("store.delete", key)

    clear = delete

    async def clear_many(self, keys: Iterable[str]) -> None:
        await self._channel.call("store.clear_many", list(keys))

    async def clear_all(self) -> None:
        await self._channel.call("store.clear_all")

    async def acquire_lock(self, key: str, ttl_ms: float | timedelta) -> bool:
        return bool(await self._channel.call("store.acquire_lock", key, ttl_ms))

    async def release_lock(self, key: str) -> None:
        await self._channel.call("store.release_lock", key)

    list = keys  # the seeds' name for keys(); defined last so it never shadows the builtin
