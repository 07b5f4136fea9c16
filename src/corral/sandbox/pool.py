"""Warm sandboxed processes, one per instance, reused across its executions.

A fresh fork costs milliseconds; a warm process answers in a fraction of one.
A process is dedicated to one instance (no tenant ever shares globals with
another) and to one version of its code and one set of limits. It is retired
when idle too long, after ``max_executions``, when the instance's version or
limits change, after any limit breach, and — in strict mode — after every
execution, which is how reliance on leftover globals is caught.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from corral.sandbox.host import SandboxProcess, ToolHandler, Zygote
from corral.sandbox.limits import ExecutionResult, Limits


@dataclass
class _Entry:
    process: SandboxProcess
    version: str
    limits: Limits
    busy: bool = False
    last_used: float = field(default_factory=time.monotonic)


class SandboxPool:
    def __init__(
        self,
        zygote: Zygote,
        *,
        max_processes: int = 32,
        idle_s: float = 60.0,
        max_executions: int = 1000,
        strict: bool = False,
    ) -> None:
        if max_processes < 1 or idle_s <= 0 or max_executions < 1:
            raise ValueError("max_processes, idle_s and max_executions must be positive")
        self._zygote = zygote
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self.max_processes = max_processes
        self.idle_s = idle_s
        self.max_executions = max_executions
        self.strict = strict
        self.spawned = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def execute(
        self,
        instance: str,
        version: str,
        code: str,
        method: str,
        args: list[Any],
        limits: Limits,
        tools: ToolHandler,
    ) -> ExecutionResult:
        """Run one execution in the instance's warm process, starting one if needed."""
        entry, pooled = await self._checkout(instance, version, limits)
        try:
            result = await entry.process.execute(
                code, method, args, limits, tools, strict=self.strict
            )
        except BaseException:
            await self._retire(entry, instance)
            raise
        entry.busy = False
        entry.last_used = time.monotonic()
        worn_out = entry.process.executions >= self.max_executions
        if not pooled or self.strict or result.breached or worn_out or not entry.process.reusable:
            await self._retire(entry, instance)
        return result

    async def _checkout(self, instance: str, version: str, limits: Limits) -> tuple[_Entry, bool]:
        entry = self._entries.get(instance)
        if entry is not None and entry.busy:
            # A second concurrent execution of the same instance gets a process of
            # its own for the occasion rather than waiting behind the first.
            return _Entry(await self._spawn(limits), version, limits, busy=True), False
        if entry is not None and (
            entry.version != version or entry.limits != limits or not entry.process.reusable
        ):
            await self._retire(entry, instance)
            entry = None
        if entry is None:
            await self._make_room()
            entry = _Entry(await self._spawn(limits), version, limits, busy=True)
            if instance in self._entries:
                # Another execution of the instance pooled a process while this one
                # was being spawned: this one serves once and is retired, not orphaned.
                return entry, False
            self._entries[instance] = entry
        self._entries.move_to_end(instance)
        entry.busy = True
        return entry, True

    async def _spawn(self, limits: Limits) -> SandboxProcess:
        self.spawned += 1
        return await self._zygote.spawn(limits)

    async def _make_room(self) -> None:
        while len(self._entries) >= self.max_processes:
            idle = next((k for k, e in self._entries.items() if not e.busy), None)
            if idle is None:
                return  # every process is busy: allow a temporary overshoot
            await self._retire(self._entries[idle], idle)

    async def _retire(self, entry: _Entry, instance: str) -> None:
        # Only the instance's pooled entry is forgotten; a one-off process just ends.
        if self._entries.get(instance) is entry:
            del self._entries[instance]
        await entry.process.close()

    async def retire_idle(self) -> int:
        """Retire processes idle for ``idle_s``; an idle instance then costs no process."""
        cutoff = time.monotonic() - self.idle_s
        stale = [k for k, e in self._entries.items() if not e.busy and e.last_used < cutoff]
        for instance in stale:
            await self._retire(self._entries[instance], instance)
        return len(stale)

    async def close(self) -> None:
        await asyncio.gather(*(e.process.close() for e in self._entries.values()))
        self._entries.clear()
