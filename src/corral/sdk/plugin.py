"""Tick-driven plugins (seed 003): ``decide(ctx)`` on every tick, memory in ``ctx.state``."""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from corral.sdk.agent import Agent
from corral.sdk.store import StoreClient


@dataclass(frozen=True)
class PluginContext:
    #: The plugin's store (SPEC §1.1), scoped to the installed plugin.
    state: StoreClient
    #: The tick's payload: None for a timer tick, the posted body otherwise.
    tick: Any
    #: When the tick is handled (aware, UTC).
    now: datetime
    log: logging.Logger


class Plugin(Agent):
    """Install it and the platform calls ``decide`` every ``tick_ms`` milliseconds."""

    #: Milliseconds between timer ticks; None for ticks that are only posted.
    tick_ms: ClassVar[int | None] = None

    async def decide(self, ctx: PluginContext) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define decide(self, ctx)")

    async def on_tick(self, payload: Any = None) -> Any:
        """The entry point a tick runs: builds the context and calls ``decide``."""
        ctx = PluginContext(
            self.store, payload, datetime.now(UTC), logging.getLogger(type(self).__name__)
        )
        result = self.decide(ctx)
        return await result if inspect.isawaitable(result) else result
