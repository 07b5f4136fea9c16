"""Warm sandboxed processes, dedicated to one instance each, reused across its executions.

A fresh fork costs milliseconds; a warm process answers in a fraction of one.
A process is dedicated to one instance (no tenant ever shares globals with
another) and to one version of its code and one set of limits. An instance may
have up to ``per_instance`` warm processes, so that its executions can overlap
— a task that schedules the next one, or a burst of webhooks — without paying
for a fork each time. A process is retired when idle too long, after
``max_executions``, when the instance's version or limits change, after any
limit breach, and — in strict mode — after every execution, which is how
reliance on leftover globals is caught.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from corral.sandbox.limits import ExecutionResult, Limits
from corral.sandbox.process import AGENT_FILENAME, Delivery, SandboxProcess, ToolHandler
from corral.sandbox.zygote import Zygote

#: Warm processes a pool keeps at most, and of one instance.
MAX_PROCESSES = 32
PER_INSTANCE = 4


@dataclass(eq=False)
class _Entry:
    instance: str
    process: SandboxProcess
    version: str
    limits: Limits
    busy: bool = True
    last_used: float = field(default_factory=time.monotonic)

    def serves(self, version: str, limits: Limits) -> bool:
        return self.version == version and self.limits == limits and self.process.reusable


class SandboxPool:
    def __init__(
        self,
        zygote: Zygote,
        *,
        max_processes: int = MAX_PROCESSES,
        per_instance: int = PER_INSTANCE,
        idle_s: float = 60.0,
        max_executions: int = 1000,
        strict: bool = False,
    ) -> None:
        if min(max_processes, per_instance, max_executions) < 1 or idle_s <= 0:
            raise ValueError(
                "max_processes, per_instance, idle_s and max_executions must be positive"
            )
        self._zygote = zygote
        self._lru: OrderedDict[_Entry, None] = OrderedDict()  # least recently used first
        self._by_instance: dict[str, list[_Entry]] = {}
        self.max_processes = max_processes
        self.per_instance = per_instance
        self.idle_s = idle_s
        self.max_executions = max_executions
        self.strict = strict
        self.spawned = 0
        #: Executions under way now (a worker's sandboxes are busy with this many).
        self.running = 0

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def zygote(self) -> Zygote:
        """The zygote its processes fork from (a deploy's describe forks from it too)."""
        return self._zygote

    async def execute(
        self,
        instance: str,
        version: str,
        code: str,
        method: str,
        args: list[Any],
        limits: Limits,
        tools: ToolHandler,
        *,
        on_overrun: Callable[[], None] | None = None,
        filename: str = AGENT_FILENAME,
        delivery: Delivery | None = None,
    ) -> ExecutionResult:
        """Run one execution in an idle warm process of the instance, starting one if needed.

        ``on_overrun``, ``filename`` and ``delivery``: see :meth:`SandboxProcess.execute`;
        ``on_overrun`` may be called before this returns (a process retired at once is
        closed here) or at any time after.
        """
        entry = await self._checkout(instance, version, limits)
        self.running += 1
        try:
            result = await entry.process.execute(
                code,
                method,
                args,
                limits,
                tools,
                strict=self.strict,
                on_overrun=on_overrun,
                filename=filename,
                delivery=delivery,
            )
        except BaseException:
            await self._retire(entry)
            raise
        finally:
            self.running -= 1
        entry.busy = False
        entry.last_used = time.monotonic()
        worn_out = entry.process.executions >= self.max_executions
        pooled = entry in self._lru
        if not pooled or self.strict or result.breached or worn_out or not entry.process.reusable:
            await self._retire(entry)
        return result

    async def _checkout(self, instance: str, version: str, limits: Limits) -> _Entry:
        for entry in list(self._by_instance.get(instance, ())):
            if entry.busy:
                continue
            if not entry.serves(version, limits):
                await self._retire(entry)
                continue
            entry.busy = True
            self._lru.move_to_end(entry)
            return entry
        await self._make_room()
        self.spawned += 1
        entry = _Entry(instance, await self._zygote.spawn(limits), version, limits)
        # Counted after the spawn: others may have pooled processes meanwhile. Past
        # the cap, this one serves once and is retired, never orphaned.
        siblings = self._by_instance.setdefault(instance, [])
        if len(siblings) < self.per_instance:
            siblings.append(entry)
            self._lru[entry] = None
        return entry

    async def _make_room(self) -> None:
        while len(self._lru) >= self.max_processes:
            idle = next((e for e in self._lru if not e.busy), None)
            if idle is None:
                return  # every process is busy: allow a temporary overshoot
            await self._retire(idle)

    async def _retire(self, entry: _Entry) -> None:
        if entry in self._lru:  # a one-off process (or one already retired) is just closed
            del self._lru[entry]
            siblings = self._by_instance[entry.instance]
            siblings.remove(entry)
            if not siblings:
                del self._by_instance[entry.instance]
        await entry.process.close()

    async def retire_idle(self) -> int:
        """Retire processes idle for ``idle_s``; an idle instance then costs no process."""
        cutoff = time.monotonic() - self.idle_s
        stale = [e for e in self._lru if not e.busy and e.last_used < cutoff]
        for entry in stale:
            await self._retire(entry)
        return len(stale)

    async def close(self) -> None:
        entries = list(self._lru)
        self._lru.clear()
        self._by_instance.clear()
        await asyncio.gather(*(e.process.close() for e in entries))
