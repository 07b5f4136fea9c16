"""The class agent authors subclass.

An agent object lives for one execution: the runtime builds a fresh one each
time and binds it to that execution's channel. Its attributes are therefore not
memory; ``self.store`` is.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar

from corral.sdk.budget import Budget
from corral.sdk.channel import ToolChannel
from corral.sdk.store import StoreClient

LIFECYCLE_HOOKS = frozenset({"activate", "upgrade", "deactivate", "on_activity"})


class Agent:
    #: Outbound URL patterns this agent may fetch; nothing else is reachable.
    network: ClassVar[list[str]] = []
    #: Per-agent overrides of the execution limits (requests, timeout_s, cpu_s, memory_mb).
    limits: ClassVar[dict[str, int]] = {}

    def __init__(self, channel: ToolChannel) -> None:
        self._channel = channel
        self.store = StoreClient(channel)
        self.budget = Budget(channel)

    # The four store shortcuts of the seeds.
    async def get(self, key: str) -> Any:
        return await self.store.get(key)

    async def set(self, key: str, value: Any) -> None:
        await self.store.set(key, value)

    async def clear(self, key: str) -> None:
        await self.store.delete(key)

    async def clear_all(self) -> None:
        await self.store.clear_all()

    async def set_with_ttl(self, key: str, value: Any, ttl_ms: float | timedelta) -> None:
        await self.store.set_with_ttl(key, value, ttl_ms)


Twist = Agent
"""The seeds' newer name for the same class."""


def callable_methods(cls: type[Agent]) -> frozenset[str]:
    """Names the runtime may invoke: the public methods the author wrote.

    The SDK's own helpers (``get``, ``set``, ...) are not entry points: a task or a
    webhook naming ``set`` must fail clearly instead of writing to the store.
    """
    return frozenset(
        name
        for klass in cls.__mro__
        if klass is not Agent and issubclass(klass, Agent)
        for name, member in vars(klass).items()
        if not name.startswith("_") and callable(member)
    )
