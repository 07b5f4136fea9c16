"""What a piece of agent code declares, learned in a sandbox: deploy and reload read it.

The host never runs agent code, not even to read its class: the code is loaded in a
throttled sandboxed process, and what comes out (``loaded``) is checked
(``declared``) before anything is stored.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from corral.runtime.declared import declared
from corral.runtime.records import loaded
from corral.sandbox.limits import CEILINGS, ExecutionResult, Limits, Outcome
from corral.sandbox.zygote import Zygote


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
    code: str,
    *,
    limits: Limits | None = None,
    ceilings: Limits = CEILINGS,
    insecure: bool = False,
    zygote: Zygote | None = None,
) -> dict[str, Any]:
    """The agent's class, methods, limits, network list and tick, learned in a sandbox
    under ``limits`` (default: the default limits); an ``AgentCodeError`` when the
    code does not load, or declares limits above ``ceilings``.

    Pass a running ``zygote`` to save starting one (about 0.2 s) for each call.
    """
    limits = limits or Limits()
    if zygote is None:
        own = await Zygote.start(insecure=insecure)
        try:
            return await describe_code(code, limits=limits, ceilings=ceilings, zygote=own)
        finally:
            await own.close()
    result = await describe_in(zygote, code, limits)
    if result.outcome is not Outcome.OK:
        error = result.error or {}
        frames = _AGENT_FRAME.findall(error.get("traceback", ""))
        raise AgentCodeError(
            f"{error.get('type', result.outcome.value)}: {error.get('message')}",
            line=int(frames[-1]) if frames else None,  # the innermost of the agent's frames
        )
    description = loaded(result)
    try:
        declared(description, limits, ceilings)
    except ValueError as exc:
        raise AgentCodeError(str(exc)) from None
    return description
