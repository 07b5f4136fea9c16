"""One execution of one method, start to finish: what ``corral exec`` runs.

Its agent may fetch, under the same allow-list and rate limit as under a worker.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from corral.runtime.declared import declared
from corral.runtime.fetch import Fetcher
from corral.runtime.records import ExecutionRecord, loaded
from corral.runtime.tools import exec_tools
from corral.sandbox.host import Zygote
from corral.sandbox.limits import ExecutionResult, Limits, Outcome
from corral.state import Store


async def run_once(
    code: str,
    method: str,
    args: list[Any],
    store: Store,
    *,
    insecure: bool = False,
    limits: Limits | None = None,
    strict: bool = False,
) -> ExecutionRecord:
    """Load the agent in one sandboxed process to learn its limits, run it in another.

    Two processes because the memory limit is fixed when a process starts, and the
    agent's own ``limits`` are only known once its code has been loaded. The second
    process has never run the agent, as in strict mode; ``strict`` also reports what
    the execution left in module globals and class attributes.
    """
    base = limits or Limits()
    zygote = await Zygote.start(insecure=insecure)
    try:
        description = await describe_in(zygote, code, base)
        if description.outcome is not Outcome.OK:
            return ExecutionRecord(store.scope, method, "exec", description)
        try:
            rules = declared(loaded(description), base)
        except ValueError as exc:
            description.outcome = Outcome.ERROR
            description.error = {"type": type(exc).__name__, "message": str(exc), "traceback": ""}
            return ExecutionRecord(store.scope, method, "exec", description)
        process = await zygote.spawn(rules.limits)
        fetcher = Fetcher()
        try:
            fetch = fetcher.bind(store.scope, rules.network, time_left_s=rules.limits.timeout_s)
            tools = exec_tools(store, fetch)
            result = await process.execute(code, method, args, rules.limits, tools, strict=strict)
        finally:
            await process.close()
            await fetcher.close()
        return ExecutionRecord(store.scope, method, "exec", result)
    finally:
        await zygote.close()


async def describe_in(zygote: Zygote, code: str, limits: Limits) -> ExecutionResult:
    """Load the code in a throwaway sandboxed process: the host never runs agent code."""
    probe = await zygote.spawn(limits)
    try:
        return await probe.describe(code, limits)
    finally:
        await probe.close()


class AgentCodeError(ValueError):
    """The code cannot be deployed: it does not load, or declares bad limits."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        #: The line of the agent's code the error points at, when it points at one.
        self.line = line

    def where(self, path: Path) -> str:
        """Where the error is, as editors and terminals link it: ``path:line`` or ``path``."""
        return f"{path}:{self.line}" if self.line is not None else str(path)


# Agent code runs as a module whose file is named "<agent LABEL>": the traceback
# from the sandbox is the only place an error's line travels.
_AGENT_FRAME = re.compile(r'File "<agent [^>]*>", line (\d+)')


async def describe_code(
    code: str, *, insecure: bool = False, zygote: Zygote | None = None
) -> dict[str, Any]:
    """The agent's class, methods, limits, network list and tick, learned in a sandbox.

    Pass a running ``zygote`` to save starting one (about 0.2 s) for each call.
    """
    if zygote is None:
        own = await Zygote.start(insecure=insecure)
        try:
            return await describe_code(code, zygote=own)
        finally:
            await own.close()
    result = await describe_in(zygote, code, Limits())
    if result.outcome is not Outcome.OK:
        error = result.error or {}
        frames = _AGENT_FRAME.findall(error.get("traceback", ""))
        raise AgentCodeError(
            f"{error.get('type', result.outcome.value)}: {error.get('message')}",
            line=int(frames[-1]) if frames else None,  # the innermost of the agent's frames
        )
    description = loaded(result)
    try:
        declared(description, Limits())
    except ValueError as exc:
        raise AgentCodeError(str(exc)) from None
    return description
