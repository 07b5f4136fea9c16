"""What a piece of agent code declares, learned in a sandbox: deploy and reload read it.

The host never runs agent code, not even to read its class: the code is loaded in a
throttled sandboxed process, and what comes out (``loaded``) is checked
(``declared``) before anything is stored.
"""

from __future__ import annotations

import re
from typing import Any

from corral.errors import AgentCodeError
from corral.runtime.declared import declared
from corral.runtime.records import loaded
from corral.sandbox.limits import ExecutionResult, Limits, Outcome
from corral.sandbox.zygote import Zygote


async def describe_in(zygote: Zygote, code: str, limits: Limits) -> ExecutionResult:
    """Load the code in a throwaway sandboxed process: the host never runs agent code."""
    probe = await zygote.spawn(limits)
    try:
        return await probe.describe(code, limits)
    finally:
        await probe.close()


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
